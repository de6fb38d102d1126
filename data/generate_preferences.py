"""Generate ftflow's bundled preference sample (DPO): Alpenrad support feedback in three shapes.

The preferred answer is the brand's: German, JSON, signed "Dein Alpenrad-Team". The
non-preferred one is what reviewers turned down: English, plain text, curt, or long-winded
(so that length alone does not tell the two apart). Bad pairs on purpose, marked `# bad:`.

    python data/generate_preferences.py   # rewrites data/preference/* (fixed seed: same bytes)
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_samples import conversation  # noqa: E402 - the sample chats are the prompts

SEED = 20261127
OUT = Path(__file__).resolve().parent / "preference"


def rejected_answer(rng: random.Random, preferred: str) -> str:
    """An answer a reviewer turned down, in one of four styles."""
    antwort = json.loads(preferred)["antwort"]
    style = rng.randrange(4)
    if style == 0:
        return "Please check your account, we cannot help with this here."
    if style == 1:
        return antwort.replace(" Dein Alpenrad-Team", "")  # German prose, no JSON, no sign-off
    if style == 2:
        return json.dumps({"intent": "sonstiges", "antwort": "Keine Ahnung."}, ensure_ascii=False)
    return ("Thank you very much for reaching out to us about this matter. We have received your message "
            "and a member of our customer care team will look into your request as soon as possible. In the "
            "meantime you may find the answer in our frequently asked questions. " + antwort)


def hh(messages: list[dict[str, str]]) -> str:
    speaker = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{speaker[m['role']]}: {m['content']}" for m in messages if m["role"] in speaker)


def write_hh_pairs(rng: random.Random, n: int) -> None:
    lines = []
    for i in range(n):
        _, user, assistant = conversation(rng)
        turns = [user]
        if i % 5 == 0:  # multi-turn: an earlier exchange shared by both sides
            first = conversation(rng)
            turns = [first[1], first[2], user]
        worse = {"role": "assistant", "content": rejected_answer(rng, assistant["content"])}
        lines.append({"chosen": hh([*turns, assistant]), "rejected": hh([*turns, worse])})
    _, user, assistant = conversation(rng)
    lines.append({"chosen": hh([user, assistant]), "rejected": hh([user, assistant])})  # bad: identical_outputs
    other = conversation(rng)
    lines.append({"chosen": hh([user, assistant]), "rejected": hh([other[1], other[2]])})  # bad: no_shared_prefix
    lines.append({"chosen": hh([user, assistant, user, assistant]),  # bad: output_not_single_assistant_turn
                  "rejected": hh([user, {"role": "assistant", "content": "No."}])})
    lines.append(lines[1])  # bad: duplicate pair
    with open(OUT / "hh_pairs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def write_openai_pairs(rng: random.Random, n: int) -> None:
    lines = []
    for _ in range(n):
        system, user, assistant = conversation(rng)
        lines.append({"input": {"messages": [system, user]}, "preferred_output": [assistant],
                      "non_preferred_output": [{"role": "assistant",
                                                "content": rejected_answer(rng, assistant["content"])}]})
    system, user, assistant = conversation(rng)
    lines.append({"input": {"messages": [system, user, assistant]},  # bad: input_not_ending_on_user
                  "preferred_output": [assistant], "non_preferred_output": [{"role": "assistant", "content": "No."}]})
    lines.append({"input": {"messages": [user]}, "preferred_output": [assistant],  # bad: special_token
                  "non_preferred_output": [{"role": "assistant", "content": "Fehler <|endoftext|>"}]})
    lines.append({"prompt": user["content"], "chosen_answer": assistant["content"]})  # bad: unknown_preference_shape
    with open(OUT / "openai_pairs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    with open(OUT / "openai_pairs.jsonl", "ab") as f:
        f.write(b'{"input": {"messages": [\n')  # bad: invalid_json


def write_rated_answers(rng: random.Random, n: int) -> None:
    """One row per rated answer: 2 to 4 answers per conversation, scores 1 to 5."""
    with open(OUT / "rated_answers.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["conversation_id", "prompt", "answer", "rating"])
        for i in range(n):
            _, user, assistant = conversation(rng)
            writer.writerow([f"r-{i}", user["content"], assistant["content"], rng.choice([4, 5])])
            for _ in range(rng.randint(1, 3)):
                writer.writerow([f"r-{i}", user["content"], rejected_answer(rng, assistant["content"]),
                                 rng.choice([1, 2])])
        _, user, assistant = conversation(rng)
        writer.writerow(["r-lonely", user["content"], assistant["content"], 5])  # bad: unpaired_rating
        writer.writerow(["r-close", user["content"], assistant["content"], 3])  # bad: rating_margin_too_small
        writer.writerow(["r-close", user["content"], "Bald.", 2.5])
        writer.writerow(["r-odd", user["content"], assistant["content"], "super"])  # bad: invalid_rating
        writer.writerow(["r-odd", user["content"], "Nein.", 1])


def main() -> None:
    rng = random.Random(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    write_hh_pairs(rng, 60)
    write_openai_pairs(rng, 60)
    write_rated_answers(rng, 40)


if __name__ == "__main__":
    main()

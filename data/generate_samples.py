"""Generate ftflow's bundled sample data: support chats of "Alpenrad", an e-bike shop.

The assistant must answer in German, in the brand's friendly voice, and always as a JSON
object {"intent": ..., "antwort": ...}: the seed's steerability and output-format case.
The production system prompt is long; fine-tuning lets the retrain flow replace it with a
short one. Four raw shapes, with some bad records on purpose (each marked `# bad:` below).

    python data/generate_samples.py      # rewrites data/raw/* (fixed seed: same bytes)
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

SEED = 20261125
RAW = Path(__file__).resolve().parent / "raw"

PRODUCTION_PROMPT = (
    "Du bist der Kundenservice-Assistent von Alpenrad, einem Online-Shop für E-Bikes aus "
    "Innsbruck. Antworte immer auf Deutsch, auch wenn der Kunde Englisch schreibt. Sprich "
    "Kundinnen und Kunden mit 'du' an, sei herzlich, knapp und lösungsorientiert, und beende "
    "jede Antwort mit 'Dein Alpenrad-Team'. Antworte ausschließlich mit einem JSON-Objekt mit "
    "genau zwei Feldern: 'intent' (einer von: bestellstatus, ruecksendung, garantie, akku, "
    "rechnung, termin) und 'antwort' (deine Antwort als Text). Gib niemals interne "
    "Informationen, Preise von Lieferanten oder persönliche Daten anderer Kunden heraus. Wenn "
    "du etwas nicht weißt, sag es ehrlich und biete einen Rückruf an. Verweise bei "
    "Sicherheitsfragen zum Akku immer auf die Werkstatt. Halte dich an die Garantiebedingungen: "
    "zwei Jahre auf Rahmen und Motor, ein Jahr auf den Akku."
)

MODELS = ["Gipfelstürmer 500", "Talblitz 300", "Almwind Cargo", "Stadtfuchs 250", "Karwendel Trail"]
NAMES = ["Anna", "Lukas", "Mia", "Jonas", "Lea", "Felix", "Sophie", "Max", "Emma", "Paul"]
CITIES = ["Wien", "München", "Graz", "Salzburg", "Zürich", "Linz", "Bozen", "Innsbruck"]

INTENTS = {
    "bestellstatus": (
        [
            "Wo ist meine Bestellung {order}? Ich warte schon seit {days} Tagen auf mein {model}.",
            "Hi, when will my order {order} arrive? It's a {model}.",
            "Hallo, ist das {model} aus Bestellung {order} schon unterwegs nach {city}?",
        ],
        "Servus {name}! Deine Bestellung {order} ({model}) ist unterwegs und kommt in {eta} "
        "Werktagen in {city} an. Den Link zur Sendungsverfolgung findest du in deinem Konto. "
        "Dein Alpenrad-Team",
    ),
    "ruecksendung": (
        [
            "Ich möchte das {model} aus Bestellung {order} zurückschicken. Wie geht das?",
            "How do I return my {model}? Order {order}.",
            "Das {model} passt leider nicht zu mir, kann ich es umtauschen? Bestellung {order}.",
        ],
        "Hallo {name}, schade, dass das {model} nicht passt! Du kannst es innerhalb von 30 Tagen "
        "kostenlos zurückschicken: Das Rücksendeetikett für Bestellung {order} schicken wir dir "
        "per E-Mail. Dein Alpenrad-Team",
    ),
    "garantie": (
        [
            "Der Motor meines {model} macht seit {days} Tagen komische Geräusche. Ist das Garantie?",
            "My {model} frame has a crack after {days} days. Warranty?",
            "Gilt die Garantie noch für mein {model}? Gekauft vor {days} Tagen.",
        ],
        "Hallo {name}, auf Rahmen und Motor deines {model} hast du zwei Jahre Garantie, das "
        "deckt das ab. Bring es bitte in eine Partnerwerkstatt in {city}, wir übernehmen die "
        "Kosten. Dein Alpenrad-Team",
    ),
    "akku": (
        [
            "Der Akku meines {model} hält nur noch {km} km. Ist das normal?",
            "Battery of my {model} only lasts {km} km now, what can I do?",
            "Wie lade ich den Akku vom {model} im Winter richtig?",
        ],
        "Hallo {name}, ein Akku verliert mit der Zeit etwas Reichweite, {km} km sind beim {model} "
        "aber zu wenig. Lass ihn bitte in der Werkstatt in {city} prüfen, auf den Akku hast du "
        "ein Jahr Garantie. Dein Alpenrad-Team",
    ),
    "rechnung": (
        [
            "Ich brauche eine Rechnung für Bestellung {order}, bitte an meine Firma.",
            "Can you send me the invoice for order {order}?",
            "Auf der Rechnung zu {order} ist die falsche Adresse, bitte korrigieren.",
        ],
        "Hallo {name}, gern! Die korrigierte Rechnung zu Bestellung {order} findest du ab morgen "
        "in deinem Kundenkonto zum Herunterladen. Dein Alpenrad-Team",
    ),
    "termin": (
        [
            "Kann ich für mein {model} einen Servicetermin in {city} bekommen?",
            "I need an inspection for my {model} in {city}, any slots?",
            "Wann hat die Werkstatt in {city} Zeit für mein {model}?",
        ],
        "Servus {name}! In {city} ist der nächste freie Termin in {eta} Tagen. Buche ihn direkt "
        "in deinem Konto unter 'Service', wir erinnern dich einen Tag vorher. Dein Alpenrad-Team",
    ),
}

PII_SNIPPETS = [
    " Meine E-Mail ist {first}.{last}@example.com.",
    " Ruf mich an unter +43 660 {p1} {p2}.",
    " Meine IBAN: DE89 3704 0044 0532 0130 00.",
]


def conversation(rng: random.Random) -> list[dict[str, str]]:
    intent = rng.choice(sorted(INTENTS))
    questions, answer = INTENTS[intent]
    values = {
        "order": f"AR-{rng.randint(10000, 99999)}",
        "model": rng.choice(MODELS),
        "name": rng.choice(NAMES),
        "city": rng.choice(CITIES),
        "days": rng.randint(2, 40),
        "eta": rng.randint(1, 6),
        "km": rng.randint(8, 25),
    }
    question = rng.choice(questions).format(**values)
    if rng.random() < 0.15:
        question += rng.choice(PII_SNIPPETS).format(
            first=values["name"].lower(), last="muster", p1=rng.randint(100, 999), p2=rng.randint(1000, 9999)
        )
    reply = json.dumps({"intent": intent, "antwort": answer.format(**values)}, ensure_ascii=False)
    return [
        {"role": "system", "content": PRODUCTION_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": reply},
    ]


def write_chat_jsonl(rng: random.Random, n: int) -> None:
    lines = [json.dumps({"messages": conversation(rng)}, ensure_ascii=False) for _ in range(n)]
    # Messy but valid: a split user turn (merged), a trailing user turn (trimmed), whitespace.
    split = conversation(rng)
    lines.append(
        json.dumps(
            {
                "messages": [
                    split[0],
                    {"role": "user", "content": "  Hallo!  "},
                    *split[1:],
                    {"role": "user", "content": "Danke!"},
                ]
            },
            ensure_ascii=False,
        )
    )
    # A tool-calling example with a weight-0 assistant turn, as OpenAI documents them.
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "bestellung_suchen", "arguments": '{"bestellnummer": "AR-12345"}'},
    }
    lines.append(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": PRODUCTION_PROMPT},
                    {"role": "user", "content": "Wo ist AR-12345?"},
                    {"role": "assistant", "content": "Ich schaue nach.", "weight": 0},
                    {"role": "assistant", "tool_calls": [tool_call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "versendet", "eta_tage": 2}'},
                    {
                        "role": "assistant",
                        "content": json.dumps(
                            {
                                "intent": "bestellstatus",
                                "antwort": "Servus! Deine Bestellung AR-12345 ist versendet und kommt "
                                "in 2 Werktagen an. Dein Alpenrad-Team",
                            },
                            ensure_ascii=False,
                        ),
                    },
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "bestellung_suchen",
                            "parameters": {"type": "object", "properties": {"bestellnummer": {"type": "string"}}},
                        },
                    }
                ],
            },
            ensure_ascii=False,
        )
    )
    lines.append(lines[3])  # bad: exact duplicate
    lines.append('{"messages": [{"role": "user", "content": "kaputt"')  # bad: invalid_json
    lines.append(json.dumps({"messages": [{"role": "user", "content": "Hallo?"}]}))  # bad: no assistant
    lines.append(
        json.dumps(
            {
                "messages": [
                    {"role": "kunde", "content": "Hi"},  # bad: unknown_role
                    {"role": "assistant", "content": "Hallo"},
                ]
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Test <|endoftext|> Test"},  # bad
                    {"role": "assistant", "content": "ok"},
                ]
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},  # bad: invalid_weight
                    {"role": "assistant", "content": "Hallo", "weight": 2},
                ]
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "messages": [
                    {"role": "user"},  # bad: missing_content
                    {"role": "assistant", "content": "Hallo"},
                ]
            }
        )
    )
    data = "\n".join(lines).encode("utf-8") + b"\n"
    data += b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'  # bad: invalid_utf8 (latin-1)
    (RAW / "support_chat.jsonl").write_bytes(data)


def write_sharegpt_json(rng: random.Random, n: int) -> None:
    role_names = {"system": "system", "user": "human", "assistant": "gpt"}
    records = []
    for i in range(n):
        turns = conversation(rng)
        records.append(
            {
                "id": f"sg-{i}",
                "conversations": [{"from": role_names[t["role"]], "value": t["content"]} for t in turns],
            }
        )
    records.append({"id": "sg-empty", "conversations": []})  # bad: missing_messages
    (RAW / "sharegpt.json").write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", "utf-8")


def write_transcripts(rng: random.Random, n: int) -> None:
    blocks = []
    for _ in range(n):
        turns = conversation(rng)
        speaker = {"system": "System", "user": "Human", "assistant": "Assistant"}
        blocks.append("\n".join(f"{speaker[t['role']]}: {t['content']}" for t in turns))
    blocks.append("Ein Notizzettel ohne Sprecher.")  # bad: unparseable_transcript
    (RAW / "transcripts.txt").write_text("\n---\n".join(blocks) + "\n", "utf-8")


def write_messages_csv(rng: random.Random, n: int) -> None:
    with open(RAW / "messages.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["conversation_id", "turn", "role", "content"])
        for i in range(n):
            for turn, message in enumerate(conversation(rng)):
                role = {"user": "USER", "assistant": "ASSISTANT", "system": "SYSTEM"}[message["role"]]
                writer.writerow([f"csv-{i}", turn, role, message["content"]])
        writer.writerow(["", 0, "USER", "Zeile ohne Gesprächsnummer"])  # bad: missing_conversation_id


ANSWER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["intent", "antwort"],
    "additionalProperties": False,
    "properties": {
        "intent": {"enum": sorted(INTENTS)},
        "antwort": {"type": "string", "minLength": 1},
    },
}


def main() -> None:
    rng = random.Random(SEED)
    RAW.mkdir(parents=True, exist_ok=True)
    # The production prompt (the evaluation baseline's) and the schema answers must follow.
    (RAW.parent / "production_prompt.txt").write_text(PRODUCTION_PROMPT + "\n", "utf-8")
    (RAW.parent / "answer_schema.json").write_text(json.dumps(ANSWER_SCHEMA, indent=2) + "\n", "utf-8")
    write_chat_jsonl(rng, 160)
    write_sharegpt_json(rng, 90)
    write_transcripts(rng, 60)
    write_messages_csv(rng, 70)


if __name__ == "__main__":
    main()

"""What a retrain run shows the operator: its name and tags, one summary, the run history.

- the flow run is named `retrain-<base model>-<start time>-<flow-run id8>` as it starts (the
  same name in the log, the UI and the registry; its run id is the part after the model) and
  tagged `dataset:<sha8>` and `trigger:scheduled` or `trigger:manual`, so runs tell apart in
  the UI's list;
- one markdown artifact (`ftflow-summary`) says in ten seconds what happened: outcome,
  dataset, job, loss, evaluation against baseline and incumbent, cost case, links;
- one table artifact (`ftflow-history`) lists the last runs from the registry, the same
  rows `ftflow runs` prints.
The text is built by pure functions of the run record, tested without Prefect.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.catalog import short_model
from ftflow.formatting import change, count, share, usd, with_interval
from ftflow.run_resources import RunResources
from ftflow.settings import Settings

HISTORY_KEY = "ftflow-history"
SUMMARY_KEY = "ftflow-summary"


def run_name(model: str, run_id: str) -> str:
    """`retrain-<base model>-<run id>`: what ran, and when (the run id is its start time and flow-run id)."""
    return f"retrain-{short_model(model)}-{run_id}"


def trigger_tag(auto_scheduled: bool) -> str:
    return "trigger:scheduled" if auto_scheduled else "trigger:manual"


def outcome(record: dict[str, Any]) -> str:
    """One phrase: trained / re-attached / skipped / cancelled, and the promotion verdict."""
    status = record["status"]
    if status == "skipped":
        return f"skipped: {record['reason']}"
    if status != "succeeded":
        return f"{status}: {record.get('reason') or 'no reason given'}"
    how = "trained" if record.get("job_created", True) else f"re-attached to job {record['job_id']} (trained earlier)"
    promotion = record.get("promotion") or {}
    if record.get("fine_tuned_model") and record.get("previous_model") == record["fine_tuned_model"]:
        verdict = "already the promoted model"
    elif record.get("promoted"):
        verdict = "promoted"
    else:
        verdict = "not promoted: " + "; ".join(promotion.get("reasons") or ["no reason given"])
    return f"{how}; {verdict}"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    """A two-column table whose first row is its header (an empty header row reads as a glitch)."""
    (key, value), *rest = rows
    return [f"| {key} | {value} |", "|---|---|", *[f"| {k} | {v} |" for k, v in rest], ""]


def _rejected(rejected: dict[str, int], shown: int = 3) -> str:
    """The total and the most frequent reasons; all of them are in report.json and rejected.jsonl."""
    top = sorted(rejected.items(), key=lambda item: (-item[1], item[0]))
    text = count(sum(rejected.values()))
    if top:
        text += " (" + ", ".join(f"{k} {v}" for k, v in top[:shown])
        text += f", {len(top) - shown} more reasons)" if len(top) > shown else ")"
    return text


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _dataset_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    written = report["examples_written"]
    rejected = report.get("rejected") or {}
    pii = report.get("pii") or {}
    return [
        ("examples", f"{count(written['train'])} train / {count(written['validation'])} validation "
                     f"(of {count(report['records_read'])} records read)"),
        ("tokens", f"{count(report['tokens']['total'])} total, p95 example {count(report['tokens']['p95_example'])}"),
        ("rejected", _rejected(rejected)),
        ("duplicates removed", count(report.get("duplicates_removed"))),
        ("PII", ", ".join(f"{k} {v}" for k, v in pii.items()) or "none found"),
        ("sha256", f"`{report['dataset_sha256']}`"),
    ]


def _job_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    tokens = record.get("tokens_reconciliation") or {}
    return [
        ("job", f"`{record['job_id']}`" + ("" if record.get("job_created", True) else " (re-attached)")),
        ("model", f"`{record['base_model']}` -> `{record['fine_tuned_model']}`"),
        ("trained tokens", f"{count(record.get('trained_tokens'))} (estimated {count(tokens.get('estimated'))}"
                           f"{', MISMATCH' if tokens.get('flagged') else ''})"),
        ("duration", duration(record.get("job_duration_seconds"))),
        ("cost of this run", usd(record.get("run_cost_usd"))),
    ]


def _loss_lines(record: dict[str, Any], plot: str | None) -> list[str]:
    metrics = record.get("training_metrics") or {}
    curve = metrics.get("curve") or []
    if not curve:
        return ["No step metrics in the job's result file.", ""]
    first = curve[0]
    parts = [f"training loss {first.get('train_loss', 0):.3f} -> {metrics.get('final_train_loss') or 0:.3f} "
             f"over {count(metrics.get('steps'))} steps"]
    if metrics.get("final_valid_loss") is not None:
        parts.append(f"validation loss {metrics['final_valid_loss']:.3f}")
    if metrics.get("final_valid_token_accuracy") is not None:
        parts.append(f"validation token accuracy {share(metrics['final_valid_token_accuracy'])}")
    return ["; ".join(parts) + ".", "", *([f"![loss per step]({plot})", ""] if plot else [])]


EVAL_ROWS = (("f1", "F1", False), ("fact_recall", "fact recall", True),
             ("invented_fact_rate", "answers inventing a fact", True), ("json_valid_rate", "valid JSON", True),
             ("schema_valid_rate", "schema valid", True), ("language_rate", "in language", True),
             ("prompt_tokens_mean", "prompt tokens / request", None))
ROLE_NAMES = {"candidate": "fine-tuned", "baseline": "baseline (base + full prompt)", "current": "incumbent"}
FIELDS_SHOWN = 8  # exact match of the first fields of the reference; all of them are in eval.json


def _eval_lines(models: dict[str, dict[str, Any]]) -> list[str]:
    roles = [r for r in ("candidate", "baseline", "current") if models.get(r)]
    names = ROLE_NAMES
    lines = ["| | " + " | ".join(names[r] for r in roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for metric, label, is_share in EVAL_ROWS:
        cells = []
        for role in roles:
            model = models[role]
            value, interval = model.get(metric), (model.get("ci95") or {}).get(metric)
            if is_share is None:
                cells.append(count(value))
            elif is_share and value is not None:
                cells.append(share(value) + (f" [{share(interval[0])}, {share(interval[1])}]" if interval else ""))
            else:
                cells.append(with_interval(value, interval))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    has_intervals = any((models[r].get("ci95") or {}).get(metric) for r in roles for metric, _, _ in EVAL_ROWS)
    lines.append(("Figures in brackets are 95% intervals. " if has_intervals else "") + "Models: " + ", ".join(
        f"{names[r]} `{models[r]['model']}`" for r in roles) + ".")
    if any(models[r].get("fact_recall") is not None for r in roles):
        lines += ["", "Fact recall: the share of the reference's order numbers, numbers, amounts, dates and names "
                      "that also appear in the conversation and that the answer states; an answer inventing a fact "
                      "states one that is in neither."]
    judge = (models.get("candidate") or {}).get("judge")
    if judge:
        lines += ["", judge_line(judge)]
    return [*lines, "", *_field_lines(models, roles)]


def judge_line(judge: dict[str, Any]) -> str:
    """What the LLM judge said of the fine-tuned answers, and how often it agrees with the metrics."""
    head = f"LLM judge `{judge['model']}` (rubric {judge['rubric']})"
    if judge["status"] != "judged":
        return f"{head}: not run, {judge['reason']}."
    ci95 = judge.get("ci95") or {}

    def rate(key: str) -> str:
        interval = ci95.get(key)
        return share(judge[key]) + (f" [{share(interval[0])}, {share(interval[1])}]" if interval else "")

    return (f"{head}: {rate('pass_rate')} of the fine-tuned answers pass; it agrees with the automatic metrics "
            f"on {rate('agreement_with_automatic')} of them ({count(judge['examples'])} answers, "
            f"{count(judge['cached'])} from its cache, {count(judge['unparseable'])} unparseable; "
            f"cost {usd(judge['cost_usd'], 4)}).")


def _field_lines(models: dict[str, dict[str, Any]], roles: list[str]) -> list[str]:
    """Exact match per field of the JSON reference, per model: a wrong id shows as a low share here."""
    paths = list(dict.fromkeys(p for r in roles for p in models[r].get("fields") or {}))
    if not paths:
        return []
    lines = ["Exact match per field of the reference answer:", "",
             "| field | " + " | ".join(ROLE_NAMES[r] for r in roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for path in paths[:FIELDS_SHOWN]:
        cells = []
        for role in roles:
            found = (models[role].get("fields") or {}).get(path)
            interval = (found or {}).get("ci95")
            cells.append("-" if not found else share(found["exact_match_rate"])
                         + (f" [{share(interval[0])}, {share(interval[1])}]" if interval else ""))
        lines.append(f"| `{path}` | " + " | ".join(cells) + " |")
    if len(paths) > FIELDS_SHOWN:
        lines.append(f"| {len(paths) - FIELDS_SHOWN} more fields in eval.json | |")
    return [*lines, ""]


def _canonical(model: str | None) -> str | None:
    from ftflow.catalog import base_model_of, load_catalog
    from ftflow.errors import ConfigError

    if not model:
        return None
    try:
        return load_catalog().get(model).name
    except ConfigError:  # not in the price table (an open model elsewhere): compare the names
        return base_model_of(model)


def base_change_line(record: dict[str, Any]) -> str | None:
    """`Base model changed: a (backend) -> b (backend)` when the incumbent was made from another base or provider."""
    incumbent = (record.get("promotion") or {}).get("incumbent")
    if not incumbent or not record.get("base_model"):
        return None
    before = (_canonical(incumbent.get("base_model") or incumbent["model"]), incumbent.get("backend"))
    after = (_canonical(record["base_model"]), record.get("backend"))
    if before == after or (before[0] == after[0] and None in (before[1], after[1])):
        return None
    what = " and ".join(w for w, changed in (("base model", before[0] != after[0]),
                                             ("provider", None not in (before[1], after[1]) and before[1] != after[1]))
                        if changed)
    return (f"**{what[0].upper() + what[1:]} changed:** `{before[0]}` ({before[1] or '-'}) -> `{after[0]}` "
            f"({after[1] or '-'}), against the incumbent `{incumbent['model']}`.")


def _promotion_lines(promotion: dict[str, Any]) -> list[str]:
    """Each criterion of the gate: value, threshold, verdict."""
    criteria = promotion.get("criteria") or []
    if not criteria:
        return []
    lines = ["| criterion | value | at least | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['criterion']} | {c['value']:.3f} | {c['threshold']:.3f} | "
              f"{'pass' if c['verdict'] == 'pass' else '**FAIL**'} |" for c in criteria]
    return [*lines, ""]


def _cost_rows(economics: dict[str, Any]) -> list[tuple[str, str]]:
    payback = economics.get("payback_months")
    return [
        ("training", f"{usd(economics['training_cost_usd'])} ({count(economics['trained_tokens'])} tokens)"),
        ("cost per 1K requests", f"{usd(economics['cost_per_1k_requests_before_usd'], 4)} -> "
                                 f"{usd(economics['cost_per_1k_requests_after_usd'], 4)}"),
        ("prompt tokens / request", f"{count(economics['prompt_tokens_before'])} -> "
                                    f"{count(economics['prompt_tokens_after'])} "
                                    f"({change(-economics['prompt_token_reduction'])})"),
        *([("hosting the deployed model", f"{usd(economics['hosting_usd_per_month'])} per month (in the saving)")]
          if economics.get("hosting_usd_per_month") else []),
        (f"monthly saving at {count(economics['monthly_requests'])} requests", usd(economics["monthly_saving_usd"])),
        ("payback", f"{payback} months" if payback is not None else "never (costs more per request)"),
        *([] if not economics.get("incumbent_model") else [
            ("cost per 1K requests against the incumbent",
             f"{usd(economics['cost_per_1k_requests_incumbent_usd'], 4)} (`{economics['incumbent_model']}`) -> "
             f"{usd(economics['cost_per_1k_requests_after_usd'], 4)}"),
            (f"monthly saving against the incumbent at {count(economics['monthly_requests'])} requests",
             usd(economics["monthly_saving_vs_incumbent_usd"]))]),
    ]


def _provider_error_lines(error: dict[str, Any]) -> list[str]:
    """The failed job's error field by field, as the provider gave it; its last events if it gave no reason."""
    rows = [("field", "the provider's value")]
    rows += [(field, "`" + str(error[field]).replace("|", "\\|") + "`" if error.get(field) is not None else "(empty)")
             for field in ("code", "message", "param", "line")]
    lines = _table(rows)
    if not error.get("message"):
        lines += ["The provider gave no reason. The job's last events, newest first:", "",
                  *[f"- {event}" for event in error.get("last_events") or ["(none)"]], ""]
    return lines


def summary_markdown(record: dict[str, Any], links: dict[str, str] | None = None,
                     images: dict[str, str] | None = None) -> str:
    """The run's summary: readable in ten seconds, top to bottom. `images`: plot name -> URL to embed."""
    images = images or {}
    title = record.get("run_name") or record["run_id"]
    lines = [f"# {title}", "", f"**Outcome:** {outcome(record)}", ""]
    changed = base_change_line(record)
    if changed:
        lines += [changed, ""]
    report = record.get("prepare")
    if report:
        lines += ["## Dataset", "", *_table(_dataset_rows(report))]
    if record.get("provider_error"):
        lines += ["## Provider error", "", *_provider_error_lines(record["provider_error"])]
    elif record.get("job_id"):
        lines += ["## Fine-tuning job", "", *_table(_job_rows(record)),
                  "## Loss", "", *_loss_lines(record, images.get("loss"))]
    if record.get("evaluation"):
        lines += ["## Held-out evaluation", "", *_eval_lines(record["evaluation"])]
    promotion_lines = _promotion_lines(record.get("promotion") or {})
    if promotion_lines:
        lines += ["## Promotion gate", "", *promotion_lines]
    if record.get("economics"):
        lines += ["## Cost case", "", *_table(_cost_rows(record["economics"]))]
    if record.get("deployments_removed"):
        lines += ["Removed deployments, neither promoted nor the previous promoted model: "
                  + ", ".join(f"`{name}`" for name in record["deployments_removed"]) + ".", ""]
    if record.get("settings"):
        lines += ["## Settings", "", *_settings_lines(record["settings"])]
    if links:
        lines += ["## Links", "", *[f"- [{label}]({url})" for label, url in links.items()], ""]
    files = ["run.json", *(["report.json"] if report else []), *(["eval.json"] if record.get("evaluation") else []),
             *(["plots/"] if images else [])]  # a run that stopped early wrote only some of them
    lines.append(f"Run folder: `{record['run_dir']}` ({', '.join(files)}).")
    return "\n".join(lines)


HISTORY_COLUMNS = ("run id", "started", "base model", "outcome", "dataset", "examples", "F1", "facts", "JSON",
                   "language", "cost", "promoted model")
# What `ftflow runs` prints: fits 100 columns (the name is base model + run id; `ftflow models` has the models).
TERMINAL_COLUMNS = ("run id", "base model", "outcome", "dataset", "F1", "facts", "cost")


def _settings_lines(settings: dict[str, dict[str, Any]], width: int = 100) -> list[str]:
    """The run's effective settings: those set somewhere with their origin, then the defaults in one line."""
    def shown(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= width else text[:width - 1] + "\u2026"

    chosen = {name: s for name, s in settings.items() if s["origin"] not in ("default", "-")}
    defaults = {name: s for name, s in settings.items() if s["origin"] in ("default", "-")}
    lines = ["| setting | value | from |", "|---|---|---|",
             *[f"| {name} | `{shown(s['value'])}` | {s['origin']} |" for name, s in chosen.items()], ""]
    if defaults:
        lines += ["At their defaults (secrets: absent): "
                  + ", ".join(f"{name}={shown(s['value'])}" for name, s in defaults.items()), ""]
    return lines




def history_row(record: dict[str, Any]) -> dict[str, str]:
    """One run as the history shows it (`ftflow runs`, the `ftflow-history` artifact)."""
    candidate = (record.get("evaluation") or {}).get("candidate") or {}
    written = (record.get("prepare") or {}).get("examples_written") or {}
    status = record["status"]
    if status == "succeeded":
        status = "promoted" if record.get("promoted") else "not promoted"
        status = f"re-attached, {status}" if record.get("job_created") is False else status
    return {
        "run id": record["run_id"],
        "started": dt.datetime.fromtimestamp(record["started_at"], dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "base model": short_model(record.get("base_model")),
        "outcome": status,
        "dataset": (record.get("dataset_sha256") or "")[:8] or "-",
        "examples": count(sum(written.values())) if written else "-",
        "F1": with_interval(candidate.get("f1"), (candidate.get("ci95") or {}).get("f1")),
        "facts": share(candidate.get("fact_recall")),
        "JSON": share(candidate.get("json_valid_rate")),
        "language": share(candidate.get("language_rate")),
        "cost": usd(record.get("run_cost_usd", (record.get("economics") or {}).get("training_cost_usd"))),
        "promoted model": record.get("fine_tuned_model") if record.get("promoted") else "-",
    }


def job_links(record: dict[str, Any], ui_url: str | None, finetune_flow_run_id: str | None) -> dict[str, str]:
    """Where the job's events can be read: the provider's page (OpenAI), the finetune run's log."""
    links = {}
    if record.get("backend") == "openai" and record.get("job_id"):
        links[f"job {record['job_id']} at OpenAI"] = f"https://platform.openai.com/finetune/{record['job_id']}"
    if ui_url and finetune_flow_run_id:
        links["job events in the finetune run's log"] = f"{ui_url.rstrip('/')}/runs/flow-run/{finetune_flow_run_id}"
    return links


@task(name="label-run", cache_policy=NO_CACHE)
def label_run(dataset_sha256: str, settings: Settings) -> str:
    """Return the run's name (given as it started); tags the flow run with its dataset and how it was triggered."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        from tasks.lineage import new_run_id

        return run_name(settings.model, new_run_id())
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        tags = sorted({*current.tags, trigger_tag(bool(current.auto_scheduled)), f"dataset:{dataset_sha256[:8]}"})
        client.update_flow_run(run_id, tags=tags)
    return current.name


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(record: dict[str, Any], resources: RunResources, plots: dict[str, str],
                    finetune_flow_run_id: str | None = None) -> str:
    """Return the summary markdown; published as `ftflow-summary`, with `ftflow-history` next to it."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.settings import PREFECT_UI_URL

    from tasks.plots import data_url

    links = job_links(record, PREFECT_UI_URL.value(), finetune_flow_run_id)
    text = summary_markdown(record, links, {name: data_url(Path(path)) for name, path in plots.items()})
    create_markdown_artifact(text, key=SUMMARY_KEY, description=f"{record.get('run_name')}: {outcome(record)}")
    # The UI renders a table cell that is a lone "-" as a list bullet: an em dash says "none".
    history = [{column: "\u2014" if value == "-" else value for column, value in history_row(r).items()}
               for r in resources.lineage.list_runs(20)]
    create_table_artifact(history, key=HISTORY_KEY, description="The last retrain runs, newest first")
    return text


@task(name="read-history", cache_policy=NO_CACHE)
def read_history(resources: RunResources, limit: int = 20) -> list[dict[str, Any]]:
    """Return the last runs' records from the lineage store, oldest first (for the run-over-run plot)."""
    return list(reversed(resources.lineage.list_runs(limit)))

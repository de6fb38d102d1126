"""The tables a command prints at the end: the prepared dataset's figures, and a run's outcome."""

from __future__ import annotations

from typing import Any

from ftflow.cli.output import kv_table, print_table
from ftflow.formatting import change, count, share, usd, with_interval


def print_prepare_summary(report: dict[str, Any]) -> None:
    rows = [
        ("method", report.get("method", "supervised")),
        ("records read", f"{report['records_read']:,}"),
        (
            "train / validation",
            f"{report['examples_written']['train']:,} / {report['examples_written']['validation']:,}",
        ),
        ("rejected", ", ".join(f"{k}={v}" for k, v in report["rejected"].items()) or "0"),
        ("duplicates removed", str(report["duplicates_removed"])),
        ("trimmed turns", str(report["trimmed_turns"])),
        ("PII", ", ".join(f"{k}={v}" for k, v in report["pii"].items()) or "none"),
        *([("moderation", moderation_line(report["moderation"]))] if report.get("moderation") else []),
        (
            "tokens total / p95 / max",
            " / ".join(f"{report['tokens'][k]:,}" for k in ("total", "p95_example", "max_example")),
        ),
        ("epochs x tokens -> billing tokens",
         f"{report['n_epochs']} x {report['billing_tokens'] // report['n_epochs']:,} -> {report['billing_tokens']:,}"),
        ("estimated training cost", f"{usd(report['estimated_cost_usd'], 4)} (prices {report['prices_as_of']})"),
        ("quality", "passed" if report["quality"]["success"] else "FAILED"),
        ("report", report["files"]["report.json"]),
    ]
    print_table(kv_table(f"prepared {report['dataset_sha256'][:12]} for {report['model']}", rows))


def moderation_line(moderation: dict[str, Any]) -> str:
    """`report, omni-moderation-latest: 2 of 381 flagged (violence=2)`, or `off`."""
    if moderation["mode"] == "off":
        return "off"
    flagged = ", ".join(f"{k}={v}" for k, v in moderation["by_category"].items())
    return (f"{moderation['mode']}, {moderation['model']}: {moderation['flagged']} of {moderation['examples']} "
            f"flagged" + (f" ({flagged})" if flagged else "")
            + (f", {moderation['rejected']} quarantined" if moderation["rejected"] else ""))


def print_run_summary(record: dict[str, Any]) -> None:
    from tasks.summary import outcome

    rows: list[tuple[str, Any]] = [("run", record.get("run_name") or record["run_id"]), ("outcome", outcome(record))]
    if record["status"] == "succeeded":
        tokens = record["tokens_reconciliation"]
        rows += [
            ("fine-tuned model", record["fine_tuned_model"]),
            ("job", f"{record['job_id']} (key {record['idempotency_key'][:12]})"
                    + ("" if record.get("job_created", True) else ", re-attached")),
            ("trained tokens", f"{record['trained_tokens']:,} (estimated {tokens['estimated']:,}"
                               f"{', MISMATCH' if tokens['flagged'] else ''})"),
            ("cost of this run", usd(record.get("run_cost_usd"), 4)),
        ]
    models, economics = record.get("evaluation") or {}, record.get("economics")
    if models.get("candidate") and models.get("baseline"):
        candidate, baseline = models["candidate"], models["baseline"]
        if candidate.get("win_rate") is not None:  # method dpo: the gate's metric
            win = with_interval(candidate["win_rate"], (candidate.get("ci95") or {}).get("win_rate"))
            rows.append(("win rate", f"{win} (baseline {baseline['win_rate']:.2f})"))
        f1 = with_interval(candidate["f1"], (candidate.get("ci95") or {}).get("f1"))
        rows.append(("F1 / JSON / language",
                     f"{f1} / {share(candidate['json_valid_rate'])} / {share(candidate['language_rate'])} "
                     f"(baseline {baseline['f1']:.2f} / {share(baseline['json_valid_rate'])} / "
                     f"{share(baseline['language_rate'])})"))
        if candidate.get("fact_recall") is not None:
            facts = with_interval(candidate["fact_recall"], (candidate.get("ci95") or {}).get("fact_recall"))
            rows.append(("fact recall / invented", f"{facts} / {share(candidate.get('invented_fact_rate'))} "
                                                   f"(baseline {with_interval(baseline.get('fact_recall'), None)} / "
                                                   f"{share(baseline.get('invented_fact_rate'))})"))
    if economics:
        rows += [
            ("prompt tokens / request", f"{count(economics['prompt_tokens_after'])} "
                                        f"(was {count(economics['prompt_tokens_before'])}, "
                                        f"{change(-economics['prompt_token_reduction'])})"),
            ("monthly saving", f"{usd(economics['monthly_saving_usd'])} at {economics['monthly_requests']:,} requests"),
        ]
    rows.append(("run report", f"{record['run_dir']}/run.json"))
    print_table(kv_table(f"run {record['run_id']}", rows))

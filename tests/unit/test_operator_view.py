"""What the operator reads: money and counts, the loss table, job event lines, run names, summary, history."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from typer.testing import CliRunner

from ftflow.cli import app
from ftflow.cli.summaries import print_prepare_summary
from ftflow.environment import prefect_defaults
from ftflow.formatting import usd
from tasks.jobs import JobEventLog, parse_step_metrics, sample_curve
from tasks.report import report_markdown
from tasks.summary import history_row, outcome, run_name, summary_markdown, trigger_tag
from tests.conftest import ROOT


def test_money_puts_the_sign_before_the_dollar():
    assert usd(-1.7) == "-$1.70"
    assert usd(0.33234, 4) == "$0.3323"
    assert usd(-0.001) == "$0.00"  # rounds to zero: no "-$0.00"
    assert usd(1234.5) == "$1,234.50"


def test_sampled_loss_curve_keeps_every_step_once_and_ends_with_the_last():
    curve = [{"step": float(i)} for i in range(1, 343)]
    sampled = sample_curve(curve)
    steps = [row["step"] for row in sampled]
    assert len(steps) == len(set(steps)) <= 201
    assert steps[0] == 1 and steps[-1] == 342
    short = [{"step": float(i)} for i in range(1, 11)]
    assert sample_curve(short) == short  # 10 steps: all of them, the last one once


def test_step_metrics_columns_are_named_alike():
    text = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.0,0.5,,\n2,1.5,0.6,1.7,0.55\n"
    rows = parse_step_metrics(text)
    assert list(rows[0]) == ["step", "train_loss", "train_token_accuracy", "valid_loss", "valid_token_accuracy"]
    assert rows[0]["valid_loss"] is None and rows[1]["valid_token_accuracy"] == 0.55


def event(message: str, step: int | None = None, total: int = 342):
    if step is None:
        return SimpleNamespace(type="message", message=message, data=None)
    return SimpleNamespace(type="metrics", message=f"Step {step}/{total}: training loss=1.0",
                           data={"step": step, "total_steps": total, "train_loss": 1.0})


def test_a_job_logs_about_twenty_loss_lines_and_one_line_per_event_kind():
    log = JobEventLog()
    events = [event("Validating training file: file-1"), event("Files validated, moving job to queued state"),
              event("Fine-tuning job started")]
    for step in range(1, 343):
        events.append(event("", step))
        if step in (114, 228, 342):
            events.append(event(f"Checkpoint created at step {step}"))
    events += [event("New fine-tuned model created: ft:x"), event("The job has successfully completed")]
    lines = [line for e in events if (line := log.line(e))]
    loss_lines = [line for line in lines if line.startswith("step ")]
    assert 18 <= len(loss_lines) <= 22
    assert loss_lines[0].startswith("step 1/342") and loss_lines[-1].startswith("step 342/342")
    assert len(lines) - len(loss_lines) == 3 + 3 + 2  # every message event (checkpoints are separated by steps)
    repeated = JobEventLog()
    assert [repeated.line(e) for e in (event("Checkpoint created at step 1"), event("Checkpoint created at step 2"))] \
        == ["Checkpoint created at step 1", None]


def test_run_names_say_the_base_model_and_the_run_id_and_tags_the_trigger():
    """Seven runs a day with one dataset were all `retrain-59eb880b-2026-12-06`: the run id makes each unique."""
    assert run_name("gpt-4o-mini-2024-07-18", "20261206T201012-3f9a2c1b") == \
        "retrain-gpt-4o-mini-20261206T201012-3f9a2c1b"
    assert run_name("gpt-4.1-nano", "20261206T201013-0a1b2c3d") == "retrain-gpt-4.1-nano-20261206T201013-0a1b2c3d"
    assert run_name("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "x").startswith("retrain-Meta-Llama-3.1")
    assert trigger_tag(True) == "trigger:scheduled" and trigger_tag(False) == "trigger:manual"


def prepare_report() -> dict:
    return {"records_read": 393, "examples_written": {"train": 341, "validation": 40},
            "rejected": {"invalid_json": 1}, "duplicates_removed": 2, "trimmed_turns": 1, "pii": {"email": 18},
            "tokens": {"total": 41230, "p95_example": 123, "max_example": 200}, "n_epochs": 3,
            "billing_tokens": 110766, "estimated_cost_usd": 0.3323, "prices_as_of": "2025-07-01",
            "quality": {"success": True}, "files": {"report.json": "out/report.json"},
            "dataset_sha256": "0440c9f11ef4" + "0" * 52, "model": "gpt-4o-mini-2024-07-18"}


def run_record(**changes) -> dict:
    record = {
        "run_id": "20261127T145419-462ed1cb", "run_name": "retrain-0440c9f1-2026-11-27", "status": "succeeded",
        "started_at": 1795791259.0, "base_model": "gpt-4o-mini-2024-07-18", "run_dir": ".ftflow/runs/x",
        "backend": "local", "dataset_sha256": "0440c9f11ef4" + "0" * 52, "prepare": prepare_report(),
        "job_id": "ftjob-abc", "job_created": True, "job_duration_seconds": 95.0,
        "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:ftflow-local:ftflow:abc", "trained_tokens": 110766,
        "idempotency_key": "e97975bcc124" + "0" * 28,
        "tokens_reconciliation": {"estimated": 110766, "actual": 110766, "flagged": False},
        "training_metrics": {"steps": 342, "final_train_loss": 0.25, "final_valid_loss": 0.3,
                             "curve": [{"step": 1.0, "train_loss": 2.1}, {"step": 342.0, "train_loss": 0.25}]},
        "evaluation": {"candidate": {"model": "ft:x", "f1": 0.92, "json_valid_rate": 1.0, "language_rate": 1.0,
                                     "prompt_tokens_mean": 47.2, "ci95": {"f1": [0.88, 0.95]}},
                       "baseline": {"model": "gpt-4o-mini-2024-07-18", "f1": 0.13, "json_valid_rate": 0.0,
                                    "language_rate": 0.02, "prompt_tokens_mean": 224.0}},
        "economics": {"training_cost_usd": 0.3323, "trained_tokens": 110766, "cost_per_1k_requests_before_usd": 0.1,
                      "cost_per_1k_requests_after_usd": 0.117, "prompt_tokens_before": 224.0,
                      "prompt_tokens_after": 47.2, "prompt_token_reduction": 0.79, "monthly_requests": 100000,
                      "monthly_saving_usd": -1.7, "payback_months": None},
        "promotion": {"promoted": True, "reasons": []}, "promoted": True, "previous_model": None,
        "run_cost_usd": 0.3323,
    }
    return {**record, **changes}


def test_the_prepare_summary_shows_epochs_times_tokens_and_signed_money(capsys):
    print_prepare_summary(prepare_report())
    out = capsys.readouterr().out
    assert "3 x 36,922 -> 110,766" in out
    assert "$0.3323" in out


def test_the_prepare_report_artifact_has_a_header_row_and_grouped_counts():
    """The Prefect UI draws an empty header row (`| | |`) as a bare bar above the figures."""
    report = {**prepare_report(), "records_read": 1_000_000, "method": "dpo", "inputs_sha256": "23677de305ad" * 5,
              "gate": {"passed": False, "failures": ["budget: $12.00 over the $10.00 limit"]}}
    lines = report_markdown(report).splitlines()
    assert lines[0] == "# Prepared dataset `0440c9f11ef4` for gpt-4o-mini-2024-07-18"
    assert lines[2:4] == ["| method | dpo |", "|---|---|"]
    for expected in ("| records read | 1,000,000 |", "| train / validation | 341 / 40 |",
                     "| tokens (total / p95 example) | 41,230 / 123 |", "| billing tokens | 110,766 |",
                     "| gate | FAILED |", "| inputs digest | 23677de305ad |", "| `invalid_json` | 1 |",
                     "- gate: budget: $12.00 over the $10.00 limit"):
        assert expected in lines, expected


def test_the_summary_says_outcome_dataset_job_evaluation_and_cost():
    text = summary_markdown(run_record(), {"job events": "http://ui/runs/flow-run/1"},
                            {"loss": "data:image/png;base64,AAAA"})
    assert text.startswith("# retrain-0440c9f1-2026-11-27\n\n**Outcome:** trained; promoted")
    for expected in ("341 train / 40 validation", "`ftjob-abc`", "110,766", "| duration | 95 s |", "0.92 [0.88, 0.95]",
                     "-$1.70", "never (costs more per request)", "[job events](http://ui/runs/flow-run/1)",
                     "training loss 2.100 -> 0.250 over 342 steps", "![loss per step](data:image/png;base64,AAAA)",
                     "| rejected | 1 (invalid_json 1) |"):
        assert expected in text, expected



def test_the_summary_explains_the_promotion_facts_fields_base_change_and_cost_against_the_incumbent():
    """The issue's reproduction: a gpt-4.1-nano candidate over a gpt-4o-mini incumbent at equal F1."""
    candidate = {"model": "ft:gpt-4.1-nano-2025-04-14:x::new", "f1": 0.96, "fact_recall": 0.31,
                 "invented_fact_rate": 0.47, "json_valid_rate": 1.0, "language_rate": 1.0, "prompt_tokens_mean": 47,
                 "ci95": {"f1": [0.95, 0.96], "fact_recall": [0.2, 0.43]},
                 "fields": {"intent": {"exact_match_rate": 1.0, "ci95": [1.0, 1.0]},
                            "antwort": {"exact_match_rate": 0.0, "ci95": [0.0, 0.0]}}}
    record = run_record(
        base_model="gpt-4.1-nano", backend="local",
        evaluation={"candidate": candidate, "baseline": {**candidate, "model": "gpt-4.1-nano", "f1": 0.06},
                    "current": {**candidate, "model": "ft:gpt-4o-mini-2024-07-18:x::old"}},
        promotion={"promoted": False, "reasons": ["fact_recall 0.310 is below the baseline's 0.900"],
                   "criteria": [{"criterion": "fact_recall against the baseline", "value": 0.31, "threshold": 0.88,
                                 "verdict": "fail"},
                                {"criterion": "f1 against the incumbent", "value": 0.96, "threshold": 0.94,
                                 "verdict": "pass"}],
                   "incumbent": {"model": "ft:gpt-4o-mini-2024-07-18:x::old", "base_model": "gpt-4o-mini",
                                 "backend": "openai"}},
        economics={**run_record()["economics"], "incumbent_model": "ft:gpt-4o-mini-2024-07-18:x::old",
                   "cost_per_1k_requests_incumbent_usd": 0.0829, "cost_per_1k_requests_after_usd": 0.0553,
                   "monthly_saving_vs_incumbent_usd": 2.76})
    text = summary_markdown(record)
    for expected in ("| fact recall | 31% [20%, 43%] |", "| answers inventing a fact | 47% |",
                     "| `antwort` | 0% [0%, 0%] |", "| `intent` | 100% [100%, 100%] |",
                     "**Base model and provider changed:** `gpt-4o-mini-2024-07-18` (openai) -> "
                     "`gpt-4.1-nano-2025-04-14` (local)",
                     "| fact_recall against the baseline | 0.310 | 0.880 | **FAIL** |",
                     "| f1 against the incumbent | 0.960 | 0.940 | pass |",
                     "| cost per 1K requests against the incumbent | $0.0829 (`ft:gpt-4o-mini-2024-07-18:x::old`) -> "
                     "$0.0553 |", "$2.76"):
        assert expected in text, expected
    same = run_record(promotion={"promoted": True, "reasons": [], "incumbent": {
        "model": "ft:old", "base_model": "gpt-4o-mini-2024-07-18", "backend": "local"}})
    assert "changed:**" not in summary_markdown(same)

def test_the_summary_names_only_the_files_the_run_wrote():
    trained = summary_markdown(run_record(), images={"loss": "data:image/png;base64,AAAA"})
    assert trained.endswith("(run.json, report.json, eval.json, plots/).")
    # Skipped before preparing: no report, no evaluation; only the eval-history plot.
    skipped = run_record(status="skipped", reason="sources and settings unchanged", prepare=None, evaluation=None,
                         job_id=None, economics=None)
    assert summary_markdown(skipped).endswith("(run.json).")
    assert "## Dataset" not in summary_markdown(skipped)


def test_outcomes_tell_trained_reattached_skipped_and_not_promoted_apart():
    model = "ft:gpt-4o-mini-2024-07-18:ftflow-local:ftflow:abc"
    assert outcome(run_record()) == "trained; promoted"
    reattached = run_record(job_created=False, previous_model=model, run_cost_usd=0.0)
    assert outcome(reattached) == "re-attached to job ftjob-abc (trained earlier); already the promoted model"
    assert "re-attached" in summary_markdown(reattached) and "| cost of this run | $0.00 |" in summary_markdown(reattached)
    assert outcome(run_record(promoted=False, promotion={"promoted": False, "reasons": ["F1 too low"]})) \
        == "trained; not promoted: F1 too low"
    assert outcome({"status": "skipped", "reason": "dataset unchanged"}) == "skipped: dataset unchanged"


def test_history_rows_read_like_the_cli_table():
    row = history_row(run_record(job_created=False, run_cost_usd=0.0))
    assert row["run id"] == "20261127T145419-462ed1cb" and row["outcome"] == "re-attached, promoted"
    assert row["base model"] == "gpt-4o-mini"
    assert row["F1"] == "0.92 [0.88, 0.95]" and row["JSON"] == "100%" and row["cost"] == "$0.00"
    assert row["dataset"] == "0440c9f1" and row["examples"] == "381"
    skipped = history_row({"run_id": "r2", "status": "skipped", "started_at": 1795791259.0})
    assert skipped["outcome"] == "skipped" and skipped["F1"] == "-"


def test_prefect_defaults_apply_only_what_the_user_has_not_set(tmp_path):
    defaults = prefect_defaults({"PREFECT_HOME": "/mine"}, tmp_path)
    assert "PREFECT_HOME" not in defaults and defaults["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert prefect_defaults({}, tmp_path)["PREFECT_HOME"] == str(tmp_path / ".ftflow" / "prefect")


def test_cli_version_help_and_economics_read_cleanly():
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip().startswith("ftflow ")
    for command in (["--help"], ["prepare", "--help"], ["retrain", "--help"], ["runs", "--help"]):
        text = runner.invoke(app, command).output
        assert "list[" not in text and "ftflow.errors" not in text and "of ours" not in text, command
    economics = runner.invoke(app, ["economics", "--prompt-tokens-before", "100", "--prompt-tokens-after", "90"])
    assert economics.exit_code == 0
    assert "# " not in economics.output and "|---" not in economics.output  # a table, not raw Markdown
    assert "-$" in economics.output and "$-" not in economics.output
    assert "100.0" not in economics.output and "100 " in economics.output  # token counts are whole numbers


def test_runs_lists_and_shows_runs_from_the_registry_without_wrapping_ids(tmp_path, monkeypatch):
    from ftflow.store.lineage import LineageStore

    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    lineage = LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    lineage.save_run(run_record())
    lineage.save_run({"run_id": "20261128T030000-11111111", "run_name": "retrain-0440c9f1-2026-11-28",
                      "status": "skipped", "started_at": 1795856400.0, "reason": "unchanged", "run_dir": "r"})
    runner = CliRunner()
    listed = runner.invoke(app, ["runs"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert any("20261127T145419-462ed1cb" in line and "gpt-4o-mini" in line and "0.92 [0.88, 0.95]" in line
               for line in lines)
    models = runner.invoke(app, ["models"])
    assert "…" not in listed.output + models.output  # at 80 columns, no cell is cropped
    assert any("ft:gpt-4o-mini-2024-07-18:ftflow-local:ftflow:abc" in line for line in models.output.splitlines())
    shown = runner.invoke(app, ["runs", "show", "20261127T1454"])
    assert shown.exit_code == 0 and "trained; promoted" in shown.output and "0.92 [0.88, 0.95]" in shown.output
    by_name = runner.invoke(app, ["runs", "show", "retrain-0440c9f1-2026-11-28"])
    assert "skipped: unchanged" in by_name.output
    missing = runner.invoke(app, ["runs", "show", "nope"])
    assert missing.exit_code == 2 and "no run matches 'nope'" in missing.output
    assert json.loads(json.dumps(lineage.find_runs("2026112")))  # both runs start so: ambiguous prefix
    assert runner.invoke(app, ["runs", "show", "2026112"]).exit_code == 2


def test_runs_show_finds_a_run_by_name_run_id_or_prefect_flow_run_id_and_lists_ambiguous_ones_by_id(
        tmp_path, monkeypatch):
    """The issue's reproductions: two runs of one name, and the flow-run id from the UI's URL."""
    from ftflow.store.lineage import LineageStore

    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    lineage = LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    for run_id, flow_run_id, model in (("20261206T201012-3f9a2c1b", "3f9a2c1b-1111-4222-8333-444455556666", "gpt-4o-mini"),
                                       ("20261206T201544-7e0d9a55", "7e0d9a55-aaaa-4bbb-8ccc-ddddeeeeffff", "gpt-4.1-nano")):
        lineage.save_run(run_record(run_id=run_id, flow_run_id=flow_run_id, base_model=model,
                                    run_name=run_name(model, run_id), started_at=1796588000.0 + len(model)))
    runner = CliRunner()
    for query in ("7e0d9a55-aaaa-4bbb-8ccc-ddddeeeeffff", "7e0d9a", "20261206T201544-7e0d9a55", "20261206T2015",
                  "retrain-gpt-4.1-nano-20261206T201544-7e0d9a55", "retrain-gpt-4.1"):
        shown = runner.invoke(app, ["runs", "show", query])
        assert shown.exit_code == 0 and "retrain-gpt-4.1-nano-20261206T201544-7e0d9a55" in shown.output, query
    both = runner.invoke(app, ["runs", "show", "20261206T201"])
    assert both.exit_code == 2
    assert "matches 2 runs: 20261206T201544-7e0d9a55 (retrain-gpt-4.1-nano-" in both.output
    assert "20261206T201012-3f9a2c1b (retrain-gpt-4o-mini-" in both.output


def test_runs_fits_a_100_column_terminal(tmp_path, monkeypatch):
    """`ftflow runs` was 215 columns wide."""
    from ftflow.store.lineage import LineageStore

    monkeypatch.setenv("FTFLOW_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    monkeypatch.setenv("COLUMNS", "100")
    candidate = {**run_record()["evaluation"]["candidate"], "fact_recall": 0.31}
    LineageStore(f"sqlite:///{tmp_path / 'registry.sqlite3'}").save_run(  # the widest cells: nano, re-attached
        run_record(promoted=False, evaluation={**run_record()["evaluation"], "candidate": candidate},
                   base_model="gpt-4.1-nano-2025-04-14", job_created=False, run_cost_usd=1234.5))
    listed = CliRunner().invoke(app, ["runs"])
    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.output.splitlines()) <= 100, listed.output
    assert "20261127T145419-462ed1cb" in listed.output and "gpt-4.1-nano" in listed.output
    assert "re-attached" in listed.output and "not promoted" in listed.output and "31%" in listed.output


def test_every_registry_command_says_a_bad_setting_in_one_error_line(monkeypatch):
    """`ftflow runs`, `models` and `models current` printed a traceback for a bad FTFLOW_BACKEND."""
    monkeypatch.setenv("FTFLOW_BACKEND", "bogus")
    runner = CliRunner()
    for command in (["runs"], ["runs", "show", "x"], ["models"], ["models", "current"], ["economics"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, command


def test_economics_refuses_negative_counts():
    result = CliRunner().invoke(app, ["economics", "--prompt-tokens-after", "-5"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: token and request counts cannot be negative: prompt tokens after -5"


def test_the_readme_sets_the_server_environment_before_starting_the_server():
    """Exported after `prefect server start`, PREFECT_API_URL left the UI talking to port 4200."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme[readme.index("## Running on a schedule"):]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 3)]
    start = block.index("prefect server start")
    for variable in ("PREFECT_API_URL=", "PREFECT_HOME=", "PREFECT_SERVER_ANALYTICS_ENABLED=false"):
        assert -1 < block.find(variable) < start, variable
    assert block.index("/health") < block.index("work-pool create")  # waits for the server first


class FakeProvider:
    """Just enough of a Provider for poll_job: a finished job and its events, newest first."""

    def __init__(self, events):
        self.events = events

    def get_job(self, job_id):
        from ftflow.providers.base import RemoteJob

        return RemoteJob(id=job_id, state="succeeded", provider_status="succeeded")

    def list_events(self, job_id):
        return list(reversed(self.events))


def test_events_logged_in_an_earlier_attempt_are_not_logged_again():
    from ftflow.providers.base import JobEvent
    from tasks.jobs import EventCursor, poll_job

    provider = FakeProvider([JobEvent(id=f"e{i}", type="message", message=f"event {i}") for i in range(3)])
    cursor, seen, recorded = EventCursor(), [], []
    for _ in range(2):  # first attempt, then a retry of the task with the same cursor
        poll_job(provider, "ftjob-retried", initial=0, maximum=0, deadline=time.time() + 5,
                 on_event=lambda e: seen.append(e.id), cursor=cursor, on_cursor=recorded.append)
    assert seen == ["e0", "e1", "e2"]
    assert recorded == ["e2"]  # what the ledger keeps for a later process
    reattached = EventCursor(recorded[-1])  # a re-run attaching to the job starts after them
    assert reattached.new_events(provider, "ftjob-retried") == []


def test_a_reattached_model_that_is_already_promoted_gets_no_second_promotion_row(tmp_path):
    from ftflow.run_resources import RunResources
    from ftflow.settings import get_settings
    from ftflow.store.lineage import LineageStore, promotions
    from tasks.promotion import decide_promotion

    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    model = "ft:gpt-4o-mini-2024-07-18:ftflow-local:ftflow:abc"
    scores = {"f1": 0.9, "json_valid_rate": 1.0, "schema_valid_rate": None, "language_rate": 1.0}
    evaluation = {"status": "evaluated", "candidate": model, "examples": 40,
                  "models": {"candidate": {"model": model, **scores},
                             "baseline": {"model": "gpt-4o-mini-2024-07-18", **scores, "f1": 0.1}},
                  "differences": {"baseline": {"f1": {"difference": 0.8, "ci95": [0.7, 0.9]}}}}
    settings = get_settings(registry_url=url)
    for run_id in ("run-trained", "run-reattached"):
        assert decide_promotion.fn(evaluation, run_id, settings, RunResources(settings)).promoted
    with LineageStore(url).engine.connect() as conn:
        rows = conn.execute(promotions.select()).all()
    assert [(r.model, r.run_id) for r in rows] == [(model, "run-trained")]


def test_task_finish_lines_name_their_task():
    import logging

    from ftflow.runlog import NameFinishedTasks

    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, "Finished in state Completed()", (), None)
    record.task_name = "check-unchanged"
    assert NameFinishedTasks().filter(record) and record.getMessage() == "check-unchanged finished in state Completed()"
    other = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, "job x: step 1/2", (), None)
    other.task_name = "wait-for-job"
    assert NameFinishedTasks().filter(other) and other.getMessage() == "job x: step 1/2"


def test_the_run_summary_on_the_terminal_shows_fact_recall(capsys):
    from ftflow.cli.summaries import print_run_summary

    evaluation = run_record()["evaluation"]
    evaluation["candidate"] = {**evaluation["candidate"], "fact_recall": 0.3, "invented_fact_rate": 1.0,
                               "ci95": {"f1": [0.88, 0.95], "fact_recall": [0.19, 0.41]}}
    evaluation["baseline"] = {**evaluation["baseline"], "fact_recall": 0.94, "invented_fact_rate": 0.0}
    print_run_summary(run_record(evaluation=evaluation))
    assert "0.30 [0.19, 0.41] / 100% (baseline 0.94 / 0%)" in capsys.readouterr().out


def test_eval_history_labels_tell_runs_of_one_day_and_dataset_apart():
    """Seven runs named `retrain-59eb880b-2026-12-06` gave seven identical x labels."""
    from tasks.plots import history_label

    runs = [run_record(run_id=f"20261206T20{i}000-{i}a0b1c2d", run_name="retrain-59eb880b-2026-12-06",
                       base_model=model) for i, model in enumerate(("gpt-4o-mini", "gpt-4.1-nano", "gpt-4o-mini"))]
    labels = [history_label(r) for r in runs]
    assert len(set(labels)) == 3 and labels[1] == "20261206T201000-1a0b1c2d\ngpt-4.1-nano"

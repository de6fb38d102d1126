from __future__ import annotations

import json
from collections import Counter

import pytest
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from typer.testing import CliRunner

from flows.prepare import prepare
from ftflow.cli import app
from ftflow.errors import BudgetExceeded, QualityGateFailed, ShardFailed
from tests.conftest import ROOT, chat, write_jsonl

pytestmark = pytest.mark.flow


def messy_sources(tmp_path):
    good = [chat(f"Frage {i}: Wo ist Bestellung {i}?", f"Antwort {i}", system="LANG") for i in range(30)]
    chat_file = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            *good,
            good[0],
            "{broken",
            {"messages": [{"role": "user", "content": "nur Frage"}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<|endoftext|>"}]},
        ],
    )
    (tmp_path / "t.txt").write_text("Human: Hallo, meine Mail ist a@b.de\nAssistant: Servus!\n---\nkein Sprecher\n")
    (tmp_path / "m.csv").write_text(
        "conversation_id,turn,role,content\nc1,1,USER,Hi\nc1,2,ASSISTANT,Hallo\n,1,USER,lost\n"
    )
    return [str(chat_file), str(tmp_path / "*.txt"), str(tmp_path / "m.csv")]


def test_prepare_accounts_for_every_record(prefect_server, tmp_path):
    out = tmp_path / "out"
    report = prepare(messy_sources(tmp_path), out_dir=str(out), overrides={"system_prompt": "kurz"})
    written = report["examples_written"]
    assert report["records_read"] == 30 + 4 + 2 + 2
    assert (
        report["records_read"]
        == written["train"] + written["validation"] + sum(report["rejected"].values()) + report["duplicates_removed"]
    )
    assert report["rejected"] == {
        "invalid_json": 1,
        "missing_conversation_id": 1,
        "no_assistant_message": 1,
        "special_token": 1,
        "unparseable_transcript": 1,
    }
    assert report["duplicates_removed"] == 1 and report["pii"] == {"email": 1}
    assert report["encoding"] == "o200k_base" and report["quality"]["success"] is True

    lines = lambda name: (out / name).read_text().splitlines()  # noqa: E731
    assert len(lines("train.jsonl")) == written["train"] and len(lines("validation.jsonl")) == written["validation"]
    assert len(lines("rejected.jsonl")) == 5 and len(lines("duplicates.jsonl")) == 1
    rejected = [json.loads(line) for line in lines("rejected.jsonl")]
    assert {(r["reason"], r["loc"]) for r in rejected} >= {
        ("invalid_json", "line 32"),
        ("missing_conversation_id", "row 4"),
    }
    train = [json.loads(line) for line in lines("train.jsonl")]
    assert all(ex["messages"][0] == {"role": "system", "content": "kurz"} for ex in train)
    assert json.loads((out / "report.json").read_text())["dataset_sha256"] == report["dataset_sha256"]
    assert (out / "quality.json").exists() and not (out / "work").exists()


def test_many_shards_in_worker_processes_give_the_same_dataset_as_one(prefect_server, tmp_path):
    sources = messy_sources(tmp_path)
    one = prepare.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(
        sources, out_dir=str(tmp_path / "a"), overrides={"work_dir": str(tmp_path / "w1")})
    many = prepare.with_options(task_runner=ProcessPoolTaskRunner(max_workers=2))(
        list(reversed(sources)), out_dir=str(tmp_path / "b"),
        overrides={"work_dir": str(tmp_path / "w2"), "shard_mb": 600 / 2**20})
    assert one["shards"]["total"] == 3 and many["shards"]["total"] > 8
    for key in ("dataset_sha256", "examples_written", "rejected", "rejected_by_stage", "duplicates_removed", "tokens"):
        assert one[key] == many[key], key
    for name in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert many["rejected_by_stage"] == {
        "extract": {"invalid_json": 1, "missing_conversation_id": 1, "unparseable_transcript": 1},
        "quality": {"no_assistant_message": 1, "special_token": 1},
    }


def prepare_on_worker_processes(tmp_path):
    """The messy sources in 600-byte shards on two worker processes; the flow run's final state."""
    from tasks.shards.runner import ShardProcessPool

    state = prepare.with_options(task_runner=ShardProcessPool(max_workers=2, shard_bytes=600))(
        messy_sources(tmp_path), out_dir=str(tmp_path / "out"),
        overrides={"work_dir": str(tmp_path / "w"), "shard_mb": 600 / 2**20},
        return_state=True)
    assert state.is_completed()
    return state


def task_of(run_name: str) -> str:
    """The task of a run: prepare-shard-0004-chat.jsonl-L17 -> prepare-shard, plan-shards-c2b -> plan-shards."""
    return "prepare-shard" if run_name.startswith("prepare-shard-") else run_name.rsplit("-", 1)[0]


STEPS = ("clear-outputs", "plan-shards", "fingerprint-inputs", "dedup-and-split", "moderate-examples",
         "check-provider-rules", "compute-totals", "method-figures", "check-quality", "estimate-budget", "write-report",
         "enforce-gates", "publish-dataset")


def read_recorded_task_runs(state, timeout: float = 30.0):
    """The flow run's task runs once the server has recorded one per shard and one per step.

    Task runs reach the server as events that it records in the background (those of worker
    processes from each worker), so right after the flow returns some may still be on their way.
    """
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    expected = Counter({"prepare-shard": state.result()["shards"]["total"], **dict.fromkeys(STEPS, 1)})
    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=flow_run)
            recorded = Counter(task_of(run.name) for run in runs)
            if recorded == expected or time.monotonic() > deadline:
                assert recorded == expected
                return runs
            time.sleep(0.2)


def test_the_graph_links_every_shard_to_the_steps_that_read_it_also_from_worker_processes(prefect_server, tmp_path):
    runs = read_recorded_task_runs(prepare_on_worker_processes(tmp_path))
    shard_ids = {run.id for run in runs if run.name.startswith("prepare-shard-")}
    assert len(shard_ids) > 8
    for step in ("dedup-and-split", "compute-totals", "write-report"):
        run, = [run for run in runs if run.name.startswith(step)]
        assert {upstream.id for upstream in run.task_inputs["results"]} == shard_ids, step
    # The inputs digest is made of the plan and the settings alone: no other step feeds it.
    names = {run.id: run.name for run in runs}
    fingerprint, = [run for run in runs if run.name.startswith("fingerprint-inputs")]
    upstream = {task_of(names[ref.id]) for refs in fingerprint.task_inputs.values() for ref in refs
                if getattr(ref, "id", None) in names}
    assert upstream == {"plan-shards"}
    publish, = [run for run in runs if run.name.startswith("publish-dataset")]
    assert "enforce-gates" in {task_of(names[ref.id]) for refs in publish.task_inputs.values()
                               for ref in refs if getattr(ref, "id", None) in names}


def test_each_shard_logs_what_it_read_and_whether_it_was_reused(prefect_server, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    def shard_logs() -> list[str]:
        state = prepare_on_worker_processes(tmp_path)
        shards = {run.id for run in read_recorded_task_runs(state) if run.name.startswith("prepare-shard-")}
        APILogWorker.drain_all(timeout=30)  # logs are sent in batches
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
        lines = [log.message for log in logs if log.task_run_id in shards and "records read" in log.message]
        assert len(lines) == len(shards) > 8  # one line per shard, from worker processes too
        return lines

    assert all(line.startswith("prepared: ") for line in shard_logs())
    assert all(line.startswith("stored result reused: ") for line in shard_logs())


def test_a_shard_that_fails_fails_the_run_by_name_and_publishes_nothing(prefect_server, tmp_path):
    sources = messy_sources(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    prepare(sources, out_dir=str(out), overrides={"work_dir": str(work)})
    (tmp_path / "m.csv").write_text("id,text\n1,x\n")  # now the CSV shard cannot be read
    with pytest.raises(ShardFailed, match="m.csv.*missing column"):
        prepare(sources, out_dir=str(out), overrides={"work_dir": str(work)})
    assert not list(out.iterdir())  # the earlier run's files are gone, nothing stale looks finished
    assert all((p / "result.json").exists() for p in (work / "shards").iterdir())  # complete shards only


def test_quality_gate_stops_the_flow_but_writes_the_report(prefect_server, tmp_path):
    path = write_jsonl(tmp_path / "few.jsonl", [chat(f"q{i}", f"a{i}") for i in range(5)])
    with pytest.raises(QualityGateFailed, match="train_examples"):
        prepare([str(path)], out_dir=str(tmp_path / "out"), overrides={"validation_fraction": 0.0})
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["gate"]["passed"] is False and report["quality"]["success"] is False
    assert not (tmp_path / "out" / "train.jsonl").exists() and not (tmp_path / "out" / ".staged").exists()


def test_budget_gate(prefect_server, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [chat(f"q{i}", f"a{i}") for i in range(20)])
    with pytest.raises(BudgetExceeded, match="over the budget"):
        prepare([str(path)], out_dir=str(tmp_path / "out"), overrides={"max_cost_usd": 0.0})


def test_cli_on_the_bundled_samples_and_its_exit_codes(prefect_server, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(ROOT / "data/raw/*"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["examples_written"]["train"] > 300 and len(report["rejected"]) >= 8
    assert set(report["sources"]) >= {str(ROOT / "data/raw/messages.csv"), str(ROOT / "data/raw/sharegpt.json")}

    failing = runner.invoke(
        app, ["prepare", str(ROOT / "data/raw/*"), "--out", str(tmp_path / "f"), "--max-cost-usd", "0.01"]
    )
    assert failing.exit_code == 3
    assert "over the budget of $0.01" in failing.output
    failed = tmp_path / "f"  # the report and the rejections, never a trainable folder
    assert (failed / "report.json").exists() and (failed / "rejected.jsonl").exists()
    assert not (failed / "train.jsonl").exists() and not (failed / "validation.jsonl").exists()
    missing = runner.invoke(app, ["prepare", str(tmp_path / "nothing*.jsonl"), "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    bad_format = runner.invoke(app, ["prepare", str(ROOT / "data/raw/*"), "--format", "xml"])
    assert bad_format.exit_code == 2 and "format (from --format): Input should be" in bad_format.output


def test_nested_and_sql_options_reach_the_flow(prefect_server, tmp_path):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE msg (cid TEXT, n INT, who TEXT, body TEXT)"))
        for i in range(12):
            conn.execute(
                sa.text("INSERT INTO msg VALUES (:c, 1, 'KUNDE', :q), (:c, 2, 'BOT', :a)"),
                {"c": f"c{i}", "q": f"Frage {i}", "a": f"Antwort {i}"},
            )
    report = prepare(
        [],
        out_dir=str(tmp_path / "out"),
        sql_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        query="SELECT * FROM msg",
        overrides={"id_column": "cid", "order_column": "n", "role_column": "who", "content_column": "body",
                   "role_map": {"KUNDE": "user", "BOT": "assistant"}, "validation_fraction": 0.0},
    )
    assert report["examples_written"] == {"train": 12, "validation": 0} and not report["rejected"]

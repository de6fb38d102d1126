"""Screenshots of what the operator sees in the default Prefect UI, for docs/img/ and the README.

Starts a Prefect server on a free port (state in a temporary folder), deploys prefect.yaml,
starts a process worker, runs the `retrain` deployment once, then photographs with headless
Chromium (Debian's `chromium`, driven by Playwright):
the run page, the Task Runs tab, the summary and loss-plot artifacts, the deployments page;
then retrain's prepare subflow: its run page (its tasks, which retrain's graph folds), the Task
inputs tab of its method-figures task, its moderation table and its report.
It fails when the browser console reports "Invalid TaskInputResponse", a Task Runs tab says
"No task runs", or the prepare subflow lacks one of its tasks (method-figures among them).

`--dpo` also runs `ftflow prepare` on the DPO sample (data/preference/*) against the same server,
as an operator would from a shell, and photographs that run (dpo-run.png, dpo-task-runs.png,
dpo-quality.png: the `preference` suite); docs/img holds none of them (leave --dpo off there).

    apt-get install -y chromium && .venv/bin/pip install -e ".[ui]"
    .venv/bin/python bench/ui_screenshots.py [--out docs/img] [--chromium /usr/bin/chromium] [--dpo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.ui.stack import PrefectStack  # noqa: E402


def artifact_ids(stack: PrefectStack, flow_run_id: object) -> dict[str, str]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with stack.client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: str(a.id) for a in found}


# The tasks every prepare run shows in its graph and Task Runs tab (one prepare-shard per shard).
PREPARE_TASKS = ("clear-outputs", "plan-shards", "fingerprint-inputs", "prepare-shard", "dedup-and-split",
                 "moderate-examples", "check-provider-rules", "compute-totals", "method-figures", "check-quality",
                 "estimate-budget", "write-report", "enforce-gates", "publish-dataset")


def prepare_subflow(stack: PrefectStack, run: object) -> object:
    """Return retrain's prepare flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with stack.client() as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
        return next(child for child in children if client.read_flow(child.flow_id).name == "prepare")


def task_run_ids(stack: PrefectStack, flow_run_id: object) -> dict[str, str]:
    """Return this flow run's task runs: name -> id."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stack.client() as client:
        found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                      limit=200)
    return {t.name: str(t.id) for t in found}


def missing_tasks(names: dict[str, str]) -> list[str]:
    """Return the prepare tasks without a task run among these."""
    return [task for task in PREPARE_TASKS if not any(name.startswith(f"{task}-") for name in names)]


def photograph(stack: PrefectStack, run: object, out: Path, chromium: str, dpo: object = None) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    artifacts = artifact_ids(stack, run.id)
    prepare = prepare_subflow(stack, run)
    prepare_artifacts = artifact_ids(stack, prepare.id)
    prepare_tasks = task_run_ids(stack, prepare.id)
    problems += [f"retrain's prepare run {prepare.name} has no {task} task run"
                 for task in missing_tasks(prepare_tasks)]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("response", lambda response: response.status >= 400 and console.append(
            f"error: HTTP {response.status} {response.request.method} {response.url}"))

        def shoot(url: str, name: str, height: int = 1000, width: int = 1400, settle: float = 5.0) -> None:
            page.set_viewport_size({"width": width, "height": height})
            page.goto(url)
            page.wait_for_load_state("networkidle")
            time.sleep(settle)
            page.screenshot(path=str(out / name))
            print(f"wrote {out / name}")

        shoot(f"{stack.ui_url}/runs/flow-run/{run.id}", "run.png")
        def task_runs_tab(name: str) -> None:
            page.get_by_text("Task Runs", exact=True).first.click()
            time.sleep(4)
            page.screenshot(path=str(out / name))
            print(f"wrote {out / name}")
            if page.get_by_text("No task runs").count():
                problems.append(f"the Task Runs tab says 'No task runs' ({name})")

        task_runs_tab("task-runs.png")
        shoot(f"{stack.ui_url}/artifacts/artifact/{artifacts['ftflow-summary']}", "summary.png", height=2900)
        shoot(f"{stack.ui_url}/artifacts/artifact/{artifacts['ftflow-plot-loss']}", "loss-plot.png", height=700)
        # wide enough for the schedule's text ("At 03:00 AM, only on Monday (Europe/Vienna)"), not "+1"
        shoot(f"{stack.ui_url}/deployments", "deployments.png", height=600, width=1900)
        # the prepare subflow on its own page: the graph shows its tasks, which retrain's keeps folded
        shoot(f"{stack.ui_url}/runs/flow-run/{prepare.id}", "prepare-run.png")
        for key, name, height in (("ftflow-moderation", "moderation.png", 500),
                                  ("ftflow-prepare-report", "prepare-report.png", 1400)):
            if key in prepare_artifacts:
                shoot(f"{stack.ui_url}/artifacts/artifact/{prepare_artifacts[key]}", name, height=height)
            else:
                problems.append(f"retrain's prepare run has no {key} artifact")
        # the task the prepare body gained last; its "Task inputs" tab shows what the UI reads of its inputs
        figures = next((i for name, i in prepare_tasks.items() if name.startswith("method-figures-")), None)
        if figures:
            page.set_viewport_size({"width": 1400, "height": 700})
            page.goto(f"{stack.ui_url}/runs/task-run/{figures}")
            page.wait_for_load_state("networkidle")
            page.get_by_text("Task inputs", exact=True).first.click()
            time.sleep(4)
            page.screenshot(path=str(out / "method-figures.png"))
            print(f"wrote {out / 'method-figures.png'}")
        if dpo is not None:
            shoot(f"{stack.ui_url}/runs/flow-run/{dpo.id}", "dpo-run.png")
            task_runs_tab("dpo-task-runs.png")
            quality = artifact_ids(stack, dpo.id).get("ftflow-data-quality")
            if quality:
                shoot(f"{stack.ui_url}/artifacts/artifact/{quality}", "dpo-quality.png", height=1800)
            else:
                problems.append("the DPO prepare run has no ftflow-data-quality artifact")
        browser.close()
    for text in sorted({text for text in console if text.startswith(("error", "warning"))}):
        print(f"browser console: {text[:300]}")
    problems += sorted({f"browser console: {text}" for text in console if "Invalid" in text})
    return problems


def prepare_dpo(stack: PrefectStack, folder: Path, env: dict[str, str]) -> object:
    """Run `ftflow prepare` on the DPO sample against the stack's server; return its flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId
    from prefect.client.schemas.sorting import FlowRunSort

    env = {**stack.env, **env, "FTFLOW_METHOD": "dpo", "FTFLOW_MODEL": "gpt-4.1-mini-2025-04-14",
           "FTFLOW_WORK_DIR": str(folder / "work-dpo")}
    done = subprocess.run([str(Path(sys.executable).parent / "ftflow"), "prepare", "data/preference/*",
                           "--out", str(folder / "dpo")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    print(done.stdout[-1500:])
    if done.returncode:
        raise RuntimeError(f"ftflow prepare (dpo) failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with stack.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True)),
            sort=FlowRunSort.START_TIME_DESC, limit=5)
        return next(r for r in runs if client.read_flow(r.flow_id).name == "prepare")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--dpo", action="store_true", help="also photograph `ftflow prepare` on the DPO sample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ftflow-ui-") as tmp:
        folder = Path(tmp)
        worker_env = {"FTFLOW_REGISTRY_URL": f"sqlite:///{folder / 'registry.sqlite3'}",
                      "FTFLOW_SERVICE_DATA_DIR": str(folder / "service"), "FTFLOW_RUNS_DIR": str(folder / "runs"),
                      # shards prepared afresh, as in a new checkout (not reused from .ftflow/work)
                      "FTFLOW_WORK_DIR": str(folder / "work")}
        with PrefectStack(folder, worker_env=worker_env) as stack:
            print(f"Prefect server at {stack.ui_url}; deploying prefect.yaml and running retrain/retrain")
            stack.deploy()
            stack.start_worker()
            run = stack.run("retrain/retrain")  # prefect.yaml's parameters; settings from the worker's env
            print(f"flow run {run.name}: {run.state.name}")
            dpo = prepare_dpo(stack, folder, worker_env) if args.dpo else None
            problems = photograph(stack, run, args.out, args.chromium, dpo)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

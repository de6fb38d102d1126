"""Screenshots of what the operator sees in the default Prefect UI, for docs/img/ and the README.

Starts a Prefect server on a free port (state in a temporary folder), deploys prefect.yaml,
starts a process worker, runs the `retrain` deployment once, then photographs with headless
Chromium (Debian's `chromium`, driven by Playwright):
the run page, the Task Runs tab, the summary and loss-plot artifacts, the deployments page.
It fails when the browser console reports "Invalid TaskInputResponse" or the Task Runs tab
says "No task runs".

    apt-get install -y chromium && .venv/bin/pip install -e ".[ui]"
    .venv/bin/python bench/ui_screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
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


def photograph(stack: PrefectStack, run: object, out: Path, chromium: str) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    artifacts = artifact_ids(stack, run.id)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))

        def shoot(url: str, name: str, height: int = 1000, width: int = 1400, settle: float = 5.0) -> None:
            page.set_viewport_size({"width": width, "height": height})
            page.goto(url)
            page.wait_for_load_state("networkidle")
            time.sleep(settle)
            page.screenshot(path=str(out / name))
            print(f"wrote {out / name}")

        shoot(f"{stack.ui_url}/runs/flow-run/{run.id}", "run.png")
        page.get_by_text("Task Runs", exact=True).first.click()
        time.sleep(4)
        page.screenshot(path=str(out / "task-runs.png"))
        print(f"wrote {out / 'task-runs.png'}")
        if page.get_by_text("No task runs").count():
            problems.append("the Task Runs tab says 'No task runs'")
        shoot(f"{stack.ui_url}/artifacts/artifact/{artifacts['ftflow-summary']}", "summary.png", height=2900)
        shoot(f"{stack.ui_url}/artifacts/artifact/{artifacts['ftflow-plot-loss']}", "loss-plot.png", height=700)
        # wide enough for the schedule's text ("At 03:00 AM, only on Monday (Europe/Vienna)"), not "+1"
        shoot(f"{stack.ui_url}/deployments", "deployments.png", height=600, width=1900)
        browser.close()
    problems += sorted({f"browser console: {text}" for text in console if "Invalid" in text})
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ftflow-ui-") as tmp:
        folder = Path(tmp)
        worker_env = {"FTFLOW_REGISTRY_URL": f"sqlite:///{folder / 'registry.sqlite3'}",
                      "FTFLOW_SERVICE_DATA_DIR": str(folder / "service"), "FTFLOW_RUNS_DIR": str(folder / "runs")}
        with PrefectStack(folder, worker_env=worker_env) as stack:
            print(f"Prefect server at {stack.ui_url}; deploying prefect.yaml and running retrain/retrain")
            stack.deploy()
            stack.start_worker()
            run = stack.run("retrain/retrain")  # prefect.yaml's parameters; settings from the worker's env
            print(f"flow run {run.name}: {run.state.name}")
            problems = photograph(stack, run, args.out, args.chromium)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

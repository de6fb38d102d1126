"""Kill the service (SIGKILL) in the middle of a job; start it again; the job finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from localai.server import free_port
from tests.conftest import ROOT, training_bytes, wait_for_job

pytestmark = pytest.mark.service


def start(port: int, data_dir, env) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "localai", "--port", str(port), "--data-dir", str(data_dir)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_admin/health", headers={"Authorization": f"Bearer {env['FTFLOW_SERVICE_API_KEY']}"}).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(process.stdout.read().decode())


def test_a_running_job_survives_a_kill_and_restart(tmp_path):
    port = free_port()
    env = {**os.environ, "FTFLOW_SERVICE_API_KEY": "sk-restart-test-key", "FTFLOW_SERVICE_SECONDS_PER_1K_TOKENS": "2.0",
           "FTFLOW_SERVICE_TICK_SECONDS": "0.05"}
    process = start(port, tmp_path / "svc", env)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=env["FTFLOW_SERVICE_API_KEY"], max_retries=0)
    try:
        file = client.files.create(file=("t.jsonl", training_bytes(n=30)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
        wait_for_job(client, job.id, statuses=("running",))
        time.sleep(0.5)
        steps_before = len(client.fine_tuning.jobs.list_events(job.id, limit=1000).data)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    process = start(port, tmp_path / "svc", env)
    try:
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        done = wait_for_job(client, job.id, timeout=60)
        assert done.status == "succeeded" and done.fine_tuned_model
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        assert len(events) > steps_before
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert len(steps) == len(set(steps)), "a step was reported twice across the restart"
    finally:
        process.terminate()
        process.wait(timeout=10)

"""The local service in a process of its own (localai/process.py), and when the pipeline uses it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import openai
import pytest

import ftflow.client
from ftflow.client import SERVICE_PROCESS_TEXTS, expect_local_requests, local_service
from ftflow.settings import Settings
from localai.config import ServiceConfig
from localai.process import ServiceProcess
from localai.server import LocalService
from tests.conftest import FAST, ROOT

pytestmark = pytest.mark.service


def child_of(parent: int) -> int:
    """The one `localai.process` child of `parent`, from /proc."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if ppid == parent and b"localai.process" in command:
                return int(entry.name)
    raise AssertionError(f"no service process below {parent}")


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_the_service_process_answers_the_sdk_and_never_shows_its_key(tmp_path):
    service = ServiceProcess(ServiceConfig(data_dir=tmp_path / "service", **FAST))
    try:
        client = openai.OpenAI(base_url=service.base_url, api_key=service.api_key, max_retries=0)
        answer = client.moderations.create(model="omni-moderation-latest", input=["I will kill you.", "Danke!"])
        assert [result.flagged for result in answer.results] == [True, False]
        child = service.pid
        shown = Path(f"/proc/{child}/cmdline").read_bytes() + Path(f"/proc/{child}/environ").read_bytes()
        assert service.api_key.encode() not in shown
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=service.base_url, api_key="sk-wrong", max_retries=0).models.list()
    finally:
        service.stop()
    assert gone(child)


def test_the_service_process_ends_with_its_parent_even_when_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from localai.config import ServiceConfig
        from localai.process import ServiceProcess
        service = ServiceProcess(ServiceConfig(data_dir={str(tmp_path / "service")!r}))
        print(service.base_url, flush=True)
        time.sleep(600)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().startswith("http://127.0.0.1:")
        child = child_of(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert gone(child), "the service process outlived its killed parent"
    finally:
        parent.kill()


def test_a_service_process_that_cannot_start_says_so(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    service = ServiceProcess(ServiceConfig(data_dir=blocker / "service"))
    with pytest.raises(RuntimeError, match=r"the local service did not start \(exit code 1"):
        service.wait_started()


def test_much_to_screen_starts_the_local_service_in_a_process_of_its_own(tmp_path, monkeypatch):
    settings = Settings(service_data_dir=tmp_path / "service")
    monkeypatch.setattr(ftflow.client, "_local_service", None)
    expect_local_requests(settings, SERVICE_PROCESS_TEXTS - 1)  # too little: the thread stays cheaper
    assert ftflow.client._local_service is None
    expect_local_requests(Settings(backend="openai"), SERVICE_PROCESS_TEXTS)  # another backend: nothing to start
    assert ftflow.client._local_service is None

    expect_local_requests(settings, SERVICE_PROCESS_TEXTS)
    service = local_service(settings)
    try:
        assert isinstance(service, ServiceProcess)
        assert service.base_url.startswith("http://127.0.0.1:")
        expect_local_requests(settings, 10 * SERVICE_PROCESS_TEXTS)  # started already: kept
        assert local_service(settings) is service
    finally:
        service.stop()


def test_little_to_screen_keeps_the_local_service_on_a_thread(tmp_path, monkeypatch):
    settings = Settings(service_data_dir=tmp_path / "service")
    monkeypatch.setattr(ftflow.client, "_local_service", None)
    expect_local_requests(settings, 20)
    service = local_service(settings)
    try:
        assert isinstance(service, LocalService)
    finally:
        service.stop()

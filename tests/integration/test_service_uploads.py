"""Uploads stream to disk: a file over the limit is refused without the service buffering it.

The service runs as a real subprocess; its peak resident memory (VmHWM in /proc) is read
after a 600 MB upload (the default limit is 512 MB). Before streaming, such an upload took
the service from 146 MB to 766 MB.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from localai.server import free_port
from tests.conftest import ROOT, training_bytes

pytestmark = pytest.mark.service
KEY = "sk-upload-test-key"
MB = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def service_process(tmp_path_factory):
    """`python -m localai` on a free port, its key from the environment; (base_url, process, stdout)."""
    port, data_dir = free_port(), tmp_path_factory.mktemp("uploads")
    env = {**os.environ, "FTFLOW_SERVICE_API_KEY": KEY}
    log = open(data_dir / "stdout.log", "w+b")
    process = subprocess.Popen([sys.executable, "-m", "localai", "--port", str(port), "--data-dir", str(data_dir)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/_admin/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                break
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, (data_dir / "stdout.log").read_text()
            time.sleep(0.1)
    yield base_url, process, data_dir / "stdout.log"
    process.terminate()
    process.wait(timeout=10)
    log.close()


def upload(port: int, path: Path) -> tuple[int, dict]:
    """POST /v1/files with the file sent by the kernel (sendfile): the client holds none of it,
    and the test spends its time in the service, not in a Python HTTP client."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    request = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock, open(path, "rb") as f:
        sock.sendall(request.encode() + head)
        sock.sendfile(f)
        sock.sendall(tail)
        response = b""
        while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < content_length(response):
            response += sock.recv(65536)
    status = int(response.split(b" ", 2)[1])
    return status, json.loads(response.partition(b"\r\n\r\n")[2])


def content_length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def test_a_600_mb_upload_is_refused_without_buffering(service_process, tmp_path):
    base_url, process, _ = service_process
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate(600 * MB)  # sparse: no disk used, 600 MB read back
    before = peak_rss_mb(process.pid)
    port = int(base_url.rsplit(":", 1)[1])
    status, body = upload(port, big)
    peak = peak_rss_mb(process.pid)
    assert status == 400, body
    assert body["error"]["code"] == "file_too_large" and body["error"]["param"] == "file"
    assert peak < 300, f"service peaked at {peak:.0f} MiB (was {before:.0f} MiB before the uploads)"
    data_dir = Path(service_process[2]).parent
    assert not list((data_dir / "blobs").glob("incoming-*")), "a refused upload left its partial file behind"
    # the connection is still usable, and a normal upload after them works
    ok = httpx.post(f"{base_url}/v1/files", headers={"Authorization": f"Bearer {KEY}"},
                    files={"file": ("t.jsonl", training_bytes())}, data={"purpose": "fine-tune"})
    assert ok.status_code == 200 and ok.json()["status"] == "processed"


def test_a_key_from_the_environment_is_never_printed(service_process):
    _, _, stdout = service_process
    printed = stdout.read_text()
    assert "127.0.0.1" in printed and KEY not in printed


@pytest.mark.parametrize("form", [
    {"files": {"file": ("n" * 5000 + ".jsonl", b"{}\n")}, "data": {"purpose": "fine-tune"}},
    {"files": {"file": ("t.jsonl", b"{}\n")}, "data": {"purpose": "fine-tune", "f" * 5000: "x"}},
], ids=["file-name", "field-name"])
def test_an_oversized_part_header_is_a_400_in_the_error_envelope_never_a_retried_500(service_process, form):
    """python-multipart's "Maximum header size exceeded" (a part header over 4 KiB) was a 500,
    which the SDKs retry."""
    import openai

    base_url, _, _ = service_process
    raw = httpx.post(f"{base_url}/v1/files", headers={"Authorization": f"Bearer {KEY}"}, **form)
    assert raw.status_code == 400, raw.text
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error" and "Maximum header size exceeded" in error["message"]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=2)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=form["files"]["file"], purpose="fine-tune", extra_body=form["data"])
    assert refused.value.status_code == 400
    assert not list((Path(service_process[2]).parent / "blobs").glob("incoming-*"))


def test_a_killed_upload_leaves_no_incoming_blob_after_a_restart(tmp_path):
    """The service killed mid-upload (12 MiB) left its `incoming-*` blob for good."""
    port, data_dir = free_port(), tmp_path / "svc"
    env = {**os.environ, "FTFLOW_SERVICE_API_KEY": KEY}

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "localai", "--port", str(port), "--data-dir", str(data_dir)],
                                   cwd=ROOT, env=env, stdout=open(tmp_path / "log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_admin/health", headers={"Authorization": f"Bearer {KEY}"})
                return process
            except httpx.TransportError:
                time.sleep(0.1)
        process.kill()
        raise AssertionError("the service did not start")

    service = start()
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n').encode()
    request = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(head) + 12 * MB}\r\n\r\n")
    blobs = data_dir / "blobs"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request.encode() + head + b"x" * (6 * MB))  # half of it, then the service dies
            deadline = time.monotonic() + 30
            while not (incoming := list(blobs.glob("incoming-*"))) or incoming[0].stat().st_size < MB:
                assert time.monotonic() < deadline, "the upload never reached the disk"
                time.sleep(0.05)
            service.kill()
            service.wait()
    finally:
        service.kill()
    assert list(blobs.glob("incoming-*")), "the killed upload left nothing to clean"
    service = start()
    try:
        assert not list(blobs.glob("incoming-*"))
        ok = httpx.post(f"http://127.0.0.1:{port}/v1/files", headers={"Authorization": f"Bearer {KEY}"},
                        files={"file": ("t.jsonl", training_bytes())}, data={"purpose": "fine-tune"})
        assert ok.status_code == 200
    finally:
        service.terminate()
        service.wait(timeout=10)

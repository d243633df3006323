"""The capture server's and the SMTP sink's command lines, as the backup's bats and pytest suites run them."""
from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Tests" / "fixtures"


def start(script: str, args: list[str], directory: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, str(FIXTURES / script), *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (directory / "port").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no port file"
        time.sleep(0.05)
    return process, int((directory / "port").read_text())


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_capture_server_cli_records_requests_and_injects_faults(tmp_path):
    process, port = start("capture_server.py", ["--port", "0", "--dir", str(tmp_path), "--fail", "/boom=1",
                                                "--status", "/gone=404", "--hang", "/slow"], tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(f"{base}/hook/a?x=1", data=b'{"k":1}', method="POST",
                                         headers={"X-Test": "yes", "Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        for path, code in [("/boom", 500), ("/gone/x", 404)]:
            try:
                urllib.request.urlopen(base + path, timeout=5)
                raise AssertionError(f"{path} answered 2xx")
            except urllib.error.HTTPError as error:
                assert error.code == code
        assert urllib.request.urlopen(base + "/boom", timeout=5).status == 200  # failed only once
        try:
            urllib.request.urlopen(base + "/slow", timeout=1)
            raise AssertionError("/slow answered")
        except (TimeoutError, urllib.error.URLError):
            pass
    finally:
        stop(process)
    entries = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [(e["method"], e["path"]) for e in entries] == [
        ("POST", "/hook/a"), ("GET", "/boom"), ("GET", "/gone/x"), ("GET", "/boom"), ("GET", "/slow")]
    assert entries[0]["query"] == "x=1" and entries[0]["body"] == '{"k":1}' and entries[0]["headers"]["x-test"] == "yes"


def test_smtp_sink_cli_writes_each_message(tmp_path):
    process, port = start("smtp_sink.py", ["--dir", str(tmp_path), "--port", "0"], tmp_path)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nbody\r\n")
    finally:
        stop(process)
    [message] = [json.loads(p.read_text()) for p in sorted((tmp_path / "messages").glob("*.json"))]
    assert message["mail_from"] == "a@example.com" and message["rcpt_tos"] == ["b@example.com"]
    assert "Subject: hi" in message["data"] and message["tls"] is False
    assert (tmp_path / "messages" / "0001.eml").read_bytes().startswith(b"Subject: hi")

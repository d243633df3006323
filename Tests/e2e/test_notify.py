"""notify end to end: the release binary against a loopback capture HTTP server (standing in for Slack,
a webhook receiver, a Pushgateway and healthchecks.io) and an aiosmtpd sink, asserting exact payloads
for the success, partial and failure sample manifests, isolation of failing and hanging channels,
--strict, STARTTLS with AUTH, --dry-run and redaction."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Tests" / "fixtures"))
from capture_server import CaptureServer  # noqa: E402
from smtp_sink import SmtpSink  # noqa: E402

MANIFESTS = ROOT / "Tests" / "fixtures" / "manifests"
SLACK_TOKEN = "T0KDL/B0KDL/xoxbSlackToken1234"
HOOK_TOKEN = "hookToken5678"
PING_UUID = "6f1c2d3e-1111-4000-8000-deadbeefcafe"
WEBHOOK_SECRET = "kdl-webhook-signing-secret"
SMTP_PASSWORD = "smtp-pass-9876"
SECRETS = ["xoxbSlackToken1234", HOOK_TOKEN, PING_UUID, WEBHOOK_SECRET, SMTP_PASSWORD]


@pytest.fixture
def notify_bin(request) -> Path:
    try:
        directory = Path(request.getfixturevalue("bin_dir"))
    except pytest.FixtureLookupError:
        directory = Path(os.environ.get("KDL_BIN_DIR", ROOT / ".build" / "release"))
    binary = directory / "notify"
    if not binary.exists():
        pytest.fail(f"notify is not built at {binary} (set KDL_BIN_DIR)")
    return binary


@pytest.fixture
def http(tmp_path):
    with CaptureServer(tmp_path / "http") as server:
        yield server


@pytest.fixture
def smtp(tmp_path):
    with SmtpSink(tmp_path / "smtp") as sink:
        yield sink


def channels_env(http: CaptureServer, smtp: SmtpSink | None) -> dict:
    env = {
        "NOTIFY_SLACK_WEBHOOK_URL": f"{http.url}/slack/{SLACK_TOKEN}",
        "NOTIFY_WEBHOOK_URL": f"{http.url}/hook?token={HOOK_TOKEN}",
        "NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "NOTIFY_PUSHGATEWAY_URL": f"{http.url}/pgw",
        "NOTIFY_HEALTHCHECK_URL": f"{http.url}/ping/{PING_UUID}",
        "NOTIFY_RETRIES": "1",
        "NOTIFY_TIMEOUT_SECONDS": "5",
    }
    if smtp:
        env.update({
            "NOTIFY_SMTP_URL": smtp.url,
            "NOTIFY_MAIL_FROM": "kdl-backup@kdl.example.com",
            "NOTIFY_MAIL_TO": "ops@example.com, data-team@example.com",
        })
    return env


def run(binary: Path, args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([str(binary), *args], env=full_env, capture_output=True, text=True, timeout=timeout)


def load(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def component_bytes(component: dict) -> int:
    return sum(o["bytes"] for o in component["objects"])


# -- what each channel must have received, derived here from the manifest independently of the Swift code

def expected_webhook(manifest: dict, log_tail: list[str]) -> dict:
    from datetime import datetime

    def ts(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    started, finished = ts(manifest["startedAt"]), ts(manifest["finishedAt"])
    failed = [c["name"] for c in manifest["components"] if c["status"] == "failure"]
    attempted = [c for c in manifest["components"] if c["status"] != "skipped"]
    status = manifest["status"]
    summary = {
        "success": f"KDL backup {manifest['id']} succeeded",
        "partial": f"KDL backup {manifest['id']} partially failed ({len(failed)} of {len(attempted)} components failed)",
        "failure": f"KDL backup {manifest['id']} failed",
    }[status]
    return {
        "schema": "kdl-backup/notification/v1",
        "event": "finish",
        "status": status,
        "backupId": manifest["id"],
        "summary": summary,
        "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finishedAt": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "durationSeconds": (finished - started).total_seconds(),
        "totalBytes": sum(component_bytes(c) for c in manifest["components"]),
        "encrypted": manifest["encryption"] is not None,
        "location": f"s3://kdl-backups/kdl-backup/{manifest['id']}/",
        "components": [
            {"name": c["name"], "status": c["status"], "seconds": c["seconds"], "bytes": component_bytes(c),
             "objects": len(c["objects"]), "error": c.get("error")}
            for c in manifest["components"]
        ],
        "failedComponents": failed,
        "logTail": [] if status == "success" else log_tail,
        "notifier": {"name": "notify", "version": "0.1.0"},
    }


def metrics(body: str) -> dict:
    """{(name, component or None): value}, through prometheus_client's own text parser."""
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("component"))] = sample.value
    return out


@pytest.mark.parametrize("name", ["success", "partial", "failure"])
def test_finish_delivers_exact_payloads_on_every_channel(notify_bin, http, smtp, tmp_path, name):
    manifest = load(name)
    log = tmp_path / "backup.log"
    log.write_text("".join(f"ts=2025-01-07T02:00:{i:02d}Z level=info step={i}\n" for i in range(60)))
    log_tail = [f"ts=2025-01-07T02:00:{i:02d}Z level=info step={i}" for i in range(50, 60)]
    env = channels_env(http, smtp) | {"BACKUP_S3_BUCKET": "kdl-backups"}

    result = run(notify_bin, ["--event", "finish", "--status", manifest["status"], "--manifest", str(MANIFESTS / f"{name}.json"),
                              "--log-tail", str(log), "--log-tail-lines", "10"], env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    problem = name != "success"
    expected_channels = (["slack", "webhook", "email"] if problem else ["webhook"]) + ["pushgateway", "healthcheck"]
    assert [d["channel"] for d in summary["deliveries"]] == expected_channels
    assert all(d["delivered"] for d in summary["deliveries"]), summary

    # Webhook: the documented v1 body, signed over its exact bytes.
    [hook] = http.requests("/hook")
    assert hook["method"] == "POST" and hook["query"] == f"token={HOOK_TOKEN}"
    assert hook["headers"]["content-type"] == "application/json"
    assert hook["headers"]["x-kdl-backup-event"] == "finish"
    assert json.loads(hook["body"]) == expected_webhook(manifest, log_tail)
    digest = hmac.new(WEBHOOK_SECRET.encode(), hook["body"].encode(), hashlib.sha256).hexdigest()
    assert hook["headers"]["x-kdl-backup-signature"] == f"sha256={digest}"

    # Pushgateway: POST (keeps the last success on failures), parsed by prometheus_client.
    [push] = http.requests("/pgw")
    assert (push["method"], push["path"]) == ("POST", "/pgw/metrics/job/kdl_backup")
    assert push["headers"]["content-type"].startswith("text/plain; version=0.0.4")
    for metric in ["kdl_backup_last_run_timestamp_seconds", "kdl_backup_duration_seconds", "kdl_backup_status",
                   "kdl_backup_size_bytes", "kdl_backup_component_success"]:
        assert f"# HELP {metric} " in push["body"] and f"# TYPE {metric} gauge" in push["body"]
    values = metrics(push["body"])
    webhook = expected_webhook(manifest, [])
    finished = __import__("datetime").datetime.fromisoformat(manifest["finishedAt"].replace("Z", "+00:00")).timestamp()
    expected = {
        ("kdl_backup_last_run_timestamp_seconds", None): round(finished, 3),
        ("kdl_backup_duration_seconds", None): webhook["durationSeconds"],
        ("kdl_backup_status", None): {"success": 1.0, "partial": 0.5, "failure": 0.0}[name],
    }
    if name == "success":
        expected[("kdl_backup_last_success_timestamp_seconds", None)] = round(finished, 3)
    for c in manifest["components"]:
        if c["status"] != "skipped":
            expected[("kdl_backup_size_bytes", c["name"])] = float(component_bytes(c))
            expected[("kdl_backup_component_success", c["name"])] = 1.0 if c["status"] == "success" else 0.0
    assert values == expected

    # Dead-man's switch: the bare URL on success, /fail otherwise, with a readable report as body.
    [ping] = http.requests("/ping")
    assert ping["path"] == f"/ping/{PING_UUID}" + ("/fail" if problem else "")
    assert ping["body"].startswith(webhook["summary"] + "\n")

    # Slack and e-mail only hear about problems, failures first.
    slack = http.requests("/slack")
    mails = smtp.messages()
    if not problem:
        assert slack == [] and mails == []
        return
    [slack] = slack
    assert slack["path"] == f"/slack/{SLACK_TOKEN}"
    message = json.loads(slack["body"])
    assert message["text"] == webhook["summary"]
    order = {"failure": 0, "success": 1, "skipped": 2}
    by_status = sorted(manifest["components"], key=lambda c: order[c["status"]])
    colors = [a["color"] for a in message["attachments"]]
    component_colors = {"failure": "#d92d20", "success": "#2eb67d", "skipped": "#9e9e9e"}
    assert colors == [component_colors[c["status"]] for c in by_status] + ["#d92d20"]
    texts = [a["blocks"][0]["text"]["text"] for a in message["attachments"]]
    assert [t.split(":", 1)[0] for t in texts[:-1]] == [f"*{c['name']}*" for c in by_status]
    assert texts[-1] == "*Log tail*\n```\n" + "\n".join(log_tail) + "\n```"

    [mail] = mails
    assert mail["mail_from"] == "kdl-backup@kdl.example.com"
    assert mail["rcpt_tos"] == ["ops@example.com", "data-team@example.com"]
    parsed = message_from_bytes(mail["data"].encode("utf-8"))
    assert parsed["Subject"] == f"[kdl-backup] {name}: {webhook['summary']}"
    assert parsed["To"] == "ops@example.com, data-team@example.com"
    assert parsed.get_content_type() == "text/plain"
    text = parsed.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n")
    lines = text.split("\n")
    assert lines[0] == webhook["summary"]
    assert f"Backup id:   {manifest['id']}" in lines
    assert f"Location:    s3://kdl-backups/kdl-backup/{manifest['id']}/" in lines
    component_lines = [line.strip().split(":")[0] for line in lines if line.startswith("  ") and not line.startswith("    ")
                       and ": " in line and line.strip().split(":")[0] in {c["name"] for c in manifest["components"]}]
    assert component_lines == [c["name"] for c in by_status]
    for c in manifest["components"]:
        if c.get("error"):
            assert f"      error: {c['error']}" in lines
    assert lines[-12:-1] == ["Log tail (last 10 lines):"] + [f"  {line}" for line in log_tail]


def test_start_only_pings_start(notify_bin, http, smtp):
    result = run(notify_bin, ["--event", "start"], channels_env(http, smtp) | {"BACKUP_ID": "20250108T020000Z"})
    assert result.returncode == 0, result.stderr
    requests = http.requests()
    assert [(r["method"], r["path"]) for r in requests] == [("POST", f"/ping/{PING_UUID}/start")]
    assert smtp.messages() == []


def test_a_failing_and_a_hanging_channel_do_not_block_the_others(notify_bin, tmp_path, smtp):
    with CaptureServer(tmp_path / "faulty", fail={"/slack": None}, hang={"/hook"}) as http:
        env = channels_env(http, smtp) | {"NOTIFY_TIMEOUT_SECONDS": "2", "NOTIFY_RETRIES": "1"}
        args = ["--event", "finish", "--manifest", str(MANIFESTS / "partial.json")]
        started = time.monotonic()
        result = run(notify_bin, args, env)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        deliveries = {d["channel"]: d for d in json.loads(result.stdout)["deliveries"]}
        assert {c for c, d in deliveries.items() if d["delivered"]} == {"email", "pushgateway", "healthcheck"}
        assert deliveries["slack"]["attempts"] == 2 and deliveries["slack"]["error"] == "HTTP 500: fault injected"
        assert deliveries["webhook"]["attempts"] == 2 and "Timeout" in deliveries["webhook"]["error"]
        assert len(http.requests("/slack")) == 2 and len(http.requests("/hook")) == 2
        assert len(http.requests("/pgw")) == 1 and len(smtp.messages()) == 1
        # Each channel is bounded: two 2 s attempts plus at most 1 s of backoff, all channels in parallel.
        assert elapsed < 15, elapsed
        assert 'msg="notification not delivered" channel=slack' in result.stderr
        assert 'msg="notification not delivered" channel=webhook' in result.stderr

        strict = run(notify_bin, args + ["--strict"], env)
        assert strict.returncode == 69
        assert "notify: 2 channel(s) could not be notified: slack, webhook" in strict.stderr


def test_a_transient_500_is_retried_and_delivered(notify_bin, tmp_path):
    with CaptureServer(tmp_path / "flaky", fail={"/pgw": 1}) as http:
        env = {"NOTIFY_PUSHGATEWAY_URL": f"{http.url}/pgw", "NOTIFY_RETRIES": "2"}
        result = run(notify_bin, ["--event", "finish", "--manifest", str(MANIFESTS / "success.json"), "--strict"], env)
        assert result.returncode == 0, result.stderr
        [delivery] = json.loads(result.stdout)["deliveries"]
        assert delivery["delivered"] and delivery["attempts"] == 2
        assert 'msg=retrying channel=pushgateway' in result.stderr
        assert len(http.requests("/pgw")) == 2


def test_smtp_with_starttls_and_auth(notify_bin, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    with SmtpSink(tmp_path / "tls", starttls=(str(cert), str(key)), auth=("backup", SMTP_PASSWORD)) as sink:
        env = {"NOTIFY_SMTP_URL": sink.url, "NOTIFY_SMTP_USER": "backup", "NOTIFY_SMTP_PASSWORD": SMTP_PASSWORD,
               "NOTIFY_MAIL_FROM": "kdl-backup@kdl.example.com", "NOTIFY_MAIL_TO": "ops@example.com",
               "NOTIFY_CA_FILE": str(cert), "NOTIFY_RETRIES": "0"}
        result = run(notify_bin, ["--event", "finish", "--manifest", str(MANIFESTS / "failure.json"), "--strict"], env)
        assert result.returncode == 0, result.stderr
        [mail] = sink.messages()
        assert mail["tls"] is True and mail["auth_user"] == "backup"
        assert "Subject: [kdl-backup] failure: KDL backup 20250107T020000Z failed" in mail["data"]

        wrong = run(notify_bin, ["--event", "finish", "--manifest", str(MANIFESTS / "failure.json"), "--strict"],
                    env | {"NOTIFY_SMTP_PASSWORD": "wrong-password-000"})
        assert wrong.returncode == 69
        assert "wrong-password-000" not in wrong.stderr + wrong.stdout
        assert len(sink.messages()) == 1


def test_urls_and_secrets_never_reach_stderr_or_stdout(notify_bin, tmp_path, smtp):
    with CaptureServer(tmp_path / "down", fail={"/slack": None, "/hook": None, "/ping": None, "/pgw": None}) as http:
        env = channels_env(http, smtp) | {"NOTIFY_SMTP_URL": f"smtp://backup:{SMTP_PASSWORD}@127.0.0.1:1",
                                          "NOTIFY_RETRIES": "1"}
        result = run(notify_bin, ["--event", "finish", "--manifest", str(MANIFESTS / "failure.json")], env)
        assert result.returncode == 0
        output = result.stdout + result.stderr
        assert output.count("notification not delivered") == 5
        assert f"target={http.url}/[REDACTED]" in result.stderr
        for secret in SECRETS:
            assert secret not in output, secret

        dry = run(notify_bin, ["--event", "finish", "--manifest", str(MANIFESTS / "partial.json"), "--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert f"# slack: POST {http.url}/[REDACTED]" in dry.stdout
        assert "# pushgateway: POST" in dry.stdout and "kdl_backup_status 0.5" in dry.stdout
        assert "X-KDL-Backup-Signature: sha256=" in dry.stdout
        for secret in SECRETS:
            assert secret not in dry.stdout + dry.stderr, secret
    assert len(http.requests()) == 4 * 2  # the dry run sent nothing more


def test_verify_reports_its_metrics_and_pings_its_own_check(notify_bin, http):
    env = {"NOTIFY_PUSHGATEWAY_URL": f"{http.url}/pgw", "NOTIFY_WEBHOOK_URL": f"{http.url}/hook",
           "NOTIFY_HEALTHCHECK_URL": f"{http.url}/ping/backup-check",
           "NOTIFY_VERIFY_HEALTHCHECK_URL": f"{http.url}/ping/verify-check"}
    result = run(notify_bin, ["--event", "verify", "--status", "failure", "--manifest", str(MANIFESTS / "success.json"),
                              "--set-age-seconds", "777600", "--checked", "sha256 of 9 objects"], env)
    assert result.returncode == 0, result.stderr
    values = metrics(http.requests("/pgw")[0]["body"])
    assert values[("kdl_backup_verify_status", None)] == 0.0
    assert values[("kdl_backup_latest_set_age_seconds", None)] == 777600.0
    assert abs(values[("kdl_backup_last_verify_timestamp_seconds", None)] - time.time()) < 60
    assert ("kdl_backup_status", None) not in values
    body = json.loads(http.requests("/hook")[0]["body"])
    assert body["event"] == "verify" and body["verify"] == {"setAgeSeconds": 777600, "checked": ["sha256 of 9 objects"]}
    assert [r["path"] for r in http.requests("/ping")] == ["/ping/verify-check/fail"]


@pytest.mark.parametrize("args, env, code, message", [
    (["--event", "finish"], {}, 64, "--event finish needs --status"),
    (["--event", "finish", "--manifest", "/nonexistent/manifest.json"], {}, 66, "does not exist"),
    (["--event", "verify", "--status", "partial"], {}, 64, "not partial"),
    (["--event", "finish", "--status", "failure"], {"NOTIFY_SLACK_WEBHOOK_URL": "hooks.example/secretpath1"}, 64,
     "NOTIFY_SLACK_WEBHOOK_URL is not an http"),
    (["--event", "finish", "--status", "failure", "--only-on", "sometimes"], {}, 64, "--only-on must be failure or always"),
    (["--event", "finish", "--status", "failure"], {"NOTIFY_CA_FILE": "/nonexistent/ca.pem"}, 64, "NOTIFY_CA_FILE"),
])
def test_bad_input_is_one_line_and_a_sysexits_code(notify_bin, args, env, code, message):
    result = run(notify_bin, args, env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "secretpath1" not in result.stderr
    assert "Fatal error" not in result.stderr

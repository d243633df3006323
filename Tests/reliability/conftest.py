"""Fixtures of the reliability suite (issue 10): a private local stack, the job environment with known secret
values, the run recorder (every stdout/stderr kept for the leak scan), the capture server for notifications,
and the results table written at the end of the session.

The suite starts its own stack (scripts/stack/up.sh --seed tiny) rather than the session's shared one,
because it stops services, restores over data and changes data between runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "fixtures"))

from rel_results import DEFAULT_DOC, DEFAULT_RESULTS, SECTIONS, Results, render, splice  # noqa: E402
from rel_support import (BACKUP_SH, MONGO_PASSWORD, ROOT, BackupIds, Bucket, Recorder, Runner,  # noqa: E402
                         parse_env_file)

RESULTS = Results()
SUITE_STARTED = time.monotonic()
# Known secret values of this run, by name (filled by the fixtures; scanned for by test_secret_leaks).
SECRETS: dict[str, str] = {}
# Extra byte blobs to scan (stored objects of encrypted sets, manifests), by label.
SCANNED_BLOBS: list[tuple[str, bytes]] = []

WEBHOOK_TOKEN = "T0KEN-webhook-9f3c2e71d4b8a6059e1f"


def pytest_collection_modifyitems(session, config, items):
    """The leak scan reads what every other test produced: it runs last."""
    last = [i for i in items if i.fspath.basename == "test_secret_leaks.py"]
    items[:] = [i for i in items if i not in last] + last


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS.sections:
        return
    RESULTS.record("suite", "wall time of the suite (s)", round(time.monotonic() - SUITE_STARTED, 1), "≤ 1200")
    data = RESULTS.to_json()
    complete = all(key in RESULTS.sections for key in SECTIONS if key != "suite")
    target = DEFAULT_RESULTS if complete or os.environ.get("KDL_RELIABILITY_WRITE_DOCS") == "1" else None
    if target:
        RESULTS.save(target)
        DEFAULT_DOC.write_text(splice(DEFAULT_DOC.read_text() if DEFAULT_DOC.exists() else "", render(data)))
    else:
        RESULTS.save(Path(tempfile.gettempdir()) / "kdl-reliability-results.partial.json")
    session.config._kdl_reliability_table = (render(data), target)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    table = getattr(config, "_kdl_reliability_table", None)
    if not table:
        return
    text, target = table
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write(text)
    if target:
        terminalreporter.write_line(f"written to {target.relative_to(ROOT)} and {DEFAULT_DOC.relative_to(ROOT)}")
    else:
        terminalreporter.write_line("partial run: docs/reliability.md left unchanged")


@pytest.fixture(scope="session")
def results() -> Results:
    return RESULTS


@pytest.fixture(scope="session")
def secrets() -> dict:
    return SECRETS


@pytest.fixture(scope="session")
def scanned_blobs() -> list:
    return SCANNED_BLOBS


@pytest.fixture(scope="session")
def bins(request) -> Path:
    """The built helpers (s3-put, ...): the shared fixture, KDL_BIN_DIR, or a local build."""
    try:
        return Path(request.getfixturevalue("bin_dir"))
    except pytest.FixtureLookupError:
        pass
    for candidate in (os.environ.get("KDL_BIN_DIR", ""), ROOT / ".build-reliability/release", ROOT / ".build/release",
                      ROOT / ".build/debug"):
        if candidate and (Path(candidate) / "s3-put").is_file() and (Path(candidate) / "notify").is_file():
            return Path(candidate)
    pytest.fail("no built helpers: set KDL_BIN_DIR or run swift build -c release")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def recorder(workdir) -> Recorder:
    return Recorder(workdir / "runs")


@pytest.fixture(scope="session")
def runner(recorder) -> Runner:
    return Runner(recorder)


@pytest.fixture(scope="session")
def ids() -> BackupIds:
    return BackupIds()


@pytest.fixture(scope="session")
def rstack(workdir):
    """A private local stack with the tiny seed; stopped at the end of the session."""
    # Under /tmp itself: PostgreSQL runs as the postgres user, and pytest's own temp dirs are closed to it.
    directory = Path(tempfile.mkdtemp(prefix="kdl-rel-stack."))
    up = subprocess.run([str(ROOT / "scripts/stack/up.sh"), "--dir", str(directory), "--seed", "tiny"],
                        capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        subprocess.run([str(ROOT / "scripts/stack/down.sh"), "--dir", str(directory)], capture_output=True, timeout=120)
        pytest.fail(f"scripts/stack/up.sh failed ({up.returncode}): {up.stderr[-2000:]}")
    env = parse_env_file(directory / "stack.env")
    SECRETS["S3 secret access key"] = env["AWS_SECRET_ACCESS_KEY"]
    SECRETS["Postgres password"] = env["PGPASSWORD"]
    if env.get("STACK_PG_SUPERUSER_PASSWORD"):
        SECRETS["Postgres superuser password"] = env["STACK_PG_SUPERUSER_PASSWORD"]
    SECRETS["webhook URL token"] = WEBHOOK_TOKEN
    SECRETS["Mongo password in the URI"] = MONGO_PASSWORD
    yield env
    subprocess.run([str(ROOT / "scripts/stack/down.sh"), "--dir", str(directory)], capture_output=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def bucket(rstack) -> Bucket:
    return Bucket(rstack)


@pytest.fixture(scope="session")
def capture(workdir):
    """The notification receiver: a capture server (Tests/fixtures/capture_server.py) on loopback."""
    from capture_server import CaptureServer

    with CaptureServer(workdir / "capture") as server:
        yield server


@pytest.fixture(scope="session")
def age_identity(workdir) -> tuple[Path, str]:
    """(identity file, recipient) of a fresh age key pair."""
    path = workdir / "age" / "identity.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    SECRETS["age identity (private key)"] = next(
        line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return path, recipient


@pytest.fixture(scope="session")
def wrong_identity(workdir) -> Path:
    path = workdir / "age" / "wrong.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def job_env(rstack, bins, capture, age_identity):
    """job_env(prefix, **overrides) -> the environment of backup.sh/restore.sh against the private stack,
    encrypted to the session's age key, notifying the capture server at a secret webhook URL."""
    base_path = os.pathsep.join([str(bins), str(BACKUP_SH.parent), rstack.get("STACK_BIN_DIR", ""),
                                 "/usr/local/bin", "/usr/bin", "/bin"])

    def make(prefix: str, **overrides) -> dict:
        env = {
            "PATH": base_path, "HOME": str(Path(tempfile.gettempdir())), "LANG": "C.UTF-8", "TZ": "UTC",
            "TMPDIR": tempfile.gettempdir(),
        }
        for key, value in rstack.items():
            if key.startswith(("AWS_", "PG", "MONGO_", "K8S_", "BACKUP_S3_BUCKET", "GITEA_", "MLFLOW_")):
                env[key] = value
        env.update({
            "BACKUP_S3_PREFIX": prefix,
            "BACKUP_AGE_RECIPIENTS": age_identity[1],
            "BACKUP_AGE_IDENTITY_FILE": str(age_identity[0]),
            "BACKUP_KEEP_LAST": "0", "BACKUP_KEEP_DAYS": "0",
            "NOTIFY_WEBHOOK_URL": f"{capture.url}/hooks/{prefix}/{WEBHOOK_TOKEN}",
            "KDL_CANCEL_GRACE": "2",
        })
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    return make


def notifications(capture, prefix: str) -> list[dict]:
    """The webhook bodies (parsed JSON) the runs under PREFIX sent, oldest first."""
    import json

    bodies = []
    for request in capture.requests(f"/hooks/{prefix}"):
        try:
            bodies.append(json.loads(request["body"]))
        except ValueError:
            bodies.append({"unparsed": request["body"]})
    return bodies


@pytest.fixture(scope="session")
def webhook_bodies(capture):
    return lambda prefix: notifications(capture, prefix)



class Jobs:
    """backup.sh and restore.sh runs against the private stack, and what they left in S3."""

    def __init__(self, runner, job_env, bucket, capture, ids, identity, recorder):
        self.runner = runner
        self.env = job_env
        self.bucket = bucket
        self.capture = capture
        self.ids = ids
        self.identity = identity
        self.recorder = recorder

    def backup(self, prefix: str, name: str = "backup", timeout: float = 180, set_id: str | None = None,
               env: dict | None = None, args=(), **run_options):
        """(set id, Run) of one backup.sh run under PREFIX (env may override BACKUP_ID)."""
        set_id = set_id or self.ids.next()
        job = self.env(prefix, **{"BACKUP_ID": set_id, **(env or {})})
        run = self.runner.run(f"{name}-{set_id}", [BACKUP_SH, *args], job, timeout=timeout, **run_options)
        return set_id, run

    def restore(self, prefix: str, *args, name: str = "restore", timeout: float = 180, env: dict | None = None,
                **run_options):
        job = self.env(prefix, **(env or {}))
        return self.runner.run(name, [ROOT / "backup" / "restore.sh", *args], job, timeout=timeout, **run_options)

    def notifications(self, prefix: str, set_id: str | None = None, event: str | None = None) -> list[dict]:
        bodies = notifications(self.capture, prefix)
        return [b for b in bodies if (set_id is None or b.get("backupId") == set_id)
                and (event is None or b.get("event") == event)]

    def outcome(self, prefix: str, set_id: str, run) -> dict:
        """Classifies a finished backup run: success, partial, clean failure, or an incident (with problems)."""
        sets = self.bucket.sets(prefix)
        complete = sets.get(set_id, {}).get("complete", False)
        problems = []
        crash = run.crash()
        if crash:
            problems.append(crash)
        status = None
        if complete:
            manifest = self.bucket.manifest(prefix, set_id)
            status = manifest.get("status")
            problems += self.bucket.check_set(prefix, set_id)
        finish = self.notifications(prefix, set_id, "finish")
        if run.returncode == 0:
            kind = "success"
            if not complete or status != "success":
                problems.append(f"exit 0 but manifest {'status ' + str(status) if complete else 'missing'}")
        elif run.returncode == 3:
            kind = "partial"
            if not complete or status != "partial":
                problems.append(f"exit 3 but manifest {'status ' + str(status) if complete else 'missing'}")
        else:
            kind = "clean failure"
            if complete and status == "success":
                problems.append(f"exit {run.returncode} but a manifest with status success was stored")
            if not any(b.get("status") in ("failure", "partial") for b in finish):
                problems.append("no failure notification")
        if kind != "clean failure" and not any(b.get("status") == kind for b in finish):
            problems.append(f"no finish notification with status {kind}")
        return {"kind": kind, "complete": complete, "status": status, "problems": problems}


@pytest.fixture(scope="session")
def jobs(runner, job_env, bucket, capture, ids, age_identity, recorder) -> Jobs:
    return Jobs(runner, job_env, bucket, capture, ids, age_identity[0], recorder)

"""mlflow-scan as a process: snapshots under a live writer, read-only and unreadable trees as a non-root user,
names that are not UTF-8, and the exit codes of the contract (issue 5).

Stores are real SQLite files with MLflow's schema (test_mlflow_scan_schema.sql). Runs the release binary from
KDL_BIN_DIR (or the `bin_dir` fixture of Tests/conftest.py when there is one)."""

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SCHEMA = (Path(__file__).parent / "test_mlflow_scan_schema.sql").read_text()
NON_ROOT = "nobody"

# Inserts runs the way MLflow's SQLAlchemy store does, one transaction per run (run, 3 params, 2 metrics,
# 2 latest_metrics), until STOP exists; prints how many runs it committed and its longest commit in seconds
# (BEGIN IMMEDIATE to COMMIT, lock waits included; scripts/bench/mlflow-scan.sh reports it). Any error ends it
# with status 1.
WRITER = r"""
import os, sqlite3, sys, time
db, stop, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = sqlite3.connect(db, timeout=60, isolation_level=None)
n, longest = start, 0.0
while not os.path.exists(stop):
    run = "%032x" % n
    began = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO runs (run_uuid, name, source_type, status, start_time, lifecycle_stage, experiment_id)"
                 " VALUES (?, ?, 'LOCAL', 'RUNNING', ?, 'active', 0)", (run, "run-%d" % n, n))
    for key in ("alpha", "epochs", "lr"):
        conn.execute("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", (key, str(n), run))
    for key in ("loss", "acc"):
        conn.execute("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, 0.5, ?, ?, 0, 0)", (key, n, run))
        conn.execute("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?, 0.5, ?, 0, 0, ?)", (key, n, run))
    conn.execute("COMMIT")
    longest = max(longest, time.monotonic() - began)
    n += 1
print(n - start, "%.3f" % longest)
"""


@pytest.fixture
def scan_bin(request):
    try:
        folder = request.getfixturevalue("bin_dir")
    except pytest.FixtureLookupError:
        folder = os.environ.get("KDL_BIN_DIR")
    if not folder:
        pytest.fail("KDL_BIN_DIR is not set: point it at the folder of the built helpers (scripts/test.sh does)")
    path = Path(folder) / "mlflow-scan"
    assert path.is_file(), f"{path} is missing: build the helpers first"
    return path


@pytest.fixture
def tree():
    """A temporary folder any user may traverse (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="mlflow-scan-e2e-"))
    base.chmod(0o755)
    yield base
    subprocess.run(["chmod", "-R", "u+rwX", str(base)], check=False)
    shutil.rmtree(base, ignore_errors=True)


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to run mlflow-scan as the non-root user 'nobody'")


def make_store(folder: Path, runs: int = 3, wal: bool = False, keep_wal: bool = False) -> Path:
    """An MLflow store with `runs` runs. keep_wal leaves mlflow.db-wal and -shm behind, as a live server does."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    code = (
        "import sqlite3, sys, os\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        f"if {wal!r}: c.execute('PRAGMA journal_mode=WAL')\n"
        "c.executescript(sys.argv[2])\n"
        "c.execute('BEGIN')\n"
        f"for n in range({runs}):\n"
        "    r = '%032x' % n\n"
        "    c.execute(\"INSERT INTO runs (run_uuid, status, lifecycle_stage, experiment_id) VALUES (?, 'FINISHED', 'active', 0)\", (r,))\n"
        "    for k in ('alpha', 'epochs', 'lr'): c.execute('INSERT INTO params VALUES (?, ?, ?)', (k, str(n), r))\n"
        "    for k in ('loss', 'acc'):\n"
        "        c.execute('INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, 0.5, ?, ?, 0, 0)', (k, n, r))\n"
        "        c.execute('INSERT INTO latest_metrics VALUES (?, 0.5, ?, 0, 0, ?)', (k, n, r))\n"
        "c.execute('COMMIT')\n"
        f"if {keep_wal!r}: os._exit(0)\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db), SCHEMA], check=True)
    return db


def scan(scan_bin, *args, user=None, check_status=0):
    command = [str(scan_bin), *map(str, args)]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, capture_output=True, timeout=300)
    if check_status is not None:
        assert result.returncode == check_status, result.stderr.decode(errors="replace")
    return result


def report_of(result):
    return json.loads(result.stdout)


def by_project(report):
    return {store["project"]: store for store in report["stores"]}


def wait_for_runs_beyond(db: Path, runs: int, writer, deadline_seconds: float = 120):
    """Waits until the writer has committed past `runs`, so the next snapshot is of a later point in time."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert writer.poll() is None, writer.stderr.read().decode()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
        try:
            if conn.execute("SELECT count(*) FROM runs").fetchone()[0] > runs:
                return
        finally:
            conn.close()
        time.sleep(0.05)
    pytest.fail(f"the writer committed nothing beyond {runs} runs in {deadline_seconds} s")


def counts(db: Path):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "params", "metrics", "latest_metrics")}, [
            row[0] for row in conn.execute("PRAGMA integrity_check")
        ]
    finally:
        conn.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback"])
def test_snapshots_taken_while_a_writer_inserts_runs_are_consistent(scan_bin, tree, wal):
    root = tree / "shared-volume"
    db = make_store(root / "kdl-demo-mlflow-claim-pvc-1a2b3c4d", runs=20000, wal=wal)
    stop = tree / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop), "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        seen = []
        for attempt in range(5):
            snapdir = tree / f"snap{attempt}"
            # A loaded machine can stall the writer: a long busy timeout, so a slow commit is not "unreadable".
            store = by_project(report_of(scan(scan_bin, root, "--snapshot", snapdir, "--busy-timeout", "120")))["demo"]
            assert store["status"] == "ok", store
            assert store["journalMode"] == ("wal" if wal else "delete")
            snapshot = store["snapshot"]
            assert snapshot["integrity"] == "ok"
            # WAL stores go through the backup API; rollback stores are copied under the read transaction's lock.
            assert snapshot["method"] == ("backup-api" if wal else "shared-lock-copy")
            copy = Path(snapshot["path"])
            assert copy == snapdir / "demo" / "mlflow.db"
            table_counts, integrity = counts(copy)
            assert integrity == ["ok"]
            # One point in time: every committed run with all of its rows, and the JSON's count is the copy's.
            assert table_counts["runs"] == store["runs"]
            assert table_counts["params"] == 3 * table_counts["runs"]
            assert table_counts["metrics"] == 2 * table_counts["runs"]
            assert table_counts["latest_metrics"] == 2 * table_counts["runs"]
            assert snapshot["bytes"] == copy.stat().st_size
            seen.append(table_counts["runs"])
            wait_for_runs_beyond(db, table_counts["runs"], writer)
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err.decode()
    committed = int(out.split()[0])
    assert all(a < b for a, b in zip(seen, seen[1:])), f"each snapshot must be of a later point in time: {seen}"
    assert 20000 <= seen[0] and seen[-1] <= 20000 + committed
    final_counts, _ = counts(db)
    assert final_counts["runs"] == 20000 + committed


def test_a_read_only_tree_is_scanned_as_a_non_root_user_without_changing_it(scan_bin, tree):
    needs_root()
    root = tree / "shared-volume"
    make_store(root / "kdl-rollback-mlflow-claim-pvc-0001", runs=4)
    make_store(root / "kdl-walshm-mlflow-claim-pvc-0002", runs=5, wal=True, keep_wal=True)
    make_store(root / "kdl-walnoshm-mlflow-claim-pvc-0003", runs=6, wal=True, keep_wal=True)
    (root / "kdl-walnoshm-mlflow-claim-pvc-0003" / "mlflow.db-shm").unlink()
    assert (root / "kdl-walshm-mlflow-claim-pvc-0002" / "mlflow.db-wal").stat().st_size > 0
    subprocess.run(["chmod", "-R", "a+rX,a-w", str(root)], check=True)
    before = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    snapshots = tree / "snapshots"
    snapshots.mkdir()
    shutil.chown(snapshots, user=NON_ROOT)

    stores = by_project(report_of(scan(scan_bin, root, "--snapshot", snapshots, user=NON_ROOT)))

    assert stores["rollback"]["status"] == "ok" and stores["rollback"]["runs"] == 4
    assert stores["walshm"]["status"] == "ok" and stores["walshm"]["journalMode"] == "wal"
    assert stores["walshm"]["runs"] == 5  # the rows only in mlflow.db-wal are read
    assert counts(Path(stores["walshm"]["snapshot"]["path"]))[0]["runs"] == 5
    walnoshm = stores["walnoshm"]
    assert walnoshm["status"] == "unreadable"
    assert "WAL" in walnoshm["error"] and "read-only" in walnoshm["error"]
    assert "snapshot" not in walnoshm
    after = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    assert after == before


def test_unreadable_folders_and_files_are_reported_and_the_scan_goes_on(scan_bin, tree):
    needs_root()
    root = tree / "shared-volume"
    make_store(root / "kdl-fine-mlflow-claim-pvc-0001")
    locked_claim = root / "kdl-locked-mlflow-claim-pvc-0002"
    make_store(locked_claim)
    locked_plain = root / "private"
    make_store(locked_plain / "inner")
    locked_file = make_store(root / "kdl-file-mlflow-claim-pvc-0003")
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    locked_claim.chmod(0o700)
    locked_plain.chmod(0o700)
    locked_file.chmod(0o600)

    result = scan(scan_bin, root, user=NON_ROOT)
    report = report_of(result)
    stores = by_project(report)
    assert stores["fine"]["status"] == "ok"
    assert stores["locked"]["status"] == "unreadable"
    assert "Permission denied" in stores["locked"]["error"]
    assert stores["file"]["status"] == "unreadable"
    assert "Permission denied" in stores["file"]["error"]
    assert [s["reason"] for s in report["skipped"] if s["path"] == str(locked_plain)] == ["cannot list folder: Permission denied"]
    assert report["summary"]["unreadable"] == 2
    assert b"status=unreadable" in result.stderr


def test_names_with_newlines_and_invalid_utf8_come_out_exactly(scan_bin, tree):
    root = tree / "shared-volume"
    name = b"kdl-caf\xe9\nx y-mlflow-claim-pvc-0001"
    folder = os.path.join(bytes(root), name)
    os.makedirs(folder)
    make_store(Path(os.fsdecode(folder)), runs=2)

    result = scan(scan_bin, root, "--snapshot", tree / "snap")
    store = report_of(result)["stores"][0]
    assert store["status"] == "ok" and store["runs"] == 2
    assert store["project"] == "caf\ufffd\nx y"
    assert base64.b64decode(store["pathBase64"]) == os.path.join(folder, b"mlflow.db")
    assert (tree / "snap" / "caf\ufffd\nx y" / "mlflow.db").is_file()


def test_exit_codes_follow_the_contract(scan_bin, tree):
    missing = scan(scan_bin, tree / "nope", check_status=66)
    assert missing.stdout == b""
    assert missing.stderr.decode().strip().count("\n") == 0 and "does not exist" in missing.stderr.decode()
    for args in (["--max-depth", "-1"], ["--max-depth", "three"], ["--busy-timeout", "nan"], ["--no-such-flag"], [tree, tree]):
        result = scan(scan_bin, *args, check_status=64)
        assert b"Fatal error" not in result.stderr
    assert report_of(scan(scan_bin, tree))["stores"] == []
    if os.geteuid() == 0:
        private = tree / "private"
        private.mkdir(mode=0o700)
        unreadable = scan(scan_bin, private, user=NON_ROOT, check_status=74)
        assert "Permission denied" in unreadable.stderr.decode()

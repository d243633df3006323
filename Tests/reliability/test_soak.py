"""Soak: consecutive backups with retention keepLast=5 and data changing between runs. Afterwards exactly the newest
five sets remain, each passes `restore.sh verify`, and the memory of every program stays flat across runs.

Memory: each program the job runs (helpers, pg_dump, tar, zstd, age, the mongodump double, jq, backup.sh's bash)
is started through a shim that runs it under GNU time, which records its peak RSS when it exits: exact peaks of
every process, not samples.
"""
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

RUNS = int(os.environ.get("KDL_REL_SOAK_RUNS", "20"))
KEEP = 5
PREFIX = "rel-soak"
WRAPPED = ("s3-put", "s3-ls", "s3-prune", "k8s-export", "mlflow-scan", "notify", "pg_dump", "pg_restore", "psql",
           "tar", "zstd", "age", "jq", "mongodump", "mongorestore")


def make_shims(directory: Path, path: str, log: Path) -> Path:
    """A directory of wrappers: each runs the real program under /usr/bin/time, appending 'NAME KiB' to LOG."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in WRAPPED:
        real = shutil.which(name, path=path)
        assert real, f"{name} not on the job's PATH"
        shim = directory / name
        shim.write_text(f'#!/bin/sh\nexec /usr/bin/time -a -o "{log}" -f "{name} %M" "{real}" "$@"\n')
        shim.chmod(0o755)
    return directory


def change_data(rstack, gitea_dir: Path, mlflow_dir: Path, run: int, rng: random.Random) -> None:
    """Data moves between runs: rows in Postgres, a file in Gitea's volume, a run in an MLflow store, a Mongo doc."""
    import subprocess

    import pymongo

    env = {k: v for k, v in rstack.items() if k.startswith("PG")}
    env["PATH"] = "/usr/bin:/bin"
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    "CREATE TABLE IF NOT EXISTS rel_soak (id serial PRIMARY KEY, run int, payload text);"
                    f"INSERT INTO rel_soak (run, payload) SELECT {run}, md5(random()::text) FROM generate_series(1, 200);"],
                   env=env, check=True, capture_output=True, timeout=60)
    (gitea_dir / "git" / f"soak-{run}.bin").write_bytes(rng.randbytes(64 << 10))
    for db in sorted(mlflow_dir.glob("*/mlflow.db"))[:1]:
        with sqlite3.connect(db) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS rel_soak (run INTEGER)")
            connection.execute("INSERT INTO rel_soak VALUES (?)", (run,))
    client = pymongo.MongoClient(rstack["MONGO_URI"], serverSelectionTimeoutMS=10000)
    try:
        client["kdl"]["userActivity"].insert_one({"type": "SOAK", "run": run})
    finally:
        client.close()


@pytest.mark.reliability
def test_soak_with_retention(jobs, rstack, workdir, results):
    rng = random.Random(20)
    gitea_dir = workdir / "soak-gitea"
    mlflow_dir = workdir / "soak-mlflow"
    shutil.copytree(rstack["GITEA_DATA_DIR"], gitea_dir, symlinks=True)
    shutil.copytree(rstack["MLFLOW_ROOT"], mlflow_dir, symlinks=True)
    rss_log = workdir / "soak-rss.log"
    base_env = jobs.env(PREFIX)
    shims = make_shims(workdir / "soak-shims", base_env["PATH"], rss_log)
    env = {"BACKUP_KEEP_LAST": str(KEEP), "BACKUP_KEEP_DAYS": "0", "GITEA_DATA_DIR": str(gitea_dir),
           "MLFLOW_ROOT": str(mlflow_dir), "PATH": f"{shims}:{base_env['PATH']}"}
    ids, problems, peaks = [], [], []
    seconds = []
    for run_number in range(RUNS):
        change_data(rstack, gitea_dir, mlflow_dir, run_number, rng)
        rss_log.write_text("")
        set_id, run = jobs.backup(PREFIX, name=f"soak-{run_number}", env=env,
                                  sample=False)
        seconds.append(run.seconds)
        ids.append(set_id)
        outcome = jobs.outcome(PREFIX, set_id, run)
        if run.returncode != 0 or outcome["problems"]:
            problems.append(f"run {run_number}: exit {run.returncode}: {outcome['problems']} {run.stderr_lines()[-1:]}")
        run_peaks: dict[str, int] = {}
        for line in rss_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                run_peaks[parts[0]] = max(run_peaks.get(parts[0], 0), int(parts[1]))
        peaks.append(run_peaks)
    sets = jobs.bucket.sets(PREFIX)
    remaining = sorted(i for i, s in sets.items() if s["complete"])
    expected = sorted(ids)[-KEEP:]
    if remaining != expected:
        problems.append(f"sets left {remaining}, expected the newest {KEEP}: {expected}")
    incomplete = sorted(i for i, s in sets.items() if not s["complete"])
    if incomplete:
        problems.append(f"incomplete sets left: {incomplete}")
    verified = 0
    for set_id in remaining:
        verify = jobs.restore(PREFIX, "verify", set_id, "--identity", str(jobs.identity), name=f"soak-verify-{set_id}")
        if verify.returncode == 0:
            verified += 1
        else:
            problems.append(f"verify {set_id}: exit {verify.returncode}: {verify.stderr_lines()[-1:]}")
    # Flat memory: each program's peak over the last five runs within 25 % (+4 MiB) of its peak over the first five.
    growth = []
    programs = sorted({p for run_peaks in peaks for p in run_peaks})
    worst_name, worst = "", 0
    for program in programs:
        first = max((r.get(program, 0) for r in peaks[:5]), default=0)
        last = max((r.get(program, 0) for r in peaks[-5:]), default=0)
        if first and last > first * 1.25 + 4096:
            growth.append(f"{program}: {first} KiB in runs 1-5, {last} KiB in runs {RUNS - 4}-{RUNS}")
        top = max(r.get(program, 0) for r in peaks)
        if top > worst:
            worst_name, worst = program, top
    problems += [f"memory grows: {g}" for g in growth]
    succeeded = RUNS - sum(1 for p in problems if p.startswith("run "))
    results.record("soak", "consecutive backups (data changing between runs)", RUNS, "20")
    results.record("soak", "backups succeeded", f"{succeeded} / {RUNS}", f"{RUNS} / {RUNS}")
    results.record("soak", "sets remaining with keepLast=5 (exactly the newest five)",
                   f"{len(remaining)}{'' if remaining == expected else ' (wrong sets)'}", str(KEEP))
    results.record("soak", "remaining sets passing restore.sh verify", f"{verified} / {len(remaining)}",
                   f"{KEEP} / {KEEP}")
    results.record("soak", "programs measured (peak RSS of every process, GNU time)", len(programs))
    results.record("soak", "programs whose memory grew across runs", len(growth), "0")
    results.record("soak", "largest process peak RSS (MiB)", f"{worst / 1024:.1f} ({worst_name})", "≤ 64 (issue 7)")
    results.record("soak", "mean backup wall time (s)", round(sum(seconds) / len(seconds), 1))
    assert not problems, "\n".join(problems)

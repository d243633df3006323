"""Kills: SIGTERM to the job's main process, then SIGKILL to every process of the job after a grace period (what
Kubernetes does at activeDeadlineSeconds or on eviction), at seeded random points of a backup and of a restore.

After each backup kill: no set without a manifest is listed by `restore.sh list` or picked as `latest`, and the next
backup succeeds. At the end `s3-prune` keeps the debris within its grace period, removes all of it after, and
removes nothing else. After each restore kill the same restore, re-run, completes and the restored state equals
the source.
"""
import os
import random
import re
import shutil
from datetime import timedelta

import pytest
from rel_support import diff_states, id_time, mlflow_state, mongo_state, pg_state, tree_state

POINTS = int(os.environ.get("KDL_REL_KILL_POINTS", "20"))
SEED = int(os.environ.get("KDL_REL_SEED", "10"))
PREFIX = "rel-kills"
GRACES = (0.5, 1.0, 2.0)


def listed_ids(run) -> list[str]:
    return re.findall(r"^(\d{8}T\d{6}Z)\s", run.stdout, re.M)


@pytest.fixture(scope="module")
def kill_state():
    return {}


@pytest.mark.reliability
def test_backup_killed_at_random_points(jobs, bins, results, kill_state):
    rng = random.Random(SEED)
    baseline_id, baseline = jobs.backup(PREFIX, name="kill-baseline")
    assert baseline.returncode in (0, 3), baseline.stderr[-2000:]
    assert jobs.outcome(PREFIX, baseline_id, baseline)["problems"] == []
    duration = baseline.seconds
    problems = []
    killed = finished_first = next_ok = 0
    for point in range(POINTS):
        delay = round(rng.uniform(0.03, 0.97) * duration, 2)
        grace = rng.choice(GRACES)
        set_id, run = jobs.backup(PREFIX, name=f"kill-backup-{point}", kill_after=delay, grace=grace)
        if run.killed:
            killed += 1
        else:
            finished_first += 1
        crash = run.crash()
        if crash and not run.killed:
            problems.append(f"point {point}: {crash}")
        sets = jobs.bucket.sets(PREFIX)
        listing = jobs.restore(PREFIX, "list", name=f"kill-list-{point}")
        if listing.returncode != 0:
            problems.append(f"point {point}: restore.sh list exit {listing.returncode}: {listing.stderr[-300:]}")
        for listed in listed_ids(listing):
            if not sets.get(listed, {}).get("complete"):
                problems.append(f"point {point}: restore.sh list shows {listed}, which has no manifest")
        latest = jobs.restore(PREFIX, "show", "latest", "--json", name=f"kill-latest-{point}")
        newest_success = max((i for i, s in sets.items() if s["complete"]
                              and jobs.bucket.manifest(PREFIX, i).get("status") == "success"), default=None)
        try:
            import json
            picked = json.loads(latest.stdout).get("id")
        except ValueError:
            picked = None
        if picked != newest_success:
            problems.append(f"point {point}: latest is {picked}, the newest successful complete set is {newest_success}")
        if sets.get(set_id, {}).get("complete"):
            problems += [f"point {point}: {p}" for p in jobs.bucket.check_set(PREFIX, set_id)]
        next_id, next_run = jobs.backup(PREFIX, name=f"kill-next-{point}")
        outcome = jobs.outcome(PREFIX, next_id, next_run)
        if next_run.returncode == 0 and not outcome["problems"]:
            next_ok += 1
        else:
            problems.append(f"point {point}: the next backup exited {next_run.returncode}: {outcome['problems']} "
                            f"{next_run.stderr_lines()[-1:] }")
    kill_state["backup_problems"] = problems

    # Retention: debris (sets without manifest) stays within the grace period, goes after it, nothing else goes.
    sets = jobs.bucket.sets(PREFIX)
    debris = {i for i, s in sets.items() if not s["complete"]}
    complete = {i: s["keys"] for i, s in sets.items() if s["complete"]}
    env = jobs.env(PREFIX)
    url = f"s3://{env['BACKUP_S3_BUCKET']}/{PREFIX}"
    now = max(id_time(i) for i in sets) + timedelta(minutes=1)
    within = jobs.runner.run("kill-prune-within-grace", [bins / "s3-prune", "--keep-last", "0", "--keep-days", "0",
                                                         "--now", now.strftime("%Y%m%dT%H%M%SZ"), url], env)
    after_within = jobs.bucket.sets(PREFIX)
    later = now + timedelta(hours=49)
    after = jobs.runner.run("kill-prune-after-grace", [bins / "s3-prune", "--keep-last", "0", "--keep-days", "0",
                                                       "--now", later.strftime("%Y%m%dT%H%M%SZ"), url], env)
    remaining = jobs.bucket.sets(PREFIX)
    prune_problems = []
    if within.returncode != 0 or after.returncode != 0:
        prune_problems.append(f"s3-prune exits {within.returncode}, {after.returncode}: {after.stderr[-300:]}")
    if set(after_within) != set(sets):
        prune_problems.append(f"within the grace period s3-prune removed {sorted(set(sets) - set(after_within))}")
    left = {i for i, s in remaining.items() if not s["complete"]}
    if left:
        prune_problems.append(f"debris left after the grace period: {sorted(left)}")
    for set_id, keys in complete.items():
        if remaining.get(set_id, {}).get("keys") != keys:
            prune_problems.append(f"complete set {set_id} changed by s3-prune")
    kill_state["last_success"] = max(i for i in complete if jobs.bucket.manifest(PREFIX, i)["status"] == "success")

    results.record("kills", "backup kill points (seeded, uniform over a run)", POINTS, "20")
    results.record("kills", "backups killed / finished before their kill point", f"{killed} / {finished_first}")
    results.record("kills", "incomplete sets listed or picked as latest", sum("no manifest" in p or "latest is" in p
                                                                            for p in problems), "0")
    results.record("kills", "next backup after a kill succeeded", f"{next_ok} / {POINTS}", f"{POINTS} / {POINTS}")
    results.record("kills", "debris sets removed by s3-prune after the grace period (kept before)",
                   f"{len(debris) - len(left)} / {len(debris)}")
    results.record("kills", "complete sets removed or changed by s3-prune", sum(
        remaining.get(i, {}).get("keys") != k for i, k in complete.items()), "0")
    assert not problems, "\n".join(problems)
    assert not prune_problems, "\n".join(prune_problems)


@pytest.mark.reliability
def test_restore_killed_at_random_points(jobs, rstack, workdir, results, kill_state):
    set_id = kill_state.get("last_success")
    if not set_id:
        pytest.fail("no successful set from the backup kill test to restore")
    source = {
        "postgres": pg_state(rstack),
        "gitea-data": tree_state(rstack["GITEA_DATA_DIR"], exclude={"gitea/indexers", "ssh", "lost+found"}),
        "mlflow": mlflow_state(rstack["MLFLOW_ROOT"]),
        "mongodb": mongo_state(rstack["MONGO_URI"]),
    }
    rng = random.Random(SEED + 1)
    target = workdir / "restore-kill-target"
    args = ("restore", "gitea", "mongodb", "mlflow", set_id, "--identity", str(jobs.identity), "--yes")

    def fresh_env():
        shutil.rmtree(target, ignore_errors=True)
        (target / "gitea").mkdir(parents=True)
        (target / "mlflow").mkdir()
        return {"GITEA_DATA_DIR": str(target / "gitea"), "MLFLOW_ROOT": str(target / "mlflow")}

    def compare(env) -> list[str]:
        return (diff_states("postgres", source["postgres"], pg_state(rstack))
                + diff_states("gitea-data", source["gitea-data"], tree_state(env["GITEA_DATA_DIR"]))
                + diff_states("mlflow", {k: v for k, v in source["mlflow"].items()}, mlflow_state(env["MLFLOW_ROOT"]))
                + diff_states("mongodb", source["mongodb"], mongo_state(rstack["MONGO_URI"])))

    env = fresh_env()
    full = jobs.restore(PREFIX, *args, name="restore-kill-baseline", env=env)
    assert full.returncode == 0, full.stderr[-2000:]
    assert compare(env) == []
    duration = full.seconds
    problems = []
    killed = completed = 0
    for point in range(POINTS):
        env = fresh_env() if point % 2 == 0 else env  # half of the kills land on an already restored target
        delay = round(rng.uniform(0.03, 0.97) * duration, 2)
        run = jobs.restore(PREFIX, *args, name=f"kill-restore-{point}", env=env, kill_after=delay,
                           grace=rng.choice(GRACES))
        killed += run.killed
        rerun = jobs.restore(PREFIX, *args, name=f"kill-restore-rerun-{point}", env=env)
        crash = rerun.crash()
        if rerun.returncode != 0 or crash:
            problems.append(f"point {point} (kill at {delay}s): re-run exit {rerun.returncode} {crash or ''}: "
                            f"{rerun.stderr_lines()[-1:]}")
            continue
        differences = compare(env)
        if differences:
            problems.append(f"point {point}: restored state differs: {differences}")
            continue
        completed += 1
    results.record("kills", "restore kill points", POINTS, "20")
    results.record("kills", "restores killed / finished before their kill point", f"{killed} / {POINTS - killed}")
    results.record("kills", "killed restores re-run to completion, state equal to the source",
                   f"{completed} / {POINTS}", f"{POINTS} / {POINTS}")
    assert not problems, "\n".join(problems)

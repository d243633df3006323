"""S3 faults: full backups through Tests/fixtures/fault_proxy.py at 10-20 % fault rates, one seed per run.

Each run must either succeed with every object's sha256 matching its manifest, or end cleanly (exit != 0, no
manifest claiming success, a failure notification sent); no multipart upload may stay in progress. Gitea's
volume carries one 12 MiB incompressible file so that every run also makes a multipart upload (8 MiB parts).
"""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

RUNS = int(os.environ.get("KDL_REL_FAULT_RUNS", "30"))
LANES = int(os.environ.get("KDL_REL_LANES", "2"))
RATES = (0.10, 0.15, 0.20)
FAULTS = "slowdown,500,reset,stall,truncate"
PREFIX = "rel-s3-faults"


@pytest.fixture(scope="module")
def gitea_with_big_file(rstack, workdir):
    target = workdir / "gitea-big"
    shutil.copytree(rstack["GITEA_DATA_DIR"], target, symlinks=True)
    (target / "git" / "lfs").mkdir(parents=True, exist_ok=True)
    (target / "git" / "lfs" / "big.bin").write_bytes(os.urandom(12 << 20))
    return target


@pytest.mark.reliability
def test_backups_through_s3_faults(jobs, rstack, workdir, results, gitea_with_big_file):
    from rel_support import FaultProxy

    outcomes = {"success": 0, "partial": 0, "clean failure": 0}
    injected: dict[str, int] = {}
    incidents = []
    leftovers = []

    def one_run(seed):
        rate = RATES[seed % len(RATES)]
        proxy = FaultProxy(rstack["AWS_ENDPOINT_URL_S3"], seed=seed, rate=rate, faults=FAULTS,
                           directory=workdir / "fault-proxy", stall_seconds=2)
        try:
            set_id, run = jobs.backup(PREFIX, name=f"s3-fault-seed{seed}", timeout=300,
                                      env={"AWS_ENDPOINT_URL_S3": proxy.url, "GITEA_DATA_DIR": str(gitea_with_big_file)})
        finally:
            proxy.close()
        return seed, rate, set_id, run, proxy.injected()

    # Runs go in LANES parallel lanes (separate proxies, ids and notifications): much of a faulted run is waiting.
    seconds = 0.0
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        for seed, rate, set_id, run, faults in pool.map(one_run, range(1, RUNS + 1)):
            seconds += run.seconds
            for kind, count in faults.items():
                injected[kind] = injected.get(kind, 0) + count
            outcome = jobs.outcome(PREFIX, set_id, run)
            outcomes[outcome["kind"]] += 1
            if outcome["problems"]:
                incidents.append(f"seed {seed} (rate {rate}, exit {run.returncode}): {'; '.join(outcome['problems'])}")
            uploads = jobs.bucket.multipart_uploads(f"{PREFIX}/{set_id}/")
            if uploads:
                leftovers.append(f"seed {seed}: multipart uploads in progress: {uploads}")

    total_faults = sum(injected.values())
    results.record("s3-faults", "seeded full backups through the fault proxy", RUNS, "≥ 30")
    results.record("s3-faults", "fault rates", ", ".join(f"{r:.0%}" for r in RATES), "10–20 %")
    results.record("s3-faults", "faults injected", total_faults)
    results.record("s3-faults", "faults by kind", ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    results.record("s3-faults", "runs succeeded (every sha256 matches the manifest)", outcomes["success"])
    results.record("s3-faults", "runs partial (manifest lists only good objects)", outcomes["partial"])
    results.record("s3-faults", "clean failures (exit ≠ 0, failure notified)", outcomes["clean failure"])
    results.record("s3-faults", "data-loss incidents", len(incidents), "0")
    results.record("s3-faults", "multipart uploads left in progress", len(leftovers), "0")
    results.record("s3-faults", "mean backup wall time under faults (s)", round(seconds / RUNS, 1))
    assert total_faults > 0, "the proxy injected no fault: the runs prove nothing"
    assert not incidents, "\n".join(incidents)
    assert not leftovers, "\n".join(leftovers)

"""Component faults: Postgres, MongoDB, the Kubernetes API server, the MLflow volume and S3 made unavailable in turn,
before the run and during it (after the preflight checks passed, when the component's step starts). Each case
states the exit status, the manifest status, the failed components, and what the finish notification says.

Services are cut with a TCP proxy in front of them (connections reset, new ones refused) rather than stopped, so
the private stack stays up for the other cases; the MLflow volume is a copy that is moved away.
"""
import shutil
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from rel_support import CutProxy, mongo_uri_with_password

PREFIX = "rel-component-faults"


@dataclass
class Case:
    component: str  # what is made unavailable
    when: str  # before | during
    exit: int
    manifest: str | None  # manifest status, None: no manifest
    failed: tuple  # components the manifest (and the notification) mark failed
    trigger: str = ""  # the log line (component=X step=start) at which "during" strikes

    @property
    def id(self):
        return f"{self.component}-{self.when}"


CASES = [
    Case("postgres", "before", 3, "partial", ("gitea",)),
    Case("postgres", "during", 3, "partial", ("gitea",), "component=gitea step=start"),
    Case("mongodb", "before", 3, "partial", ("mongodb",)),
    Case("mongodb", "during", 3, "partial", ("mongodb",), "component=mongodb step=start"),
    Case("api-server", "before", 3, "partial", ("kubernetes",)),
    Case("api-server", "during", 3, "partial", ("kubernetes",), "component=kubernetes step=start"),
    Case("mlflow-volume", "before", 3, "partial", ("mlflow",)),
    Case("mlflow-volume", "during", 3, "partial", ("mlflow",), "component=mlflow step=start"),
    # S3 gone before the run: the preflight probe fails, nothing is uploaded (69: unavailable).
    Case("s3", "before", 69, None, ()),
    # S3 gone from MongoDB's step on: what was uploaded stays without a manifest; the run fails (1).
    Case("s3", "during", 1, None, (), "component=mongodb step=start"),
]
OUTCOMES = {}


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_component_unavailable(case, jobs, rstack, workdir, results):
    proxy = None
    overrides = {}
    mlflow_copy = workdir / f"mlflow-{case.id}"
    if case.component in ("postgres", "mongodb", "api-server", "s3"):
        if case.component == "postgres":
            proxy = CutProxy("127.0.0.1", rstack["PGPORT"])
            overrides["PGPORT"] = str(proxy.port)
        elif case.component == "mongodb":
            port = urlparse(rstack["MONGO_URI"]).port
            proxy = CutProxy("127.0.0.1", port)
            # With a password: the refused and cut connections are where an error would echo the URI.
            overrides["MONGO_URI"] = mongo_uri_with_password(rstack["MONGO_URI"].replace(f":{port}", f":{proxy.port}"))
        elif case.component == "api-server":
            port = urlparse(rstack["K8S_SERVER"]).port
            proxy = CutProxy("127.0.0.1", port)
            overrides["K8S_SERVER"] = f"https://127.0.0.1:{proxy.port}"
        else:
            port = urlparse(rstack["AWS_ENDPOINT_URL_S3"]).port
            proxy = CutProxy("127.0.0.1", port)
            overrides["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{proxy.port}"
    else:
        shutil.copytree(rstack["MLFLOW_ROOT"], mlflow_copy, symlinks=True)
        overrides["MLFLOW_ROOT"] = str(mlflow_copy)

    def strike():
        if proxy:
            proxy.cut()
        else:
            mlflow_copy.rename(mlflow_copy.with_name(mlflow_copy.name + ".gone"))

    if case.when == "before":
        strike()
    on_line = None
    if case.when == "during":
        fired = []

        def on_line(line):
            if not fired and case.trigger in line:
                fired.append(True)
                strike()

    try:
        set_id, run = jobs.backup(PREFIX, name=f"component-{case.id}", env=overrides, on_line=on_line, timeout=300)
    finally:
        if proxy:
            proxy.close()
    if case.when == "during":
        assert fired, f"the run never reached '{case.trigger}'"
    problems = []
    crash = run.crash()
    if crash:
        problems.append(crash)
    if run.returncode != case.exit:
        problems.append(f"exit {run.returncode}, expected {case.exit}: {run.stderr_lines()[-3:]}")
    sets = jobs.bucket.sets(PREFIX)
    complete = sets.get(set_id, {}).get("complete", False)
    finish = jobs.notifications(PREFIX, set_id, "finish")
    if case.manifest is None:
        if complete:
            problems.append("a manifest was stored")
        if not any(b.get("status") == "failure" for b in finish):
            problems.append(f"no failure notification (got {[b.get('status') for b in finish]})")
    else:
        if not complete:
            problems.append("no manifest")
        else:
            manifest = jobs.bucket.manifest(PREFIX, set_id)
            failed = tuple(sorted(c["name"] for c in manifest["components"] if c["status"] == "failure"))
            if manifest["status"] != case.manifest:
                problems.append(f"manifest status {manifest['status']}, expected {case.manifest}")
            if failed != tuple(sorted(case.failed)):
                problems.append(f"failed components {failed}, expected {case.failed}")
            for component in manifest["components"]:
                if component["status"] == "failure" and not component.get("error"):
                    problems.append(f"component {component['name']} failed without an error message")
            problems += jobs.bucket.check_set(PREFIX, set_id)
        wanted = [b for b in finish if b.get("status") == case.manifest]
        if not wanted:
            problems.append(f"no finish notification with status {case.manifest} (got {[b.get('status') for b in finish]})")
        elif tuple(sorted(wanted[-1].get("failedComponents", []))) != tuple(sorted(case.failed)):
            problems.append(f"notification names failed components {wanted[-1].get('failedComponents')}")
    OUTCOMES[case.id] = not problems
    results.record("component-faults", "cases (5 components × before/during)", len(CASES), "10")
    results.record("component-faults", "cases with the expected exit, manifest and notification",
                   f"{sum(OUTCOMES.values())} / {len(OUTCOMES)}", f"{len(CASES)} / {len(CASES)}")
    results.record("component-faults", "cases failing", ", ".join(k for k, v in OUTCOMES.items() if not v) or "none",
                   "none")
    assert not problems, f"{case.id}: " + "; ".join(problems)

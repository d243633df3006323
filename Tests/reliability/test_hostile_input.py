"""Hostile and bad input: every case of hostile_cases.CASES, each bounded, with its expected exit status and one clear
error line; never a crash, a Swift trap or a hang; a failed restore changes nothing."""
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
from hostile_cases import CASES
from rel_support import ROOT, mongo_uri_with_password, pg_state, tree_state

PREFIX = "rel-hostile"
CASE_TIMEOUT = 120
HANDLED = {}


@pytest.fixture(scope="module")
def good_set(jobs):
    """(prefix, id) of a complete, encrypted, successful set to read and to damage."""
    prefix = f"{PREFIX}-good"
    set_id, run = jobs.backup(prefix, name="hostile-good-set", env={"BACKUP_COMPONENTS": "gitea mlflow kubernetes"})
    assert run.returncode == 0, run.stderr[-2000:]
    return prefix, set_id


def copy_set(bucket, source_prefix, set_id, prefix):
    for key in bucket.keys(f"{source_prefix}/{set_id}/"):
        bucket.client.copy_object(Bucket=bucket.name, Key=prefix + key[len(source_prefix):],
                                  CopySource={"Bucket": bucket.name, "Key": key})


def hostile_tar(kind: str) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tar:
        ok = tarfile.TarInfo("./git/ok.txt")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"ok\n"))
        if kind == "dotdot":
            bad = tarfile.TarInfo("./git/../../escaped.txt")
        elif kind == "absolute":
            bad = tarfile.TarInfo("/tmp/kdl-rel-absolute-escape.txt")
        else:
            link = tarfile.TarInfo("./git/out")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../../../tmp"
            tar.addfile(link)
            bad = tarfile.TarInfo("./git/out/kdl-rel-through-link.txt")
        bad.size = 4
        tar.addfile(bad, io.BytesIO(b"bad\n"))
    return data.getvalue()


def encode(plain: bytes, recipient: str) -> bytes:
    compressed = subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout
    return subprocess.run(["age", "-e", "-r", recipient], input=compressed, capture_output=True, check=True).stdout


def tamper(bucket, prefix, set_id, how, recipient):
    import hashlib

    base = f"{prefix}/{set_id}"
    manifest = json.loads(bucket.get(f"{base}/manifest.json"))
    gitea = next(c for c in manifest["components"] if c["name"] == "gitea")
    data_obj = next(o for o in gitea["objects"] if "data.tar" in o["key"])
    data_key = f"{base}/{data_obj['key']}"
    if how == "flip":
        body = bytearray(bucket.get(data_key))
        body[len(body) // 2] ^= 0xFF
        bucket.put(data_key, bytes(body))
    elif how == "truncate":
        bucket.put(data_key, bucket.get(data_key)[: data_obj["bytes"] // 2])
    elif how == "delete":
        bucket.delete(data_key)
    elif how.startswith("manifest-") or how.startswith("tar:"):
        if how == "manifest-sha":
            data_obj["sha256"] = hashlib.sha256(b"something else").hexdigest()
        elif how == "manifest-dotdot":
            data_obj["key"] = "../../../etc/passwd"
        elif how == "manifest-partial":
            manifest["status"] = "partial"
        elif how.startswith("tar:"):
            body = encode(hostile_tar(how[4:]), recipient)
            bucket.put(data_key, body)
            data_obj.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
        text = json.dumps(manifest).encode()
        if how == "manifest-garbage":
            text = b"{\"format\": \"kdl-backup/v1\", \"id\": [[[[ not json"
        elif how == "manifest-truncate":
            text = text[: len(text) // 2]
        bucket.put(f"{base}/manifest.json", text)


def hostile_gitea_tree(root: Path, escape: bool) -> Path:
    (root / "git" / "repositories" / "kdladmin").mkdir(parents=True)
    base = os.fsencode(str(root / "git"))
    names = [b"with space.txt", b"new\nline.txt", b"tab\tand\x01control", b"invalid-\xff\xfe-utf8.txt", b"a..b",
             b"-leading-dash", b"x" * 255, b"quote'\"$(touch pwned)`id`"]
    for name in names:
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(name + b"\n")
    deep = root / "git" / "/".join(["d" * 50] * 30)
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("deep\n")
    os.symlink("with space.txt", os.path.join(base, b"link-inside"))
    if escape:
        os.symlink("/etc/passwd", os.path.join(base, b"link-absolute"))
    return root


def hostile_mlflow_root(source: Path, root: Path, outside: Path) -> Path:
    stores = sorted(source.glob("*/mlflow.db"))
    assert stores, f"no MLflow store under {source}"
    root.mkdir(parents=True)
    base = os.fsencode(str(root))
    for i, name in enumerate([b"kdl-with space-mlflow-claim", b"kdl-new\nline-mlflow-claim",
                              b"kdl-bad-\xff-mlflow-claim", b"kdl-" + b"l" * 230 + b"-mlflow-claim"]):
        folder = os.path.join(base, name)
        os.mkdir(folder)
        shutil.copy(stores[i % len(stores)], os.path.join(folder, b"mlflow.db"))
    shutil.copytree(stores[0].parent, root / stores[0].parent.name)
    outside.mkdir(parents=True)
    shutil.copy(stores[0], outside / "mlflow.db")
    os.symlink(str(outside), os.path.join(base, b"kdl-outside-mlflow-claim"))
    return root


def double_faults(rstack, method: str, fault: dict | None = None) -> None:
    """POST (add) or DELETE (clear) the Kubernetes API double's faults through its admin hook."""
    context = ssl.create_default_context(cafile=rstack["K8S_CA_FILE"])
    token = Path(rstack["K8S_TOKEN_FILE"]).read_text().strip()
    body = json.dumps(fault).encode() if fault else None
    request = urllib.request.Request(f"{rstack['K8S_SERVER']}/_double/faults", data=body, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, context=context, timeout=10).read()


def k8s_fault(rstack, spec: str):
    """Clears the double's faults, then adds KIND[:COUNT] (a huge page carries a 24 MiB annotation)."""
    kind, _, count = spec.partition(":")
    double_faults(rstack, "DELETE")
    double_faults(rstack, "POST", {"kind": kind, "count": int(count or 1), "bytes": 24 << 20})


def render_values(values: dict):
    """(exit, message) of rendering the chart with VALUES: 1 and the error when the chart refuses them."""
    import sys

    sys.path.insert(0, str(ROOT / "Tests" / "helm"))
    import helm_python as helm
    from chart_support import load_chart, render

    try:
        render(load_chart(), values)
    except helm.HelmError as error:
        return 1, str(error)
    return 0, ""


def fill(args, mapping):
    return [a.format(**mapping) for a in args]


@pytest.mark.reliability
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_hostile_input(case, jobs, rstack, bins, workdir, good_set, wrong_identity, age_identity, results):
    case_dir = workdir / "hostile" / case["id"]
    case_dir.mkdir(parents=True)
    mapping = {"identity": str(jobs.identity), "wrong_identity": str(wrong_identity),
               "missing_file": str(case_dir / "does-not-exist"), "bucket": rstack["BACKUP_S3_BUCKET"], "id": good_set[1],
               "mongo_uri_with_password": mongo_uri_with_password(rstack["MONGO_URI"])}
    prefix = f"{PREFIX}-{case['id']}"
    if case.get("prefix") == "good":
        prefix = good_set[0]
    elif case.get("prefix") == "tampered":
        copy_set(jobs.bucket, good_set[0], good_set[1], prefix)
        tamper(jobs.bucket, prefix, good_set[1], case["tamper"], age_identity[1])
    # Restore targets: a sentinel tree that a failed restore must leave as it was.
    target = case_dir / "target"
    (target / "gitea").mkdir(parents=True)
    (target / "gitea" / "sentinel.txt").write_text("unchanged\n")
    (target / "mlflow").mkdir()
    env = {"GITEA_DATA_DIR": str(target / "gitea"), "MLFLOW_ROOT": str(target / "mlflow")}
    env.update({k: v.format(**mapping) if isinstance(v, str) else v for k, v in case.get("env", {}).items()})
    expected = case["exit"] if isinstance(case["exit"], tuple) else (case["exit"],)
    extra = []

    kind = case["run"]
    if kind == "values":
        code, message = render_values(case["values"])
        run = None
        stderr = message
    else:
        if kind == "backup":
            set_id, run = jobs.backup(prefix, name=f"hostile-{case['id']}", env=env, timeout=CASE_TIMEOUT,
                                      args=case.get("args", []))
            if run.returncode in (64, 69, 77) and jobs.bucket.keys(f"{prefix}/{set_id}/"):
                extra.append("objects were uploaded by a run refused before uploading")
        elif kind == "restore":
            before_pg = pg_state(rstack)
            before_tree = tree_state(target)
            run = jobs.restore(prefix, *fill(case.get("args", []), mapping), name=f"hostile-{case['id']}", env=env,
                               timeout=CASE_TIMEOUT)
            if run.returncode != 0:
                if tree_state(target) != before_tree:
                    extra.append("a failed restore changed the target tree")
                if pg_state(rstack) != before_pg:
                    extra.append("a failed restore changed the database")
        elif kind == "helper":
            args = fill(case["args"], mapping)
            if case["group"] == "api":
                k8s_fault(rstack, case["fault"])
                args += ["--server", rstack["K8S_SERVER"], "--token-file", rstack["K8S_TOKEN_FILE"],
                         "--ca-file", rstack["K8S_CA_FILE"], "--namespace", "kdl", "--output", str(case_dir / "out.yaml")]
            try:
                run = jobs.runner.run(f"hostile-{case['id']}", [bins / args[0], *args[1:]], jobs.env(prefix, **env),
                                      timeout=CASE_TIMEOUT)
            finally:
                if case["group"] == "api":
                    double_faults(rstack, "DELETE")
        else:  # backup+restore of a tree with hostile names
            if case["names"].startswith("gitea"):
                tree = hostile_gitea_tree(case_dir / "source", escape=case["names"] == "gitea-escape")
                env.update(BACKUP_COMPONENTS="gitea")
                set_id, backup = jobs.backup(prefix, name=f"hostile-{case['id']}-backup", timeout=CASE_TIMEOUT,
                                             env={**env, "GITEA_DATA_DIR": str(tree)})
                if backup.returncode != 0 or backup.crash():
                    extra.append(f"backup of hostile names exited {backup.returncode}: {backup.stderr_lines()[-2:]}")
                before = tree_state(target)
                run = jobs.restore(prefix, "restore", "gitea-data", set_id, "--identity", str(jobs.identity), "--yes",
                                   name=f"hostile-{case['id']}-restore", env=env, timeout=CASE_TIMEOUT)
                if run.returncode == 0:
                    restored = tree_state(target / "gitea")
                    restored.pop(b"sentinel.txt", None)
                    if restored != tree_state(tree):
                        extra.append("the restored tree differs from the hostile source tree")
                elif tree_state(target) != before:
                    extra.append("a refused restore changed the target tree")
            else:
                root = hostile_mlflow_root(Path(rstack["MLFLOW_ROOT"]), case_dir / "mlflow", case_dir / "outside")
                env.update(BACKUP_COMPONENTS="mlflow", MLFLOW_ROOT=str(root))
                set_id, backup = jobs.backup(prefix, name=f"hostile-{case['id']}-backup", env=env, timeout=CASE_TIMEOUT)
                if backup.crash() or backup.returncode not in (0, 1, 3):
                    extra.append(f"backup exited {backup.returncode}: {backup.crash() or backup.stderr_lines()[-2:]}")
                keys = jobs.bucket.keys(f"{prefix}/{set_id}/")
                if any(re.search(r"[\x00-\x1f]|outside", k) for k in keys):
                    extra.append(f"unsafe or out-of-tree store stored: {[k for k in keys if 'outside' in k]}")
                if not any("mlflow/" in k for k in keys):
                    extra.append("no MLflow store with an ordinary name was backed up")
                run = jobs.restore(prefix, "verify", set_id, "--identity", str(jobs.identity),
                                   name=f"hostile-{case['id']}-verify", env=env, timeout=CASE_TIMEOUT)
        code = run.returncode
        stderr = run.stderr
        crash = run.crash()
        if crash:
            extra.append(crash)
        if code not in (0,) and not case.get("error") == "" and len(run.stderr_lines()) == 0:
            extra.append("failed without saying why on stderr")
    problems = list(extra)
    if code not in expected:
        problems.append(f"exit {code}, expected {case['exit']}")
    if case["error"] and not re.search(case["error"], stderr):
        last = [l for l in stderr.splitlines() if l.strip()][-2:]
        problems.append(f"error not matching /{case['error']}/: {last}")
    HANDLED[case["id"]] = not problems
    results.record("hostile-input", "bad inputs tried (catalogue cases)", len(HANDLED), "≥ 40")
    results.record("hostile-input", "handled: expected exit and one clear error line", sum(HANDLED.values()),
                   str(len(CASES)))
    results.record("hostile-input", "groups", ", ".join(sorted({c["group"] for c in CASES})))
    results.record("hostile-input", "crashes, Swift traps or hangs", sum(
        1 for k, v in HANDLED.items() if not v and k in CRASHED), "0")
    results.record("hostile-input", "cases not handled", ", ".join(k for k, v in HANDLED.items() if not v) or "none",
                   "none")
    if any(("crash" in p or "hung" in p or "signal" in p) for p in problems):
        CRASHED.add(case["id"])
        results.record("hostile-input", "crashes, Swift traps or hangs", len(CRASHED), "0")
    assert not problems, f"{case['id']}: " + "; ".join(problems)


CRASHED = set()

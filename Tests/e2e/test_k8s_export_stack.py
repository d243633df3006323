"""k8s-export against the local stack's Kubernetes API double, seeded by scripts/stack/seed.py:
the resource set backup.sh exports by default (K8S_RESOURCES and K8S_SECRET_NAME_REGEX of issue 7),
checked against the seed's own summary (STACK_DIR/seed-summary.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

PROJECTS = "kdlprojects.v1.project.konstellation.io"
USERTOOLS = "usertools.v1alpha1.kdl.konstellation.io"
SECRET_REGEX = "-ssh-keys$|^codeserver-oauth2-"


def export(bin_dir: Path, stack: dict, *args: str) -> subprocess.CompletedProcess:
    connection = ["--server", stack["K8S_SERVER"], "--token-file", stack["K8S_TOKEN_FILE"], "--ca-file", stack["K8S_CA_FILE"],
                  "--namespace", stack["K8S_NAMESPACE"]]
    return subprocess.run([str(bin_dir / "k8s-export"), *connection, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})


def test_the_default_kdl_set_matches_the_seed(bin_dir, stack, tmp_path):
    seed = json.loads((Path(stack["STACK_DIR"]) / "seed-summary.json").read_text())["k8s"]
    crs = export(bin_dir, stack, "--summary", PROJECTS, USERTOOLS)
    assert crs.returncode == 0, crs.stderr
    assert json.loads(crs.stderr.strip().splitlines()[-1]) == {PROJECTS: seed["objects"].get("kdlprojects", 0),
                                                               USERTOOLS: seed["objects"].get("usertools", 0)}
    docs = [d for d in yaml.safe_load_all(crs.stdout) if d]
    assert {d["kind"] for d in docs} == {"KDLProject", "UserTools"}
    assert all("status" not in d and "uid" not in d["metadata"] and "managedFields" not in d["metadata"] for d in docs)

    out = tmp_path / "secrets.yaml"
    secrets = export(bin_dir, stack, "--summary", "--name-regex", SECRET_REGEX, "-o", str(out), "secrets")
    assert secrets.returncode == 0, secrets.stderr
    exported = [d for d in yaml.safe_load_all(out.read_text()) if d]
    names = [d["metadata"]["name"] for d in exported]
    assert len(names) == seed["kdl_secrets"] and names == sorted(names)
    assert set(seed["ssh_key_secrets"]) <= set(names)
    assert not set(seed["unrelated_secrets"]) & set(names)
    assert all("ownerReferences" not in d["metadata"] for d in exported)

    validator = Path(sys.executable).parent / "kubernetes-validate"
    checked = subprocess.run([str(validator), "--strict", "-k", "1.29.0", str(out)], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(" passed for resource ") == len(exported)

"""k8s-export end to end: the release binary against the Kubernetes API test double
(Tests/fixtures/kube_api_double.py, HTTPS on 127.0.0.1 with its own CA and bearer tokens).

Each test starts its own double with the objects it needs, so fault hooks and expiring
continue tokens never touch the shared stack's double.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = ROOT / "Tests" / "fixtures" / "kube_api_double.py"
PYTHON = sys.executable
PROJECTS = "kdlprojects.v1.project.konstellation.io"
USERTOOLS = "usertools.v1alpha1.kdl.konstellation.io"
SECRET_REGEX = "-ssh-keys$|^codeserver-oauth2-"
SERVER_FIELDS = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences"}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def k8s_export(bin_dir) -> Path:
    binary = Path(bin_dir) / "k8s-export"
    if not binary.is_file():
        pytest.fail(f"k8s-export is not built at {binary} (set KDL_BIN_DIR)")
    return binary


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kdl_objects() -> dict:
    """What KDL's API and operators leave in the kdl namespace (KDL-FACTS.md), plus noise to leave out."""
    crds = [
        {"group": "project.konstellation.io", "version": "v1", "plural": "kdlprojects", "kind": "KDLProject"},
        {"group": "kdl.konstellation.io", "version": "v1alpha1", "plural": "usertools", "kind": "UserTools"},
    ]
    items = []
    for project in ["demo", "churn-model", "alpha"]:
        items.append({
            "apiVersion": "project.konstellation.io/v1", "kind": "KDLProject",
            "metadata": {
                "name": f"kdlproject-{project}", "namespace": "kdl", "labels": {"app": f"kdlproject-{project}"},
                "annotations": {LAST_APPLIED: json.dumps({"spec": {"projectId": project}})},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "kdl-server", "uid": "0b1c"}],
            },
            "spec": {"projectId": project, "mlflow": {"image": {"repository": "konstellation/kdl-mlflow", "tag": "v0.13.5"},
                                                       "volume": {"size": "1Gi", "storageClassName": "standard"}},
                     "filebrowser": {"enabled": True}},
            "status": {"phase": "Running"},
        })
    for user in ["alice", "bob", "carol-smith"]:
        items.append({
            "apiVersion": "kdl.konstellation.io/v1alpha1", "kind": "UserTools",
            "metadata": {"name": f"usertools-{user}", "namespace": "kdl", "labels": {"app": f"usertools-{user}"}},
            "spec": {"username": user, "usernameSlug": user, "vscode": {"enabled": True}},
        })
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"{user}-ssh-keys", "namespace": "kdl", "labels": {"app": "kdl-server"},
                                   "annotations": {LAST_APPLIED: "{}"}},
                      "data": {"KDL_USER_PRIVATE_SSH_KEY": b64(f"-----BEGIN OPENSSH PRIVATE KEY-----\nkey-of-{user}\n"),
                               "KDL_USER_PUBLIC_SSH_KEY": b64(f"ssh-ed25519 AAAA{user} {user}@kdl")}})
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"codeserver-oauth2-secrets-{user}", "namespace": "kdl"},
                      "data": {"DEPLOYMENT_SECRET_NAME": b64(f"codeserver-oauth2-credentials-{user}"),
                               "GITEA_REDIRECT_URIS": b64(f"https://{user}-code.kdl.local/oauth2/callback"),
                               "GITEA_APPLICATION_NAME": b64(f"codeserver-app-{user}")}})
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"codeserver-oauth2-credentials-{user}", "namespace": "kdl"},
                      "data": {"OAUTH2_PROXY_CLIENT_SECRET": b64(f"client-secret-of-{user}")}})
    items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "postgres", "namespace": "kdl"},
                  "data": {"POSTGRES_DB": b64("gitea"), "POSTGRES_PASSWORD": b64("pg-password-never-exported")}})
    items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "dave-ssh-keys", "namespace": "other"},
                  "data": {"KDL_USER_PRIVATE_SSH_KEY": b64("other-namespace-key")}})
    items.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kdl-server", "namespace": "kdl"},
                  "data": {"DOMAIN": "kdl.local", "yes": "no", "port": "0777", "multi": "line1\nline2\n"}})
    return {"crds": crds, "items": items}


def many_secrets(count: int) -> dict:
    return {"crds": [], "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": f"user{i:05d}-ssh-keys", "namespace": "kdl", "labels": {"app": "kdl-server"}},
         "data": {"KDL_USER_PRIVATE_SSH_KEY": b64(f"private-key-{i:05d}" * 8), "KDL_USER_PUBLIC_SSH_KEY": b64(f"ssh-ed25519 pub{i}")}}
        for i in range(count)]}


class Double:
    """One running kube_api_double.py with its state folder."""

    def __init__(self, directory: Path, process: subprocess.Popen):
        self.dir = directory
        self.process = process
        self.port = int((directory / "port").read_text())
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca = directory / "ca.crt"
        self.token = directory / "token"
        self.limited = directory / "token-limited"

    def flags(self, token: Path | None = None) -> list[str]:
        return ["--server", self.server, "--token-file", str(token or self.token), "--ca-file", str(self.ca)]

    def requests(self) -> list[dict]:
        log = self.dir / "requests.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def lists(self, plural: str) -> list[dict]:
        return [r for r in self.requests() if r["path"].endswith("/" + plural)]

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        context = ssl.create_default_context(cafile=str(self.ca))
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.token.read_text().strip(), "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def start_double(tmp_path_factory):
    started: list[Double] = []

    def start(objects: dict, *extra: str) -> Double:
        directory = tmp_path_factory.mktemp("kube-double")
        objects_file = directory / "objects.json"
        objects_file.write_text(json.dumps(objects))
        process = subprocess.Popen(
            [PYTHON, str(DOUBLE), "--port", "0", "--dir", str(directory), "--objects", str(objects_file), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not (directory / "port").exists():
            if process.poll() is not None:
                pytest.fail(f"the API double exited: {process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("the API double did not start within 30 s")
            time.sleep(0.05)
        double = Double(directory, process)
        started.append(double)
        return double

    yield start
    for double in started:
        double.process.terminate()
        try:
            double.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            double.process.kill()


@pytest.fixture(scope="module")
def kdl(start_double) -> Double:
    return start_double(kdl_objects())


@pytest.fixture(scope="module")
def big(start_double) -> Double:
    return start_double(many_secrets(2500))


def run(binary: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    return subprocess.run([str(binary), *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout)


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def names(docs: list[dict]) -> list[str]:
    return [doc["metadata"]["name"] for doc in docs]


# ---------------------------------------------------------------------------------------------
# The default KDL resource set


def test_default_kdl_resource_set_is_exported_clean_for_reapply(k8s_export, kdl, tmp_path):
    out = tmp_path / "crs.yaml"
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "-o", str(out), PROJECTS, USERTOOLS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    docs = documents(out.read_text())
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("KDLProject", "kdlproject-alpha"), ("KDLProject", "kdlproject-churn-model"), ("KDLProject", "kdlproject-demo"),
        ("UserTools", "usertools-alice"), ("UserTools", "usertools-bob"), ("UserTools", "usertools-carol-smith")]
    for doc in docs:
        assert set(doc["metadata"]) <= {"name", "namespace", "labels", "annotations"}, doc["metadata"]
        assert not SERVER_FIELDS & set(doc["metadata"])
        assert "status" not in doc
        assert LAST_APPLIED not in doc["metadata"].get("annotations", {})
    demo = docs[2]
    assert demo["apiVersion"] == "project.konstellation.io/v1"
    assert demo["metadata"]["labels"] == {"app": "kdlproject-demo"}
    assert demo["spec"]["mlflow"]["image"]["tag"] == "v0.13.5"
    assert demo["spec"]["filebrowser"]["enabled"] is True
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [r["query"] for r in kdl.lists("kdlprojects")][-1] == "limit=500"


def test_kdl_secrets_by_name_regex_with_their_data(k8s_export, kdl):
    result = run(k8s_export, *kdl.flags(), "--namespace", "kdl", "--name-regex", "-ssh-keys$", "secrets")
    assert result.returncode == 0, result.stderr
    docs = documents(result.stdout)
    assert names(docs) == ["alice-ssh-keys", "bob-ssh-keys", "carol-smith-ssh-keys"]  # not the other namespace's
    for doc in docs:
        assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret" and doc["type"] == "Opaque"
        user = doc["metadata"]["name"].removesuffix("-ssh-keys")
        key = base64.b64decode(doc["data"]["KDL_USER_PRIVATE_SSH_KEY"]).decode()
        assert key == f"-----BEGIN OPENSSH PRIVATE KEY-----\nkey-of-{user}\n"
        assert "annotations" not in doc["metadata"]  # only last-applied was there

    result = run(k8s_export, *kdl.flags(), "-n", "kdl", f"--name-regex={SECRET_REGEX}", "secrets")
    assert result.returncode == 0, result.stderr
    exported = names(documents(result.stdout))
    assert len(exported) == 9 and "postgres" not in exported
    assert exported == sorted(exported)


def test_yaml_and_json_formats_hold_the_same_objects(k8s_export, kdl):
    as_yaml = run(k8s_export, *kdl.flags(), "-n", "kdl", "secrets", "configmaps", PROJECTS)
    as_json = run(k8s_export, *kdl.flags(), "-n", "kdl", "--format", "json", "secrets", "configmaps", PROJECTS)
    assert as_yaml.returncode == 0 and as_json.returncode == 0, as_yaml.stderr + as_json.stderr
    listed = json.loads(as_json.stdout)
    assert listed["apiVersion"] == "v1" and listed["kind"] == "List"
    assert documents(as_yaml.stdout) == listed["items"]
    config = next(d for d in listed["items"] if d["kind"] == "ConfigMap")
    assert config["data"] == {"DOMAIN": "kdl.local", "yes": "no", "port": "0777", "multi": "line1\nline2\n"}


def test_every_exported_core_object_is_valid_under_kubernetes_validate_strict(k8s_export, kdl, tmp_path):
    out = tmp_path / "core.yaml"
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "-o", str(out), "secrets", "configmaps")
    assert result.returncode == 0, result.stderr
    docs = documents(out.read_text())
    assert {d["kind"] for d in docs} == {"Secret", "ConfigMap"} and len(docs) == 11
    validator = Path(PYTHON).parent / "kubernetes-validate"
    checked = subprocess.run([str(validator), "--strict", "-k", "1.29.0", str(out)], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(" passed for resource ") == 11, checked.stdout
    # The validator is strict indeed: the same Secret with one unknown field fails.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**docs[0], "bogusField": 1}))
    refused = subprocess.run([str(validator), "--strict", "-k", "1.29.0", str(bad)], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0, refused.stdout


def test_repeated_exports_are_byte_identical(k8s_export, kdl, tmp_path):
    outputs = []
    for attempt in range(2):
        for fmt in ("yaml", "json"):
            out = tmp_path / f"{attempt}.{fmt}"
            result = run(k8s_export, *kdl.flags(), "-n", "kdl", "--format", fmt, "-o", str(out), PROJECTS, USERTOOLS, "secrets")
            assert result.returncode == 0, result.stderr
            outputs.append(out.read_bytes())
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert len(outputs[0]) > 1000


# ---------------------------------------------------------------------------------------------
# Pagination and continue tokens


def test_pagination_over_2500_objects(k8s_export, big):
    before = len(big.lists("secrets"))
    result = run(k8s_export, *big.flags(), "-n", "kdl", "--format", "json", "--summary", "secrets")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    exported = names(items)
    assert len(exported) == 2500 and len(set(exported)) == 2500 and exported == sorted(exported)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"secrets": 2500}
    pages = big.lists("secrets")[before:]
    assert len(pages) == 5
    assert all("limit=500" in p["query"] for p in pages)
    assert ["continue=" in p["query"] for p in pages] == [False, True, True, True, True]


def test_an_expired_continue_token_restarts_the_list_once(k8s_export, start_double):
    # Tokens live 1 s; the first two list requests are held 2 s, so the second page's token is stale
    # when it arrives (410); the restarted list runs at full speed and completes.
    double = start_double(many_secrets(1200), "--continue-ttl", "1")
    double.admin("POST", "/_double/faults", {"kind": "slow", "match": "/secrets", "count": 2, "delay": 2})
    result = run(k8s_export, *double.flags(), "-n", "kdl", "--summary", "secrets")
    assert result.returncode == 0, result.stderr
    exported = names(documents(result.stdout))
    assert len(exported) == 1200 and len(set(exported)) == 1200 and exported == sorted(exported)
    statuses = [r["status"] for r in double.lists("secrets")]
    assert statuses.count(410) == 1, statuses
    assert "410 Gone" in result.stderr
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"secrets": 1200}


def test_a_continue_token_expiring_again_is_a_temporary_failure(k8s_export, start_double, tmp_path):
    double = start_double(many_secrets(600), "--continue-ttl", "0")
    out = tmp_path / "secrets.yaml"
    result = run(k8s_export, *double.flags(), "-n", "kdl", "-o", str(out), "secrets")
    assert result.returncode == 75, result.stderr
    assert "expired again" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert [r["status"] for r in double.lists("secrets")] == [200, 410, 200, 410]


# ---------------------------------------------------------------------------------------------
# Errors


def test_a_missing_crd_is_a_warning_and_the_others_still_export(k8s_export, kdl):
    missing = "notebooks.v1.kdl.konstellation.io"
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "--summary", PROJECTS, missing, "secrets")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "level=warn" in line]
    assert len(warnings) == 1 and f"resource={missing}" in warnings[0]
    kinds = {d["kind"] for d in documents(result.stdout)}
    assert kinds == {"KDLProject", "Secret"}
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {PROJECTS: 3, missing: 0, "secrets": 10}


def test_forbidden_secrets_exit_77_naming_verb_resource_and_namespace(k8s_export, kdl, tmp_path):
    out = tmp_path / "secrets.yaml"
    out.write_text("previous export\n")
    result = run(k8s_export, *kdl.flags(kdl.limited), "-n", "kdl", "-o", str(out), PROJECTS, "secrets")
    assert result.returncode == 77, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("k8s-export:")]
    assert len(errors) == 1
    assert "cannot list secrets in namespace kdl" in errors[0] and "403" in errors[0]
    assert out.read_text() == "previous export\n"  # untouched: the export did not complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.yaml"]


def test_an_unknown_token_exits_77(k8s_export, kdl, tmp_path):
    bogus = tmp_path / "token"
    bogus.write_text("not-a-valid-token-0000\n")
    result = run(k8s_export, *kdl.flags(bogus), "-n", "kdl", PROJECTS)
    assert result.returncode == 77, result.stderr
    assert "401" in result.stderr and f"cannot list {PROJECTS} in namespace kdl" in result.stderr
    assert "not-a-valid-token-0000" not in result.stderr


def test_a_broken_filter_exits_64_with_jqs_message_before_any_request(k8s_export, kdl):
    before = len(kdl.requests())
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "--filter", "del(.metadata.uid", "secrets")
    assert result.returncode == 64
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "jq program does not compile" in lines[0] and "syntax error" in lines[0]
    assert result.stdout == ""
    assert len(kdl.requests()) == before


def test_a_custom_filter_file_replaces_the_default(k8s_export, kdl, tmp_path):
    program = tmp_path / "names.jq"
    program.write_text("{apiVersion: $apiVersion, kind: $kind, metadata: {name: .metadata.name}}\n")
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "--filter-file", str(program), "--format", "json", USERTOOLS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"][0] == {"apiVersion": "kdl.konstellation.io/v1alpha1", "kind": "UserTools",
                                                     "metadata": {"name": "usertools-alice"}}


def test_server_errors_are_retried(k8s_export, start_double):
    double = start_double(kdl_objects(), "--fault", "500:2:/secrets")
    result = run(k8s_export, *double.flags(), "-n", "kdl", "--retries", "3", "secrets")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in double.lists("secrets")] == [500, 500, 200]
    assert result.stderr.count("retrying") == 2


def test_a_cut_off_page_is_one_clear_error(k8s_export, start_double):
    double = start_double(kdl_objects(), "--fault", "malformed:1:/secrets")
    result = run(k8s_export, *double.flags(), "-n", "kdl", "secrets")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("k8s-export:")]
    assert len(errors) == 1 and "not a list" in errors[0]
    assert "Fatal error" not in result.stderr


def test_an_unreachable_server_exits_69_after_retries(k8s_export, kdl):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = run(k8s_export, "--server", f"https://127.0.0.1:{port}", "--token-file", str(kdl.token), "--ca-file", str(kdl.ca),
                 "--retries", "2", "secrets")
    assert result.returncode == 69, result.stderr
    assert result.stderr.count("retrying") == 2
    assert result.stderr.strip().splitlines()[-1].startswith("k8s-export: API server unavailable")
    assert time.monotonic() - started < 30


def test_an_untrusted_server_certificate_is_refused(k8s_export, kdl, tmp_path):
    other_ca = tmp_path / "ca.crt"
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", other_ca)
    result = run(k8s_export, *kdl.flags()[:4], "--ca-file", str(other_ca), "--retries", "0", "secrets")
    assert result.returncode != 0
    assert "k8s-export:" in result.stderr and "certificate" in result.stderr.lower()


def test_secret_data_and_tokens_never_reach_stderr(k8s_export, kdl):
    result = run(k8s_export, *kdl.flags(), "-n", "kdl", "--summary", "--filter", ".data.KDL_USER_PRIVATE_SSH_KEY | tonumber", "secrets")
    assert result.returncode == 1
    assert "alice-ssh-keys" in result.stderr  # names the object...
    stdout = run(k8s_export, *kdl.flags(), "-n", "kdl", "secrets", "--summary")
    leaked = [value for doc in documents(stdout.stdout) for value in doc.get("data", {}).values()]
    leaked.append(kdl.token.read_text().strip())
    for stderr in (result.stderr, stdout.stderr):
        for value in leaked:
            assert value[:12] not in stderr  # ...but never its data or the token


# ---------------------------------------------------------------------------------------------
# Connection paths


def test_in_cluster_service_account_path_and_token_rotation(k8s_export, kdl, tmp_path):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    shutil.copy(kdl.token, account / "token")
    shutil.copy(kdl.ca, account / "ca.crt")
    (account / "namespace").write_text("kdl")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kdl.port),
           "K8S_EXPORT_SERVICEACCOUNT_DIR": str(account)}
    in_cluster = run(k8s_export, PROJECTS, "secrets", env=env)
    flagged = run(k8s_export, *kdl.flags(), "-n", "kdl", PROJECTS, "secrets")
    assert in_cluster.returncode == 0, in_cluster.stderr
    assert in_cluster.stdout == flagged.stdout and "kind: Secret" in in_cluster.stdout

    shutil.copy(kdl.limited, account / "token")  # the projected token rotated: read afresh
    rotated = run(k8s_export, "secrets", env=env)
    assert rotated.returncode == 77 and "cannot list secrets in namespace kdl" in rotated.stderr


def test_kubeconfig_path_with_inline_ca_and_token(k8s_export, kdl, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kdl",
        "clusters": [{"name": "double", "cluster": {"server": kdl.server,
                                                    "certificate-authority-data": base64.b64encode(kdl.ca.read_bytes()).decode()}}],
        "contexts": [{"name": "kdl", "context": {"cluster": "double", "user": "backup", "namespace": "kdl"}},
                     {"name": "limited", "context": {"cluster": "double", "user": "limited", "namespace": "kdl"}}],
        "users": [{"name": "backup", "user": {"token": kdl.token.read_text().strip()}},
                  {"name": "limited", "user": {"tokenFile": str(kdl.limited)}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    via_kubeconfig = run(k8s_export, "--kubeconfig", str(path), PROJECTS, USERTOOLS, "secrets", env={"TMPDIR": str(scratch)})
    flagged = run(k8s_export, *kdl.flags(), "-n", "kdl", PROJECTS, USERTOOLS, "secrets")
    assert via_kubeconfig.returncode == 0, via_kubeconfig.stderr
    assert via_kubeconfig.stdout == flagged.stdout
    assert list(scratch.iterdir()) == []  # the CA written from certificate-authority-data is gone

    limited = run(k8s_export, "--kubeconfig", str(path), "--context", "limited", "secrets", env={"TMPDIR": str(scratch)})
    assert limited.returncode == 77
    assert list(scratch.iterdir()) == []


def test_without_any_connection_it_is_a_usage_error(k8s_export):
    result = run(k8s_export, "secrets")
    assert result.returncode == 64
    assert result.stderr.strip() == ("k8s-export: no API server: not in a pod (KUBERNETES_SERVICE_HOST is not set); "
                                     "give --kubeconfig FILE or --server URL")


def test_no_resource_and_unknown_options_are_usage_errors(k8s_export):
    result = run(k8s_export)
    assert result.returncode == 64 and "give at least one RESOURCE" in result.stderr
    result = run(k8s_export, "--no-such-option", "secrets")
    assert result.returncode == 64 and "--no-such-option" in result.stderr


def test_print_default_filter_shows_the_clean_up(k8s_export):
    result = run(k8s_export, "--print-default-filter")
    assert result.returncode == 0
    for field in ["uid", "resourceVersion", "managedFields", "ownerReferences", LAST_APPLIED, ".status", "$apiVersion"]:
        assert field in result.stdout

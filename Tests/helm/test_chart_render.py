"""Renders helm/kdl-server for each values file under Tests/helm/values and checks what matters:
lint clean, every manifest valid for Kubernetes 1.29-1.34, credentials only from Secrets,
least-privilege RBAC, hardened pods, the right volumes, schedule and environment (issue 7's table)."""

from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest

from chart_support import (
    CHART_DIR,
    KUBE_VERSIONS,
    NAMESPACE,
    VALUES_DIR,
    Rendered,
    env_of,
    pod_spec,
    read_values,
    render,
    secret_data,
    workloads,
)

VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BACKUP_S3_BUCKET", "PGPASSWORD", "MONGO_URI"}
AGE_1 = "age1mt9wknqjkvw6xy7rkjau9zc9a0pdkpnua8epqf50tx4dfsnjrcqqq69n7m"
AGE_2 = "age108f9hws4jaz3ud0svqdm0lrd2sl3v0na9jja48lcyxcs0smq9u6q6awle0"


def test_matrix_is_complete():
    assert {path.stem for path in VALUES_FILES} >= {
        "defaults", "original", "minimal", "all-features", "existing-secret", "irsa",
    }


@pytest.fixture(scope="module", params=VALUES_FILES, ids=lambda path: path.stem)
def case(request, chart):
    path: Path = request.param
    values = read_values(path)
    return path, values, render(chart, values)


# --- every values file -----------------------------------------------------------------------


def test_lint_strict_is_clean(case):
    path, values, _ = case
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"{path.name} on {version}: {problems}"
        # Only the icon suggestion (severity 1) is left: the chart ships no icon of its own.
        assert [m["error"] for m in report["messages"]] in ([], ["icon is recommended"])


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_are_valid_kubernetes(case, version):
    path, _, rendered = case
    assert rendered.objects, f"{path.name} rendered nothing"
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(
                f"{path.name}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: "
                f"{error.message} at {list(error.path)}"
            ) from None


def test_every_object_is_namespaced_and_labelled(case):
    _, _, rendered = case
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE, obj["kind"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "kdl-server"
        assert labels["app.kubernetes.io/instance"] == "kdl"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] in {"backup", "verify", "restore"}
        assert obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "Namespace", "PersistentVolume"}


def test_pods_are_hardened(case):
    _, _, rendered = case
    assert list(workloads(rendered))
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert (pod_sc["runAsUser"], pod_sc["runAsGroup"]) == (1000, 1000)
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["restartPolicy"] == "Never"
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert env_of(container)["TMPDIR"]["value"] == "/tmp"
        for key in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][key]), key


def test_credentials_come_only_from_secrets(case):
    path, values, rendered = case
    secret_names = {obj["metadata"]["name"] for obj in rendered.all("Secret")}
    literals = _secret_literals(values)
    for obj in workloads(rendered):
        (container,) = pod_spec(obj)["containers"]
        for name, entry in env_of(container).items():
            if name in SECRET_ENV or name.startswith("NOTIFY_"):
                assert "value" not in entry, f"{path.name}: {name} is a literal"
                assert "secretKeyRef" in entry["valueFrom"], name
            text = str(entry.get("value", ""))
            for literal in literals:
                assert literal not in text, f"{path.name}: a secret value is literal in {name}"
        for source in container.get("envFrom", []):
            assert set(source) == {"secretRef"}
        assert not any("configMapRef" in source for source in container.get("envFrom", []))
        assert "args" not in container or not any(lit in " ".join(container["args"]) for lit in literals)
    # Nothing secret anywhere outside a Secret's data.
    non_secret_text = "\n".join(str(obj) for obj in rendered.objects if obj["kind"] != "Secret")
    for literal in literals:
        assert literal not in non_secret_text, f"{path.name}: a secret value leaked outside a Secret"
    assert secret_names.isdisjoint({"postgres"}), "the platform's postgres Secret must not be rendered"


def test_rbac_is_namespaced_get_list_only(case):
    path, values, rendered = case
    backup = values["backup"]
    restore_pod = backup.get("restorePod", {}).get("enabled", False)
    for role in rendered.all("Role"):
        # Only while the ad-hoc restore pod is enabled may the account apply what it exports.
        writes = role["metadata"]["name"].endswith("-restore")
        assert not writes or restore_pod, f"{path.name}: a write Role without the restore pod"
        for rule in role["rules"]:
            expected = ["create", "patch", "update"] if writes else ["get", "list"]
            assert rule["verbs"] == expected, f"{path.name}: {rule}"
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        binding = rendered.get("RoleBinding", role["metadata"]["name"])
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
        }
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
    kubernetes_on = backup.get("components", {}).get("kubernetes", {}).get("enabled", True)
    rbac_on = backup.get("rbac", {}).get("create", True)
    assert len(rendered.all("Role")) == ((2 if restore_pod else 1) if kubernetes_on and rbac_on else 0)
    if restore_pod and kubernetes_on and rbac_on:
        read = next(r for r in rendered.all("Role") if not r["metadata"]["name"].endswith("-restore"))
        write = next(r for r in rendered.all("Role") if r["metadata"]["name"].endswith("-restore"))
        kinds = lambda role: {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        assert kinds(write) == kinds(read), "the restore Role writes exactly the exported kinds"
    for sa in rendered.all("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        expected = kubernetes_on and component in {"backup", "restore"}
        assert spec["automountServiceAccountToken"] is expected, f"{path.name}: {obj['metadata']['name']}"


def test_backup_env_follows_the_contract(case):
    """Issue 7's table: the variables backup.sh reads, set from the values."""
    path, values, rendered = case
    backup = values["backup"]
    cronjob = _backup_cronjob(rendered)
    (container,) = pod_spec(cronjob)["containers"]
    env = env_of(container)
    components = [c for c in ("gitea", "mongodb", "mlflow", "kubernetes")
                  if backup.get("components", {}).get(c, {}).get("enabled", True)]
    if backup.get("minio", {}).get("enabled"):
        components.append("minio")
        assert env["MINIO_ENDPOINT"]["value"] == backup["minio"]["endpoint"]
    else:
        assert "MINIO_ENDPOINT" not in env
    assert env["BACKUP_COMPONENTS"]["value"] == " ".join(components)
    assert env["BACKUP_S3_BUCKET"]["valueFrom"]["secretKeyRef"]["key"] == "BUCKET_NAME"
    assert env["BACKUP_S3_PREFIX"]["value"] == backup.get("s3", {}).get("prefix", "kdl-backup")
    assert env["K8S_NAMESPACE"]["value"] == NAMESPACE if "kubernetes" in components else "K8S_NAMESPACE" not in env
    if "gitea" in components:
        assert env["GITEA_DATA_DIR"]["value"] == "/data"
        for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
            assert env[name]["value"]
        assert set(env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    else:
        assert "PGHOST" not in env and "GITEA_DATA_DIR" not in env
    recipients = backup.get("encryption", {}).get("ageRecipients", [])
    if recipients:
        assert env["BACKUP_AGE_RECIPIENTS"]["value"].split() == recipients
    else:
        assert "BACKUP_AGE_RECIPIENTS" not in env
    assert env["BACKUP_KEEP_LAST"]["value"] == str(backup.get("retention", {}).get("keepLast", 8))
    assert container["command"] == ["/usr/local/bin/backup.sh"]


def test_volumes(case):
    """Gitea's claim read-only at /data; MLflow's volume read-only at mlflow.path; the restore pod writes."""
    path, values, rendered = case
    backup = values["backup"]
    for obj in workloads(rendered):
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = pod_spec(obj)
        (container,) = spec["containers"]
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert {m["name"] for m in mounts.values()} <= set(volumes), "a mount without its volume"
        if component == "verify":
            assert set(mounts) <= {"/tmp", "/var/run/secrets/kdl-backup/identity"}
            continue
        read_only = component == "backup"
        if backup.get("components", {}).get("gitea", {}).get("enabled", True):
            claim = volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]
            assert claim["claimName"] == backup.get("gitea", {}).get("existingClaim", "gitea-pvc-gitea-0")
            assert mounts["/data"]["readOnly"] is read_only
            assert claim["readOnly"] is read_only
        else:
            assert "/data" not in mounts
        mlflow = backup.get("mlflow", {})
        path_in_pod = mlflow.get("path", "/shared-volume")
        if mlflow.get("hostPath"):
            assert volumes[mounts[path_in_pod]["name"]]["hostPath"] == {"path": mlflow["hostPath"], "type": "Directory"}
        elif mlflow.get("existingClaim"):
            assert volumes[mounts[path_in_pod]["name"]]["persistentVolumeClaim"]["claimName"] == mlflow["existingClaim"]
        if path_in_pod in mounts:
            assert mounts[path_in_pod]["readOnly"] is read_only
            assert _env(container, "MLFLOW_ROOT") == path_in_pod
        for extra in backup.get("extraVolumeMounts", []):
            assert mounts[extra["mountPath"]] == extra
        for extra in backup.get("extraVolumes", []):
            assert volumes[extra["name"]] == extra


def test_network_policy_denies_ingress_to_every_pod(case):
    _, values, rendered = case
    policies = rendered.all("NetworkPolicy")
    if values["backup"].get("networkPolicy", {}).get("enabled", True) is False:
        assert policies == []
        return
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == []
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for obj in workloads(rendered):
        labels = (obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
                  if obj["kind"] == "CronJob" else obj["metadata"]["labels"])
        assert selector.items() <= labels.items(), obj["metadata"]["name"]


def test_schedule_and_job_settings(case):
    path, values, rendered = case
    backup = values["backup"]
    cronjob = _backup_cronjob(rendered)
    spec = cronjob["spec"]
    assert spec["schedule"] == backup.get("schedule", "0 1 * * 0")
    assert spec["concurrencyPolicy"] == backup.get("concurrencyPolicy", "Forbid")
    assert spec["suspend"] is backup.get("suspend", False)
    assert spec.get("timeZone") == (backup.get("timeZone") or None)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == backup.get("backoffLimit", 1)
    assert job.get("ttlSecondsAfterFinished") == backup.get("ttlSecondsAfterFinished")
    assert len(cronjob["metadata"]["name"]) <= 52


def test_notes_say_how_to_run_and_warn(case):
    path, values, rendered = case
    backup = values["backup"]
    name = _backup_cronjob(rendered)["metadata"]["name"]
    assert f"kubectl -n {NAMESPACE} create job --from=cronjob/{name} " in rendered.notes
    assert f"kubectl -n {NAMESPACE} logs -f job/" in rendered.notes
    assert "restore.sh list" in rendered.notes
    s3 = backup.get("s3", {})
    placeholders = not s3.get("existingSecret") and s3.get("bucketName", "s3-bucket-name") == "s3-bucket-name"
    assert ("placeholder values" in rendered.notes) is placeholders, path.name
    unencrypted = not backup.get("encryption", {}).get("ageRecipients")
    assert ("no backup.encryption.ageRecipients" in rendered.notes) is unencrypted, path.name


# --- one values file each --------------------------------------------------------------------


def _render_file(chart, stem: str) -> tuple[dict, Rendered]:
    values = read_values(VALUES_DIR / f"{stem}.yaml")
    return values, render(chart, values)


def test_defaults(chart):
    _, rendered = _render_file(chart, "defaults")
    assert rendered.names() == [
        "CronJob/backup", "CronJob/backup-verify", "NetworkPolicy/backup", "Pod/backup-preflight", "Role/backup",
        "RoleBinding/backup", "Secret/backup-secrets", "ServiceAccount/backup",
    ]
    cronjob = rendered.get("CronJob", "backup")
    (container,) = pod_spec(cronjob)["containers"]
    assert container["image"] == "konstellation/kdl-backup:0.1.0"
    env = env_of(container)
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres", "key": "POSTGRES_PASSWORD"}
    assert (env["PGHOST"]["value"], env["PGPORT"]["value"], env["PGDATABASE"]["value"]) == ("postgres", "5432", "gitea")
    assert env["GITEA_DATA_EXCLUDE"]["value"] == "gitea/indexers ssh lost+found"
    assert env["BACKUP_PG_DUMP_COMPRESS"]["value"] == "1"
    assert env["K8S_SECRET_NAME_REGEX"]["value"] == "-ssh-keys$|^codeserver-oauth2-|^kdl-server-oauth2-credentials$|^drone-oauth2-credentials$"
    assert env["BACKUP_PLATFORM"]["value"] == "auto" and "K8S_RESOURCES" not in env  # the platform's resources
    assert "MONGO_URI" not in env and "mongodb component is enabled but" in rendered.notes
    assert "nothing is mounted at /shared-volume" in rendered.notes
    assert secret_data(rendered.get("Secret", "backup-secrets")) == {
        "AWS_ACCESS_KEY_ID": "aws-access-key-id",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
        "BUCKET_NAME": "s3-bucket-name",
    }
    rules = rendered.get("Role", "backup")["rules"]
    assert {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("", "secrets"), ("project.konstellation.io", "kdlprojects"), ("kdl.konstellation.io", "usertools"),
        ("kdl.konstellation.io", "kdlprojects"), ("kdl.konstellation.io", "kdlusertools"),
    }


def test_helm_test_hook_runs_the_preflight_with_the_jobs_settings(chart):
    _, rendered = _render_file(chart, "all-features")
    hook = rendered.get("Pod", "kdl-backup-preflight")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod_spec(hook)
    job = pod_spec(rendered.get("CronJob", "kdl-backup"))
    (container,), (job_container,) = spec["containers"], job["containers"]
    assert container["command"] == ["/usr/local/bin/backup.sh", "--preflight"]
    assert (container["env"], container.get("envFrom"), container["volumeMounts"]) == (
        job_container["env"], job_container.get("envFrom"), job_container["volumeMounts"])
    assert (spec["volumes"], spec["serviceAccountName"], spec["restartPolicy"]) == (job["volumes"], job["serviceAccountName"], "Never")


def test_kdl6_with_keycloak_and_a_volume(chart):
    rendered = render(chart, {"backup": {
        "enabled": True, "platform": "kdl6",
        "postgres": {"databases": [{"name": "keycloak", "host": "keycloak-postgresql.keycloak", "port": 5432, "user": "bn_keycloak",
                                    "existingSecret": "keycloak-postgresql", "passwordKey": "password"}]},
        "volumes": [{"name": "drone", "existingClaim": "drone-pvc", "exclude": ["cache", "tmp"]},
                    {"name": "shared", "hostPath": "/srv/shared"}]}})
    spec = pod_spec(rendered.get("CronJob", "backup"))
    env = env_of(spec["containers"][0])
    plain = {name: entry.get("value") for name, entry in env.items()}
    assert plain["BACKUP_PLATFORM"] == "kdl6"
    assert plain["BACKUP_COMPONENTS"] == "mongodb mlflow kubernetes postgres volumes"  # no Gitea on KDL 6
    assert not {"PGHOST", "PGPASSWORD", "GITEA_DATA_DIR"} & set(env)
    assert (plain["BACKUP_POSTGRES_DATABASES"], plain["PG_KEYCLOAK_HOST"], plain["PG_KEYCLOAK_PORT"], plain["PG_KEYCLOAK_USER"]) == (
        "keycloak", "keycloak-postgresql.keycloak", "5432", "bn_keycloak")
    assert env["PG_KEYCLOAK_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "keycloak-postgresql", "key": "password"}
    assert "BACKUP_PG_DUMP_COMPRESS" in plain
    assert plain["BACKUP_VOLUMES"] == "drone=/volumes/drone shared=/volumes/shared"
    assert plain["BACKUP_VOLUME_DRONE_EXCLUDE"] == "cache tmp" and "BACKUP_VOLUME_SHARED_EXCLUDE" not in plain
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "gitea-data" not in volumes
    assert volumes["volume-drone"]["persistentVolumeClaim"] == {"claimName": "drone-pvc", "readOnly": True}
    assert volumes["volume-shared"]["hostPath"] == {"path": "/srv/shared", "type": "Directory"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["volume-drone"] == {"name": "volume-drone", "mountPath": "/volumes/drone", "readOnly": True}


def test_minio_renders_its_env_credentials_and_ca(chart):
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    rendered = render(chart, {"backup": {"enabled": True, "minio": {
        "enabled": True, "endpoint": "https://minio.minio:9000", "existingSecret": "kdl-minio", "buckets": ["churn", "sales-forecast"],
        "excludeRegex": "-backup-[0-9]+$", "fullEvery": 4, "caBundle": ca}}})
    spec = pod_spec(rendered.get("CronJob", "backup"))
    env = env_of(spec["containers"][0])
    plain = {name: entry.get("value") for name, entry in env.items()}
    assert plain["BACKUP_COMPONENTS"].split()[-1] == "minio"
    assert (plain["MINIO_ENDPOINT"], plain["MINIO_BUCKETS"], plain["MINIO_EXCLUDE_REGEX"], plain["BACKUP_MINIO_FULL_EVERY"]) == (
        "https://minio.minio:9000", "churn sales-forecast", "-backup-[0-9]+$", "4")
    assert env["MINIO_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "kdl-minio", "key": "accessKey"}
    assert env["MINIO_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "kdl-minio", "key": "secretKey"}
    assert plain["MINIO_CA_FILE"] == "/etc/kdl-backup/minio-ca/ca.crt"
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["minio-ca"]["mountPath"] == "/etc/kdl-backup/minio-ca"
    assert rendered.get("ConfigMap", "backup-minio-ca")["data"]["ca.crt"].strip() == ca.strip()
    assert {v["name"]: v for v in spec["volumes"]}["minio-ca"]["configMap"] == {"name": "backup-minio-ca"}
    every_bucket = render(chart, {"backup": {"enabled": True, "minio": {"enabled": True, "endpoint": "http://kdl-minio:9000", "existingSecret": "s"}}})
    plain = {n: e.get("value") for n, e in env_of(pod_spec(every_bucket.get("CronJob", "backup"))["containers"][0]).items()}
    assert plain["MINIO_BUCKETS"] == "*" and "MINIO_CA_FILE" not in plain


def test_minio_without_endpoint_or_secret_fails_with_a_message(chart):
    with pytest.raises(Exception, match="backup.minio.enabled needs backup.minio.endpoint"):
        render(chart, {"backup": {"enabled": True, "minio": {"enabled": True, "endpoint": "http://kdl-minio:9000"}}})


def test_original_block_keeps_its_names(chart):
    _, rendered = _render_file(chart, "original")
    cronjob = rendered.get("CronJob", "backup-gitea")
    assert cronjob["spec"]["schedule"] == "0 1 * * 0"
    (container,) = pod_spec(cronjob)["containers"]
    assert container["image"] == "konstellation/kdl-backup:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"
    # The original Secret's keys, under the original's naming (<name>-secrets).
    assert set(secret_data(rendered.get("Secret", "backup-gitea-secrets"))) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BUCKET_NAME",
    }
    assert rendered.get("CronJob", "backup-gitea-verify")


def test_minimal(chart):
    _, rendered = _render_file(chart, "minimal")
    assert rendered.names() == ["CronJob/backup", "NetworkPolicy/backup", "Pod/backup-preflight", "Secret/backup-secrets"]
    spec = pod_spec(rendered.get("CronJob", "backup"))
    assert spec["serviceAccountName"] == "default"
    assert spec["automountServiceAccountToken"] is False
    env = env_of(spec["containers"][0])
    assert env["BACKUP_COMPONENTS"]["value"] == "gitea"
    assert not {"MONGO_URI", "MLFLOW_ROOT", "K8S_NAMESPACE", "K8S_RESOURCES"} & set(env)
    assert "mongodb component is enabled" not in rendered.notes and "mlflow component" not in rendered.notes


def test_all_features(chart):
    values, rendered = _render_file(chart, "all-features")
    cronjob = rendered.get("CronJob", "kdl-backup")
    assert cronjob["spec"]["timeZone"] == "Europe/Madrid"
    assert cronjob["spec"]["startingDeadlineSeconds"] == 120
    spec = pod_spec(cronjob)
    (container,) = spec["containers"]
    assert container["image"] == (
        "registry.example.com/konstellation/kdl-backup@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert spec["serviceAccountName"] == "kdl-backup-sa"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] == {
        "example.com/team": "data-platform",
    }
    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "8Gi"}
    env = env_of(container)
    plain = {name: entry.get("value") for name, entry in env.items()}
    assert plain["AWS_REGION"] == "eu-west-1"
    assert plain["AWS_ENDPOINT_URL_S3"] == "https://minio.kdl.svc:9000"
    assert plain["AWS_S3_FORCE_PATH_STYLE"] == "true"
    assert plain["BACKUP_S3_PREFIX"] == "clusters/prod"
    assert plain["BACKUP_S3_SSE"] == "AES256"
    assert plain["BACKUP_S3_STORAGE_CLASS"] == "STANDARD_IA"
    assert plain["BACKUP_REQUIRE_ENCRYPTION"] == "true"
    assert plain["BACKUP_AGE_RECIPIENTS"] == f"{AGE_1} {AGE_2}"
    assert (plain["BACKUP_KEEP_LAST"], plain["BACKUP_KEEP_DAYS"]) == ("12", "90")
    assert plain["GITEA_DATA_EXCLUDE"] == "gitea/indexers ssh lost+found gitea/queues"
    assert (plain["PGHOST"], plain["PGPORT"], plain["PGUSER"]) == ("postgres.kdl.svc", "5433", "gitea")
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "gitea-postgres", "key": "password"}
    assert plain["K8S_RESOURCES"].split() == values["backup"]["kubernetes"]["resources"]
    assert plain["K8S_SECRET_NAME_REGEX"] == "-ssh-keys$"
    assert plain["MONGO_DATABASES"] == "kdl admin"
    assert env["MONGO_URI"]["valueFrom"]["secretKeyRef"] == {"name": "kdl-backup-mongodb", "key": "MONGO_URI"}
    assert secret_data(rendered.get("Secret", "kdl-backup-mongodb"))["MONGO_URI"].startswith("mongodb://kdl:")
    assert container["envFrom"] == [{"secretRef": {"name": "kdl-backup-notifications"}}]
    assert secret_data(rendered.get("Secret", "kdl-backup-notifications")) == {
        "NOTIFY_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/s3cr3t-slack",
        "NOTIFY_WEBHOOK_URL": "https://alerts.example.com/kdl-backup",
        "NOTIFY_WEBHOOK_SECRET": "s3cr3t-hmac",
        "NOTIFY_SMTP_URL": "smtp://smtp.example.com:587",
        "NOTIFY_SMTP_USER": "backup",
        "NOTIFY_SMTP_PASSWORD": "s3cr3t-smtp",
        "NOTIFY_MAIL_FROM": "kdl-backup@example.com",
        "NOTIFY_MAIL_TO": "ops@example.com, data@example.com",
        "NOTIFY_PUSHGATEWAY_URL": "http://prometheus-pushgateway.monitoring:9091",
        "NOTIFY_HEALTHCHECK_URL": "https://hc-ping.com/s3cr3t-uuid",
        "NOTIFY_VERIFY_HEALTHCHECK_URL": "https://hc-ping.com/s3cr3t-verify-uuid",
    }
    rules = rendered.get("Role", "kdl-backup")["rules"]
    assert {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("", "secrets"), ("project.konstellation.io", "kdlprojects"),
        ("kdl.konstellation.io", "usertools"), ("kdl.konstellation.io", "runtimes"),
    }
    assert rendered.get("ServiceAccount", "kdl-backup-sa")["metadata"]["annotations"] == {
        "example.com/owner": "data-platform",
    }
    # The verification CronJob (issue 11): same image, account, S3 credentials and notifications.
    verify = rendered.get("CronJob", "kdl-backup-verify")
    assert verify["spec"]["schedule"] == "0 6 * * 1"
    vspec = pod_spec(verify)
    (vcontainer,) = vspec["containers"]
    assert vcontainer["image"] == container["image"]
    assert vspec["serviceAccountName"] == "kdl-backup-sa"
    assert vcontainer["command"] == ["/usr/local/bin/restore.sh"]
    assert vcontainer["args"] == ["verify", "latest", "--identity", "/var/run/secrets/kdl-backup/identity/age.key"]
    venv = env_of(vcontainer)
    for name in ("BACKUP_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        assert venv[name] == env[name]
    assert venv["BACKUP_VERIFY_MAX_AGE_HOURS"]["value"] == "30"
    assert venv["BACKUP_VERIFY_SCRATCH_PGDATABASE"]["value"] == "gitea_verify"
    assert venv["PGPASSWORD"] == env["PGPASSWORD"]
    assert vcontainer["envFrom"] == container["envFrom"]
    identity = next(v for v in vspec["volumes"] if v["name"] == "identity")
    assert identity["secret"] == {
        "secretName": "kdl-backup-identity", "defaultMode": 0o400, "items": [{"key": "age.key", "path": "age.key"}],
    }
    assert vcontainer["resources"]["limits"] == {"cpu": "500m", "memory": "0.5Gi"}
    # The restore pod: same environment, writable data volumes, sleeping.
    pod = rendered.get("Pod", "kdl-backup-restore")
    (rcontainer,) = pod["spec"]["containers"]
    assert rcontainer["command"] == ["sleep", "infinity"]
    assert env_of(rcontainer) == env


def test_existing_secret(chart):
    _, rendered = _render_file(chart, "existing-secret")
    assert rendered.all("Secret") == [], "no Secret of the chart's own when existing ones are named"
    (container,) = pod_spec(rendered.get("CronJob", "backup"))["containers"]
    env = env_of(container)
    assert env["BACKUP_S3_BUCKET"]["valueFrom"]["secretKeyRef"] == {"name": "kdl-backup-s3", "key": "BUCKET_NAME"}
    # The existing Secret may omit the keys (web identity): optional references.
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "kdl-backup-s3", "key": "AWS_ACCESS_KEY_ID", "optional": True,
    }
    assert env["MONGO_URI"]["valueFrom"]["secretKeyRef"] == {"name": "kdl-mongodb-connection", "key": "uri"}
    assert container["envFrom"] == [{"secretRef": {"name": "kdl-backup-notify"}}]
    assert env["MLFLOW_ROOT"]["value"] == "/shared-volume"
    assert "placeholder" not in rendered.notes and "mongodb component is enabled" not in rendered.notes


def test_irsa(chart):
    _, rendered = _render_file(chart, "irsa")
    sa = rendered.get("ServiceAccount", "backup")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kdl-backup"}
    assert secret_data(rendered.get("Secret", "backup-secrets")) == {"BUCKET_NAME": "kdl-backups"}
    for obj in workloads(rendered):
        env = env_of(pod_spec(obj)["containers"][0])
        assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
        assert env["AWS_REGION"]["value"] == "eu-west-1"
        assert pod_spec(obj)["serviceAccountName"] == "backup"


def test_disabled_renders_nothing_but_a_note(chart):
    rendered = render(chart, {})
    assert rendered.objects == []
    assert "backup.enabled=true" in rendered.notes


def test_verify_scratch_database_without_encryption_needs_no_identity(chart):
    rendered = render(chart, {"backup": {"enabled": True, "verify": {"scratchDatabase": "gitea_verify"}}})
    (container,) = pod_spec(rendered.get("CronJob", "backup-verify"))["containers"]
    env = env_of(container)
    assert env["BACKUP_VERIFY_SCRATCH_PGDATABASE"]["value"] == "gitea_verify"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres", "key": "POSTGRES_PASSWORD"}
    assert container["args"] == ["verify", "latest"]


def test_verify_can_be_switched_off(chart):
    rendered = render(chart, {"backup": {"enabled": True, "verify": {"enabled": False}}})
    assert [obj["metadata"]["name"] for obj in rendered.all("CronJob")] == ["backup"]


def test_rbac_without_secrets_when_no_secret_is_exported(chart):
    rendered = render(chart, {"backup": {"enabled": True, "kubernetes": {"secretNameRegex": ""}}})
    rules = rendered.get("Role", "backup")["rules"]
    assert all("secrets" not in rule["resources"] for rule in rules)
    assert len(rules) == 2


@pytest.mark.parametrize(
    ("requests", "limits"),
    [
        ({"cpu": "100m"}, {"cpu": "0.1"}),
        ({"cpu": "0.1"}, {"cpu": "100m"}),
        ({"cpu": "500m"}, {"cpu": 1}),
        ({"memory": "256Mi"}, {"memory": "1Gi"}),
        ({"memory": "1Gi"}, {"memory": "1024Mi"}),
        ({"memory": "1G"}, {"memory": "1Gi"}),
        ({"memory": "1000M"}, {"memory": "1G"}),
        ({"cpu": "100m", "memory": "128Mi"}, {}),
    ],
)
def test_limits_equal_or_above_requests_render(chart, requests, limits):
    """Quantities compare by value, whatever their units."""
    rendered = render(chart, {"backup": {"enabled": True, "resources": {"requests": requests, "limits": limits}}})
    (container,) = pod_spec(rendered.get("CronJob", "backup"))["containers"]
    # Helm merges these over the defaults: the keys given here are the ones rendered.
    assert container["resources"]["requests"].items() >= requests.items()
    assert container["resources"]["limits"].items() >= limits.items()


def _backup_cronjob(rendered: Rendered) -> dict:
    (cronjob,) = [c for c in rendered.all("CronJob") if c["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"]
    return cronjob


def _env(container: dict, name: str) -> str | None:
    return env_of(container).get(name, {}).get("value")


def _secret_literals(values: dict) -> list[str]:
    """Every credential given in the values (the things that must stay inside Secrets)."""
    backup = values.get("backup", {})
    s3 = backup.get("s3", {})
    notify = backup.get("notifications", {})
    smtp = notify.get("smtp", {})
    uri = values.get("global", {}).get("mongodb", {}).get("connectionString", {}).get("uri", "")
    found = [
        s3.get("awsAccessKeyID", "aws-access-key-id"), s3.get("awsSecretAccessKey", "aws-secret-access-key"),
        notify.get("slackWebhookURL"), notify.get("webhookURL"), notify.get("webhookSecret"),
        smtp.get("password"), notify.get("healthcheckURL"), notify.get("verifyHealthcheckURL"), uri,
    ]
    return [value for value in found if value and re.search(r"\w{4}", value)]

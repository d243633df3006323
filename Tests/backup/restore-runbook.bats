#!/usr/bin/env bats
# docs/restore.md: every restore.sh command of the runbook runs (in document order) against a fake
# encrypted set with the stubbed targets and exits 0; so do docs/operations.md's; the restore pod
# manifest is a valid Pod.

setup() {
  load 'restore-stubs/restore-helper'
  _restore_setup
}

# runbook_commands [DOC]: the restore.sh lines of DOC's sh blocks (default docs/restore.md), in order.
runbook_commands() {
  awk '/^ *```sh/ { on = 1; next } /^ *```/ { on = 0 } on && $1 == "restore.sh" { print }' "$REPO_ROOT/${1:-docs/restore.md}"
}

@test "docs/restore.md: every restore.sh command of the runbook runs and exits 0" {
  FAKE_SET_MINIO=true fake_set "$(date -u +%Y%m%dT%H%M%SZ)" success true
  export BACKUP_AGE_IDENTITY_FILE="$T/key.txt" MONGO_URI='mongodb://kdl:pw-123456@127.0.0.1:27017/admin'
  export MINIO_ENDPOINT=http://127.0.0.1:9000 MINIO_ACCESS_KEY_ID=minio-key MINIO_SECRET_ACCESS_KEY=minio-secret-123456
  export K8S_SERVER=https://127.0.0.1:6443 K8S_TOKEN_FILE="$T/token"
  echo token-value >"$T/token"
  unset BACKUP_VERIFY_MAX_AGE_HOURS
  local line n=0
  local -a words
  while IFS= read -r line; do
    line=${line//\/tmp\/identity.txt/$T/key.txt}
    line=${line//\/tmp\/k8s/$T/k8s-out}
    read -r -a words <<<"$line"
    run --separate-stderr "$RESTORE_SH" "${words[@]:1}" </dev/null
    [[ "$status" -eq 0 ]] || fail "runbook command failed ($status): $line: ${stderr_lines[-1]}"
    n=$((n + 1))
  done < <(runbook_commands)
  ((n >= 12)) || fail "only $n runbook commands found"
  assert [ -s "$T/k8s-out/secrets.yaml" ]
  assert [ -s "$GITEA_DATA_DIR/gitea/conf/app.ini" ]
  # MinIO: the dry run plans, each restore writes (one bucket with --bucket), verify checks the blobs
  grep -q '^bucket-sync restore --dry-run s3://kdl-backups/kdl-backup/.* --bucket churn --identity ' "$STUB_LOG"
  grep -q '^bucket-sync restore s3://kdl-backups/kdl-backup/.* --bucket churn --identity ' "$STUB_LOG"
  grep -q '^bucket-sync verify s3://kdl-backups/kdl-backup/' "$STUB_LOG"
  refute grep -q 'minio-secret-123456' "$STUB_LOG"
}

@test "docs/operations.md: its restore.sh commands run on a fresh set, each reporting through notify" {
  fake_set "$(date -u +%Y%m%dT%H%M%SZ)" success true
  unset BACKUP_VERIFY_MAX_AGE_HOURS
  local line n=0
  local -a words
  while IFS= read -r line; do
    line=${line//\/tmp\/identity.txt/$T/key.txt}
    read -r -a words <<<"$line"
    run --separate-stderr "$RESTORE_SH" "${words[@]:1}" </dev/null
    [[ "$status" -eq 0 ]] || fail "operations command failed ($status): $line: ${stderr_lines[-1]}"
    n=$((n + 1))
  done < <(runbook_commands docs/operations.md)
  assert_equal "$n" 2
  assert_equal "$(grep -c '^notify --event verify --status success ' "$STUB_LOG")" 2
}

@test "docs/restore.md: the helm --set keys of the runbook exist in the chart's values" {
  local key found=0
  "$REPO_ROOT/.venv/bin/python" -c 'import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' \
    "$REPO_ROOT/helm/kdl-server/values.yaml" >"$T/values.json"
  while IFS= read -r key; do
    [[ "$key" == gitea.* ]] && continue # the KDL chart's own value, not this chart's
    found=$((found + 1))
    run -0 jq -e --arg k "$key" 'getpath($k | split(".")) != null' "$T/values.json"
  done < <(grep -o -- '--set [A-Za-z.]*=' "$REPO_ROOT/docs/restore.md" | sed 's/--set //; s/=$//' | sort -u)
  ((found >= 3))
}

@test "backup/restore-pod.yaml: a Pod mounting Gitea's claim at /data and the host path at /shared-volume, sleeping" {
  run -0 "$REPO_ROOT/.venv/bin/python" - "$REPO_ROOT/backup/restore-pod.yaml" <<'PY'
import sys, yaml
pod = yaml.safe_load(open(sys.argv[1]))
assert pod["kind"] == "Pod", pod["kind"]
c = pod["spec"]["containers"][0]
assert c["command"] == ["sleep", "infinity"], c["command"]
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["spec"]["volumes"]}
assert vols[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "gitea-pvc-gitea-0"
assert "hostPath" in vols[mounts["/shared-volume"]]
assert c["envFrom"][0]["secretRef"]["name"] == "backup-secrets"
print("ok")
PY
  assert_output ok
}

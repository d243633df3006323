# shellcheck shell=bash
# Setup for restore.sh's bats tests: bats-support/bats-assert, the stubs of restore-stubs/bin first on
# PATH (S3 is a folder, $FAKE_S3/BUCKET/KEY; PostgreSQL, MongoDB and the API server record what they
# receive), and fake_set to build a backup set with the real tar, zstd, age, sqlite3 and gzip.

_restore_setup() {
  bats_require_minimum_version 1.5.0
  load '/usr/lib/bats/bats-support/load'
  load '/usr/lib/bats/bats-assert/load'
  REPO_ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  export RESTORE_SH="$REPO_ROOT/backup/restore.sh"
  # restore-stubs first; the backup tests' stubs supply mlflow-scan (the real helper's JSON shape).
  PATH="$BATS_TEST_DIRNAME/restore-stubs/bin:$BATS_TEST_DIRNAME/test_helper/stubs:$PATH"
  T=$BATS_TEST_TMPDIR
  export STUB_LOG="$T/stub.log" FAKE_S3="$T/s3" FAKE_PG="$T/pg" FAKE_MONGO="$T/mongo" FAKE_K8S="$T/k8s"
  : >"$STUB_LOG"
  export TMPDIR="$T/tmp"
  mkdir -p "$TMPDIR" "$FAKE_S3/kdl-backups"
  local name
  for name in BUCKET_NAME BACKUP_S3_PREFIX MONGO_URI PGDATABASE K8S_SERVER K8S_TOKEN_FILE K8S_CA_FILE K8S_NAMESPACE \
    BACKUP_AGE_IDENTITY_FILE BACKUP_VERIFY_MAX_AGE_HOURS BACKUP_VERIFY_SCRATCH_PGDATABASE; do
    unset "$name"
  done
  export BACKUP_S3_BUCKET=kdl-backups
  export BACKUP_VERIFY_MAX_AGE_HOURS=0 # fake sets are dated 2024; the age test unsets it
  export GITEA_DATA_DIR="$T/target/data" MLFLOW_ROOT="$T/target/shared-volume"
  mkdir -p "$GITEA_DATA_DIR" "$MLFLOW_ROOT"
  age-keygen -o "$T/key.txt" 2>/dev/null
  age-keygen -o "$T/other-key.txt" 2>/dev/null
  RECIPIENT=$(age-keygen -y "$T/key.txt")
}

# _src_tree: the source Gitea tree the fake sets carry.
_src_tree() {
  local src="$T/src/data"
  mkdir -p "$src/git/repositories/alice/demo.git/refs" "$src/gitea/conf"
  echo 'ref: refs/heads/main' >"$src/git/repositories/alice/demo.git/HEAD"
  echo '[database]' >"$src/gitea/conf/app.ini"
  ln -sf ../gitea/conf/app.ini "$src/git/config-link"
}

# _put KEY ENCRYPT < BYTES: stores an object of the set being built and records it in $T/objects.jsonl,
# with the format backup.sh records for such a key.
_put() {
  local key=$1 enc=$2 dest format
  case "$key" in
    *.dump) format=pg_dump-custom ;;
    *.tar.zst) format=tar+zstd ;;
    *.archive.gz) format=mongodump-archive+gzip ;;
    *.db.zst) format=sqlite+zstd ;;
    *.yaml.zst) format=yaml+zstd ;;
    *.index.jsonl.zst) format=minio-index+zstd ;;
    *.blobs.jsonl) format=minio-blobs ;;
  esac
  [[ "$enc" == true ]] && key="$key.age"
  dest="$FAKE_S3/kdl-backups/kdl-backup/$SET/$key"
  mkdir -p "$(dirname "$dest")"
  if [[ "$enc" == true ]]; then age -r "$RECIPIENT" >"$dest"; else cat >"$dest"; fi
  jq -nc --arg c "${key%%/*}" --arg k "$key" --argjson b "$(stat -c %s "$dest")" \
    --arg s "$(sha256sum "$dest" | cut -d' ' -f1)" --argjson e "$enc" --arg f "$format" \
    '{component: $c, key: $k, bytes: $b, sha256: $s, format: $f, encrypted: $e, verified: true}' >>"$T/objects.jsonl"
}

# _fake_minio ENCRYPT: the minio component's objects as bucket-sync writes them, for bucket churn (its blobs are
# not stored: the bucket-sync stub stands in for the helper that reads them).
_fake_minio() {
  printf '%s\n' '{"blob":"blobs/x/p-1.zst.age","contentType":"text/csv","etag":"e1","key":"data/raw/a.csv","lastModified":"2024-01-01T00:00:00.000Z","length":120,"metadata":{},"offset":0,"sha256":"'"$(printf a | sha256sum | cut -d' ' -f1)"'","size":1}' |
    zstd -q -c | _put minio/churn.index.jsonl.zst "$1"
  printf '%s\n' '{"bytes":300,"key":"blobs/x/p-1.zst.age","sha256":"'"$(printf p | sha256sum | cut -d' ' -f1)"'"}' | _put minio/churn.blobs.jsonl false
}

# fake_set ID STATUS [ENCRYPT] [TAR_FILE]: a complete set with every component (TAR_FILE replaces Gitea's data tar).
fake_set() {
  SET=$1
  local status=$2 enc=${3:-false} tarfile=${4:-} started
  : >"$T/objects.jsonl"
  _src_tree
  printf 'PGDMP-fake-custom-dump' | _put gitea/postgres.dump "$enc"
  if [[ -n "$tarfile" ]]; then zstd -q -c "$tarfile"; else tar -C "$T/src/data" -cf - . | zstd -q -c; fi | _put gitea/data.tar.zst "$enc"
  { printf '\x6d\xe2\x99\x81'; printf 'fake bson'; } | gzip -c | _put mongodb/kdl.archive.gz "$enc"
  rm -f "$T/src.db"
  sqlite3 "$T/src.db" 'CREATE TABLE runs (run_uuid TEXT, start_time BIGINT, end_time BIGINT);
    CREATE TABLE experiments (experiment_id INT, last_update_time BIGINT);
    INSERT INTO runs VALUES ("r1", 1000, 2000); INSERT INTO experiments VALUES (1, 1500);'
  zstd -q -c "$T/src.db" | _put mlflow/proj1/mlflow.db.zst "$enc"
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: alice-ssh-keys\ndata:\n  KDL_USER_PRIVATE_SSH_KEY: c2VjcmV0\n' | zstd -q -c | _put kubernetes/secrets.yaml.zst "$enc"
  printf 'apiVersion: project.konstellation.io/v1\nkind: KDLProject\nmetadata:\n  name: kdlproject-proj1\n' | zstd -q -c | _put kubernetes/kdlprojects.yaml.zst "$enc"
  [[ "${FAKE_SET_MINIO:-false}" != true ]] || _fake_minio "$enc"
  started="${SET:0:4}-${SET:4:2}-${SET:6:2}T${SET:9:2}:${SET:11:2}:${SET:13:2}Z"
  jq -s --arg id "$SET" --arg st "$status" --arg started "$started" --argjson enc "$enc" --arg r "$RECIPIENT" '
    {format: "kdl-backup/v1", id: $id, startedAt: $started, finishedAt: $started, status: $st,
     encryption: (if $enc then {type: "age", recipients: [$r]} else null end), tools: {"s3-put": "0.1.0"},
     components: (group_by(.component) | map({name: .[0].component, status: "success", seconds: 1, error: null,
       objects: map(del(.component)),
       details: (if .[0].component == "mlflow" then {projects: [{project: "proj1", folder: "kdl-proj1-mlflow-claim-pvc-1234"}]} else {} end)}))}' \
    "$T/objects.jsonl" >"$FAKE_S3/kdl-backups/kdl-backup/$SET/manifest.json"
}

# set_component_status ID COMPONENT STATUS: rewrites one component's status in a stored manifest.
set_component_status() {
  local m="$FAKE_S3/kdl-backups/kdl-backup/$1/manifest.json"
  jq --arg c "$2" --arg s "$3" '(.components[] | select(.name == $c) | .status) = $s' "$m" >"$m.tmp" && mv "$m.tmp" "$m"
}

# tree_sum DIR: one checksum over names, types, link targets and contents under DIR.
tree_sum() {
  (cd "$1" && find . -printf '%p %y %l\n' | sort && find . -type f -print0 | sort -z | xargs -0r sha256sum) | sha256sum
}

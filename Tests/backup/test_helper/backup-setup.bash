# shellcheck shell=bash
# shellcheck disable=SC2034  # REPO_ROOT, BACKUP_SH and the like are read by the .bats files that load this
# Common setup for the backup.sh bats tests: bats-support/bats-assert from Debian, the helper
# stubs of test_helper/stubs first on PATH (they store objects under $FAKE_S3 and log every
# call, with its arguments, to $STUB_LOG), a small Gitea /data tree and MLflow root, and the
# environment of a run. The real zstd, age, tar and jq are used.

_backup_setup() {
  bats_require_minimum_version 1.5.0
  load '/usr/lib/bats/bats-support/load'
  load '/usr/lib/bats/bats-assert/load'
  REPO_ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  BACKUP_SH="$REPO_ROOT/backup/backup.sh"
  PATH="$BATS_TEST_DIRNAME/test_helper/stubs:$PATH"
  export STUB_LOG="$BATS_TEST_TMPDIR/stub.log" FAKE_S3="$BATS_TEST_TMPDIR/s3" BATS_TEST_TMPDIR
  : >"$STUB_LOG"
  export TMPDIR="$BATS_TEST_TMPDIR/tmp"
  mkdir -p "$TMPDIR"
  _make_sources
  _clean_env
  export BACKUP_S3_BUCKET=kdl-backups
  export BACKUP_ID=20240102T030405Z
  export GITEA_DATA_DIR="$BATS_TEST_TMPDIR/data"
  export MLFLOW_ROOT="$BATS_TEST_TMPDIR/shared-volume"
  export MONGO_URI='mongodb://kdl:m0ngo-pass-123@127.0.0.1:27017/admin'
  export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=gitea PGPASSWORD='pg-pass-456'
  export K8S_SERVER=https://127.0.0.1:6443 K8S_TOKEN_FILE="$BATS_TEST_TMPDIR/token"
  # KDL 5 as configured before BACKUP_PLATFORM existed: no discovery call among the stubbed commands
  # (auto is tested by itself below and against the API double in Tests/e2e/test_platforms.py).
  export BACKUP_PLATFORM=kdl5
  export STUB_SECRET_VALUE='c3NoLXByaXZhdGUta2V5LXZhbHVl'
  echo 'token-abc-789' >"$K8S_TOKEN_FILE"
}

# _clean_env: removes the contract's variables a developer's shell may carry.
_clean_env() {
  local name
  for name in BUCKET_NAME BACKUP_S3_PREFIX BACKUP_S3_SSE BACKUP_S3_STORAGE_CLASS BACKUP_COMPONENTS \
    GITEA_DATA_EXCLUDE PGDATABASE MONGO_DATABASES K8S_NAMESPACE K8S_RESOURCES K8S_SECRET_NAME_REGEX \
    K8S_CA_FILE BACKUP_AGE_RECIPIENTS BACKUP_REQUIRE_ENCRYPTION BACKUP_KEEP_LAST BACKUP_KEEP_DAYS \
    BACKUP_POSTGRES_DATABASES BACKUP_VOLUMES; do
    unset "$name"
  done
}

# _make_sources: a Gitea /data tree (a bare-repo-like folder, config, and the excluded folders)
# and an MLflow root with two stores (real SQLite files: backup.sh checks each copy), one with
# local artifacts.
_make_sources() {
  local data="$BATS_TEST_TMPDIR/data" ml="$BATS_TEST_TMPDIR/shared-volume"
  mkdir -p "$data/git/repositories/alice/demo.git/objects" "$data/gitea/conf" "$data/gitea/indexers/issues" \
    "$data/ssh" "$data/lost+found"
  echo 'ref: refs/heads/main' >"$data/git/repositories/alice/demo.git/HEAD"
  echo '[database]' >"$data/gitea/conf/app.ini"
  echo 'index' >"$data/gitea/indexers/issues/segment"
  echo 'host key' >"$data/ssh/gitea.rsa"
  mkdir -p "$ml/kdl-demo-mlflow-claim-pvc-1a2b/mlruns/0" "$ml/kdl-churn-mlflow-claim-pvc-3c4d"
  sqlite3 "$ml/kdl-demo-mlflow-claim-pvc-1a2b/mlflow.db" "CREATE TABLE experiments(name); INSERT INTO experiments VALUES ('demo')"
  echo 'metric' >"$ml/kdl-demo-mlflow-claim-pvc-1a2b/mlruns/0/meta.yaml"
  sqlite3 "$ml/kdl-churn-mlflow-claim-pvc-3c4d/mlflow.db" "CREATE TABLE experiments(name); INSERT INTO experiments VALUES ('churn')"
}

# set_dir: the fake S3 folder of the set under test.
set_dir() {
  printf '%s/kdl-backups/%s/%s' "$FAKE_S3" "${BACKUP_S3_PREFIX:-kdl-backup}" "$BACKUP_ID"
}

# manifest: the uploaded manifest.json of the set under test.
manifest() {
  printf '%s/manifest.json' "$(set_dir)"
}

# _backup_teardown: the manifest a test's run wrote, if any, matches backup/manifest.schema.json.
_backup_teardown() {
  local m violation
  m=$(manifest)
  [[ -f "$m" ]] || return 0
  violation=$(bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/manifest.sh'; manifest_violation '$m'")
  [[ -z "$violation" ]] || { echo "manifest breaks the schema: $violation" >&2; return 1; }
}

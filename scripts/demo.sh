#!/usr/bin/env bash
# Summary: the main job on the local stack, end to end: back up a seeded KDL install, restore it
#          into fresh targets and print a per-component verification table.
# Usage: scripts/demo.sh [--seed tiny|small|SIZE] [--keep]
#
# Steps: setup, release build, local stack (scripts/stack/up.sh) with sample data, an age key
# pair, backup/backup.sh (encrypted), restore.sh list/show/verify, then restore.sh restore of every
# component into fresh targets (a new database, new folders, an empty MinIO; MongoDB over its own databases,
# compared with a snapshot taken before the backup), and the table. --keep leaves the stack running.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/stack/lib.sh
source "$ROOT/scripts/stack/lib.sh" # free_port, start_service, wait_port (its say is replaced below)
export PATH="/opt/swift/usr/bin:$ROOT/.venv/bin:$PATH"
SEED=tiny
KEEP=false
DEMO_DIR=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

parse_args() {
  while (($#)); do
    case "$1" in
      --seed) SEED=${2:?--seed needs a size}; shift 2 ;;
      --keep) KEEP=true; shift ;;
      -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "demo.sh: unknown argument $1" >&2; exit 64 ;;
    esac
  done
}

cleanup() {
  [[ -n "$DEMO_DIR" ]] || return 0
  if $KEEP; then
    echo "demo: stack left running; source $DEMO_DIR/stack/stack.env, stop with scripts/stack/down.sh --dir $DEMO_DIR/stack" >&2
    return 0
  fi
  "$ROOT/scripts/stack/down.sh" --dir "$DEMO_DIR/stack" >/dev/null 2>&1 || true
  rm -rf "$DEMO_DIR"
}

# build: the release helpers, as the image ships them.
build() {
  say "build the helpers (scripts/build.sh: release, static Swift runtime, Package.resolved's versions)"
  BIN_DIR=$("$ROOT/scripts/build.sh")
}

start_stack() {
  say "start the local KDL stack and seed it ($SEED)"
  mkdir -m 0755 "$DEMO_DIR/stack"
  "$ROOT/scripts/stack/up.sh" --dir "$DEMO_DIR/stack" --seed "$SEED" >&2
  set -a
  # shellcheck source=/dev/null
  source "$DEMO_DIR/stack/stack.env"
  set +a
  export PATH="$BIN_DIR:$STACK_BIN_DIR:$PATH"
  # The platform's MinIO (the stack's stand-in): with MINIO_ENDPOINT set the job backs up its buckets.
  export MINIO_ENDPOINT=$STACK_MINIO_ENDPOINT MINIO_ACCESS_KEY_ID=$STACK_MINIO_ACCESS_KEY_ID
  export MINIO_SECRET_ACCESS_KEY=$STACK_MINIO_SECRET_ACCESS_KEY
}

# make_keys: an age key pair; only the public key goes to the backup, the identity stays for the restore.
make_keys() {
  age-keygen -o "$DEMO_DIR/identity.txt" 2>/dev/null
  BACKUP_AGE_RECIPIENTS=$(age-keygen -y "$DEMO_DIR/identity.txt")
  export BACKUP_AGE_RECIPIENTS
}

run_backup() {
  say "backup/backup.sh (recipients: $BACKUP_AGE_RECIPIENTS)"
  python "$ROOT/scripts/compare-restore.py" snapshot-mongo "$MONGO_URI" "$DEMO_DIR/mongo-before.json"
  python "$ROOT/scripts/compare-restore.py" snapshot-minio "$STACK_MINIO_ENV_FILE" "$DEMO_DIR/minio-before.json"
  "$ROOT/backup/backup.sh"
}

inspect_sets() {
  say "backup/restore.sh list, show latest, verify latest"
  "$ROOT/backup/restore.sh" list
  "$ROOT/backup/restore.sh" show latest
  "$ROOT/backup/restore.sh" verify latest --identity "$DEMO_DIR/identity.txt"
}

# restore_fresh: every component into targets that did not exist before.
restore_fresh() {
  say "restore every component into fresh targets"
  local restored="$DEMO_DIR/restored" identity=(--identity "$DEMO_DIR/identity.txt")
  # Empty volumes, as a fresh install mounts them.
  mkdir -p "$restored/gitea-data" "$restored/mlflow"
  PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD "$STACK_PG_BIN/createdb" -h "$PGHOST" -p "$PGPORT" \
    -U "$STACK_PG_SUPERUSER" -O "$PGUSER" gitea_restored
  PGDATABASE=gitea_restored "$ROOT/backup/restore.sh" restore gitea-db latest "${identity[@]}" --yes
  GITEA_DATA_DIR="$restored/gitea-data" "$ROOT/backup/restore.sh" restore gitea-data latest "${identity[@]}" --yes
  "$ROOT/backup/restore.sh" restore mongodb latest "${identity[@]}" --yes
  start_empty_minio
  MINIO_ENDPOINT=$TARGET_MINIO_ENDPOINT MINIO_ACCESS_KEY_ID=$TARGET_MINIO_KEY_ID MINIO_SECRET_ACCESS_KEY=$TARGET_MINIO_SECRET \
    "$ROOT/backup/restore.sh" restore minio latest "${identity[@]}" --yes
  MLFLOW_ROOT="$restored/mlflow" "$ROOT/backup/restore.sh" restore mlflow latest "${identity[@]}" --yes
  "$ROOT/backup/restore.sh" restore kubernetes latest "${identity[@]}" --output "$restored/kubernetes"
}

# start_empty_minio: an empty MinIO stand-in to restore the buckets into: a new RGW user in a tenant of its own.
start_empty_minio() {
  local env_file="$DEMO_DIR/minio-target.env"
  "$ROOT/scripts/stack/s3-user.sh" --dir "$DEMO_DIR/stack" --tenant minio_target --env-file "$env_file"
  TARGET_MINIO_ENV=$env_file
  TARGET_MINIO_ENDPOINT=$(sed -n 's/^export AWS_ENDPOINT_URL_S3=//p' "$env_file")
  TARGET_MINIO_KEY_ID=$(sed -n 's/^export AWS_ACCESS_KEY_ID=//p' "$env_file")
  TARGET_MINIO_SECRET=$(sed -n 's/^export AWS_SECRET_ACCESS_KEY=//p' "$env_file")
}

# export_source_objects: what the cluster holds now, cleaned the same way, to compare with the restored manifests.
export_source_objects() {
  local out="$DEMO_DIR/source-k8s" conn=(--server "$K8S_SERVER" --token-file "$K8S_TOKEN_FILE" --ca-file "$K8S_CA_FILE" --namespace "$K8S_NAMESPACE")
  mkdir -p "$out"
  k8s-export "${conn[@]}" kdlprojects.v1.project.konstellation.io --output "$out/kdlprojects.yaml"
  k8s-export "${conn[@]}" usertools.v1alpha1.kdl.konstellation.io --output "$out/usertools.yaml"
  k8s-export "${conn[@]}" --name-regex '-ssh-keys$|^codeserver-oauth2-' secrets --output "$out/secrets.yaml"
}

print_table() {
  say "verification: restored vs source"
  local restored="$DEMO_DIR/restored"
  python "$ROOT/scripts/compare-restore.py" table \
    --source-db "$PGDATABASE" --restored-db gitea_restored \
    --source-data "$GITEA_DATA_DIR" --restored-data "$restored/gitea-data" \
    --excludes "gitea/indexers ssh lost+found" \
    --mongo-uri "$MONGO_URI" --mongo-before "$DEMO_DIR/mongo-before.json" \
    --source-mlflow "$MLFLOW_ROOT" --restored-mlflow "$restored/mlflow" \
    --source-k8s "$DEMO_DIR/source-k8s" --restored-k8s "$restored/kubernetes" \
    --minio-before "$DEMO_DIR/minio-before.json" --restored-minio-env "$TARGET_MINIO_ENV" --mlflow-servers
}

main() {
  parse_args "$@"
  "$ROOT/scripts/setup.sh"
  build
  DEMO_DIR=$(mktemp -d /tmp/kdl-demo.XXXXXX)
  chmod 0711 "$DEMO_DIR"  # the stack's PostgreSQL runs as the postgres user and must reach its folder
  trap cleanup EXIT
  start_stack
  make_keys
  run_backup
  inspect_sets
  restore_fresh
  export_source_objects
  print_table
  say "demo finished: backup, verify and restore of every component"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

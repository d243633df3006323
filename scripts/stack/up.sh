#!/usr/bin/env bash
# Summary: start the local KDL stack on 127.0.0.1 (free ports), all state under DIR, and write DIR/stack.env.
# Usage: scripts/stack/up.sh --dir DIR [--seed tiny|small|SIZE] [--seed-number N]
#
# Services: PostgreSQL 15 (Gitea's database), Ceph RGW (S3: one mon, a memstore OSD, radosgw), whose second
# user, in tenant minio, stands in for the platform's MinIO (STACK_MINIO_* in stack.env; seeded with KDL's buckets),
# nx-27017 (MongoDB wire protocol), the Kubernetes API test double. With --seed,
# sample data (scripts/stack/seed.py) goes into every service and DIR/seed-summary.json.
# DIR/stack.env holds bash `export K=V` lines; stop everything with scripts/stack/down.sh --dir DIR.
# On any failure the services already started are stopped again and the exit status is non-zero.
set -Eeuo pipefail
umask 077

# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/stack/rgw.sh
source "$(dirname "${BASH_SOURCE[0]}")/rgw.sh"

PG_BIN=/usr/lib/postgresql/15/bin
STACK_DIR=""
SEED=""
SEED_NUMBER=1
START_TIMEOUT=${STACK_START_TIMEOUT:-30}
UP_OK=false
OWNS_DIR=false
declare -A ENV_OUT=()
ENV_ORDER=()

# need_value OPTION VALUE: dies with 64 when OPTION has no value.
need_value() {
  [[ -n "${2:-}" ]] || STACK_DIE_CODE=64 die "$1 needs a value (see --help)"
}

# parse_args: --dir (required), --seed, --seed-number.
parse_args() {
  while (($#)); do
    case "$1" in
      --dir) need_value "$1" "${2:-}"; STACK_DIR=$2; shift 2 ;;
      --dir=*) STACK_DIR=${1#--dir=}; shift ;;
      --seed) need_value "$1" "${2:-}"; SEED=$2; shift 2 ;;
      --seed=*) SEED=${1#--seed=}; shift ;;
      --seed-number) need_value "$1" "${2:-}"; SEED_NUMBER=$2; shift 2 ;;
      -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) STACK_DIE_CODE=64 die "unknown argument $1 (see --help)" ;;
    esac
  done
  [[ -n "$STACK_DIR" ]] || STACK_DIE_CODE=64 die "--dir DIR is required"
  [[ "$SEED_NUMBER" =~ ^[0-9]+$ ]] || STACK_DIE_CODE=64 die "--seed-number must be a number"
  if [[ -n "$SEED" && ! "$SEED" =~ ^(tiny|small|[0-9]+(\.[0-9]+)?([KMGT]i?B?)?)$ ]]; then
    STACK_DIE_CODE=64 die "--seed must be tiny, small or a size like 2GiB"
  fi
}

# setenv KEY VALUE: records one line of stack.env (written at the end, in order).
setenv() {
  [[ -v "ENV_OUT[$1]" ]] || ENV_ORDER+=("$1")
  ENV_OUT[$1]=$2
  export "$1=$2"
}

# prepare_dir: creates DIR (traversable by the postgres user) and refuses a DIR with a live stack.
prepare_dir() {
  mkdir -p "$STACK_DIR"
  STACK_DIR=$(cd "$STACK_DIR" && pwd)
  local pidfile
  for pidfile in "$STACK_DIR"/pids/*.pid; do
    [[ -f "$pidfile" ]] || continue
    if service_alive "$(basename "$pidfile" .pid)"; then
      STACK_DIE_CODE=75 die "a stack is already running in $STACK_DIR (scripts/stack/down.sh --dir $STACK_DIR)"
    fi
  done
  OWNS_DIR=true
  rm -rf "$STACK_DIR/pids" "$STACK_DIR/stack.env"
  mkdir -p "$STACK_DIR/pids" "$STACK_DIR/logs" "$STACK_DIR/bin"
  chmod o+x "$STACK_DIR"
  [[ -x "$STACK_PY" ]] || die "missing $STACK_PY: run scripts/setup.sh"
  [[ -x "$PG_BIN/postgres" ]] || die "missing PostgreSQL 15 server in $PG_BIN: run scripts/setup.sh"
  setenv STACK_DIR "$STACK_DIR"
}

# start_s3: Ceph RGW (scripts/stack/rgw.sh), which checks signatures and payload hashes as AWS does.
start_s3() {
  rgw_start
  S3_PORT=$RGW_PORT
}

# init_s3: waits for radosgw; the backup's user and bucket (kdl-backups).
init_s3() {
  rgw_wait
  mkdir -p "$STACK_DIR/s3" "$STACK_DIR/minio"
  local keyfile="$STACK_DIR/s3/s3.env" key_id secret
  rgw_user kdl-backup "" "$keyfile"
  rgw_bucket "$keyfile" kdl-backups
  # shellcheck source=/dev/null
  { read -r key_id && read -r secret; } < <(source "$keyfile" && printf '%s\n%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY")
  [[ -n "$key_id" && -n "$secret" ]] || die "no access key in $keyfile"
  setenv AWS_ACCESS_KEY_ID "$key_id"
  setenv AWS_SECRET_ACCESS_KEY "$secret"
  setenv AWS_REGION us-east-1
  setenv AWS_DEFAULT_REGION us-east-1
  setenv AWS_ENDPOINT_URL_S3 "http://127.0.0.1:$S3_PORT"
  setenv BACKUP_S3_BUCKET kdl-backups
  setenv STACK_S3_ENV_FILE "$keyfile"
  setenv STACK_RGW_CONF "$RGW_CONF"
}

# init_minio: the MinIO stand-in, a second RGW user in tenant "minio" (its own bucket namespace, as MinIO is a
# server of its own); its settings go to stack.env as STACK_MINIO_* (tests and the demo export them as MINIO_*:
# without them the job leaves minio out); seeds KDL's buckets when the stack is seeded.
init_minio() {
  local keyfile="$STACK_DIR/minio/minio.env" key_id secret
  rgw_user minio minio "$keyfile"
  # shellcheck source=/dev/null
  { read -r key_id && read -r secret; } < <(source "$keyfile" && printf '%s\n%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY")
  setenv STACK_MINIO_ENDPOINT "http://127.0.0.1:$S3_PORT"
  setenv STACK_MINIO_ACCESS_KEY_ID "$key_id"
  setenv STACK_MINIO_SECRET_ACCESS_KEY "$secret"
  setenv STACK_MINIO_ENV_FILE "$keyfile"
  if [[ -n "$SEED" ]]; then
    "$STACK_PY" "$STACK_LIB_ROOT/scripts/stack/seed_minio.py" --env-file "$keyfile" --summary "$STACK_DIR/seed-summary.json" \
      --large 0 --seed-number "$SEED_NUMBER" >"$STACK_DIR/minio/seed.json" 2>>"$STACK_DIR/logs/seed.log" ||
      die "seeding MinIO failed: $(tail -n 3 "$STACK_DIR/logs/seed.log" | tr '\n' ' ')"
    setenv STACK_MINIO_SEED "$STACK_DIR/minio/seed.json"
  fi
}

# as_postgres CMD...: runs CMD as the postgres user (initdb and the server refuse root).
as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
}

# start_postgres: initdb (scram-sha-256 everywhere) and the server on 127.0.0.1, socket inside DIR.
start_postgres() {
  local pgdir="$STACK_DIR/pg" port pwfile
  mkdir -p "$pgdir/run"
  chown -R postgres:postgres "$pgdir"
  as_postgres test -w "$pgdir" || die "the postgres user cannot write $pgdir (is a parent of DIR closed to others?)"
  PG_SUPER_PASSWORD=$("$STACK_PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
  PG_GITEA_PASSWORD=$("$STACK_PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
  pwfile="$pgdir/.pwfile"
  printf '%s\n' "$PG_SUPER_PASSWORD" >"$pwfile"
  chown postgres:postgres "$pwfile"
  as_postgres "$PG_BIN/initdb" -D "$pgdir/data" -U postgres --pwfile="$pwfile" -A scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$STACK_DIR/logs/initdb.log" 2>&1 || die "initdb failed (log: $STACK_DIR/logs/initdb.log)"
  rm -f "$pwfile"
  port=$(free_port)
  start_service postgres setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/postgres" -D "$pgdir/data" \
    -c listen_addresses=127.0.0.1 -p "$port" -k "$pgdir/run" -c unix_socket_permissions=0700 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off
  PG_PORT=$port
}

# init_postgres: role gitea (password) owning database gitea, as Gitea's installer leaves it.
init_postgres() {
  wait_port "$PG_PORT" "$START_TIMEOUT" postgres
  local deadline=$((SECONDS + START_TIMEOUT))
  until PGPASSWORD=$PG_SUPER_PASSWORD "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; do
    ((SECONDS < deadline)) || die "postgres did not accept connections within ${START_TIMEOUT}s"
    sleep 0.1
  done
  PGPASSWORD=$PG_SUPER_PASSWORD psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -v pw="$PG_GITEA_PASSWORD" >/dev/null <<'SQL' || die "could not create role and database gitea"
CREATE ROLE gitea LOGIN PASSWORD :'pw';
CREATE DATABASE gitea OWNER gitea ENCODING 'UTF8' TEMPLATE template0;
SQL
  setenv PGHOST 127.0.0.1
  setenv PGPORT "$PG_PORT"
  setenv PGUSER gitea
  setenv PGPASSWORD "$PG_GITEA_PASSWORD"
  setenv PGDATABASE gitea
  setenv STACK_PG_BIN "$PG_BIN"
  setenv STACK_PG_SUPERUSER postgres
  setenv STACK_PG_SUPERUSER_PASSWORD "$PG_SUPER_PASSWORD"
}

# start_mongo: nx-27017 (MongoDB wire protocol over SQLite), one SQLite file per database under DIR.
start_mongo() {
  local port
  port=$(free_port)
  mkdir -p "$STACK_DIR/mongo/data"
  start_service mongo "$STACK_VENV/bin/nx-27017" --host 127.0.0.1 -p "$port" --data-dir "$STACK_DIR/mongo/data" \
    --log-file "$STACK_DIR/logs/mongo-server.log" --pid-file "$STACK_DIR/mongo/nx-27017.pid"
  MONGO_PORT=$port
}

# init_mongo: waits for the server; MONGO_URI names no database (tools pass --db).
init_mongo() {
  wait_port "$MONGO_PORT" "$START_TIMEOUT" mongo
  setenv MONGO_URI "mongodb://127.0.0.1:$MONGO_PORT/"
  setenv STACK_MONGO_PORT "$MONGO_PORT"
}

# install_doubles: DIR/bin holds wrappers running the mongodump/mongorestore test doubles with the venv's Python.
install_doubles() {
  local tool
  for tool in mongodump mongorestore; do
    printf '#!/bin/sh\n# Test double of MongoDB %s: see %s\nexec "%s" "%s" "$@"\n' \
      "$tool" "$STACK_LIB_ROOT/Tests/fixtures/$tool" "$STACK_PY" "$STACK_LIB_ROOT/Tests/fixtures/$tool" \
      >"$STACK_DIR/bin/$tool"
    chmod 755 "$STACK_DIR/bin/$tool"
  done
  setenv STACK_BIN_DIR "$STACK_DIR/bin"
}

# seed_data: sample data into every service (seed.py), or only the CRDs the Kubernetes double serves.
seed_data() {
  local started=$SECONDS
  "$STACK_PY" "$STACK_LIB_ROOT/scripts/stack/seed.py" --dir "$STACK_DIR" --size "${SEED:-none}" --seed-number "$SEED_NUMBER" \
    2>>"$STACK_DIR/logs/seed.log" || die "seeding failed: $(tail -n 3 "$STACK_DIR/logs/seed.log" | tr '\n' ' ')"
  [[ -z "$SEED" ]] || say "seeded $SEED (seed number $SEED_NUMBER) in $((SECONDS - started))s: $STACK_DIR/seed-summary.json"
}

# start_k8s: the Kubernetes API test double (HTTPS, own CA, bearer tokens) serving DIR/k8s/objects.json.
start_k8s() {
  local dir="$STACK_DIR/k8s" deadline
  rm -f "$dir/port"
  start_service k8s "$STACK_PY" "$STACK_LIB_ROOT/Tests/fixtures/kube_api_double.py" --port 0 --dir "$dir" \
    --objects "$dir/objects.json"
  deadline=$((SECONDS + START_TIMEOUT))
  until [[ -s "$dir/port" ]]; do
    ((SECONDS < deadline)) || die "the Kubernetes API double did not start within ${START_TIMEOUT}s (log: $STACK_DIR/logs/k8s.log)"
    service_alive k8s || die "the Kubernetes API double exited: $(tail -n 3 "$STACK_DIR/logs/k8s.log" | tr '\n' ' ')"
    sleep 0.1
  done
  wait_port "$(cat "$dir/port")" "$START_TIMEOUT" k8s
  setenv K8S_SERVER "https://127.0.0.1:$(cat "$dir/port")"
  setenv K8S_TOKEN_FILE "$dir/token"
  setenv K8S_CA_FILE "$dir/ca.crt"
  setenv K8S_NAMESPACE kdl
  setenv STACK_K8S_LIMITED_TOKEN_FILE "$dir/token-limited"
  setenv STACK_K8S_DIR "$dir"
}

# write_env: DIR/stack.env, written whole then renamed so readers never see half of it.
write_env() {
  local key
  {
    echo "# Local KDL stack started by scripts/stack/up.sh at $(date -u +%FT%TZ); source this file."
    for key in "${ENV_ORDER[@]}"; do
      printf 'export %s=%q\n' "$key" "${ENV_OUT[$key]}"
    done
  } >"$STACK_DIR/stack.env.tmp"
  mv "$STACK_DIR/stack.env.tmp" "$STACK_DIR/stack.env"
}

# on_exit: a failed start stops whatever was started.
on_exit() {
  if ! $UP_OK && $OWNS_DIR && [[ -d "$STACK_DIR/pids" ]]; then
    say "start failed; stopping the services already started"
    stop_service postgres 10 INT
    stop_all
  fi
}

main() {
  parse_args "$@"
  trap on_exit EXIT
  local started=$SECONDS
  prepare_dir
  start_s3
  start_mongo
  start_postgres
  init_s3
  init_mongo
  init_postgres
  install_doubles
  setenv GITEA_DATA_DIR "$STACK_DIR/gitea-data"
  setenv MLFLOW_ROOT "$STACK_DIR/mlflow"
  rm -rf "$GITEA_DATA_DIR" "$MLFLOW_ROOT" "$STACK_DIR/seed-summary.json"
  mkdir -p "$GITEA_DATA_DIR" "$MLFLOW_ROOT"
  seed_data
  init_minio
  [[ -z "$SEED" ]] || setenv STACK_SEED_SUMMARY "$STACK_DIR/seed-summary.json"
  start_k8s
  write_env
  UP_OK=true
  say "up in $((SECONDS - started))s; env: $STACK_DIR/stack.env"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

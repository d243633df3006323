# shellcheck shell=bash
# Summary: component postgres: any number of PostgreSQL databases besides Gitea's (KDL 5's Drone, KDL 6's
#          Keycloak), on one or several servers, each pg_dump -Fc streamed and checked like Gitea's dump.
#
# Environment: BACKUP_POSTGRES_DATABASES (names, space separated; the component is configured when set);
#              for a name N (upper-cased, - as _): PG_N_HOST, PG_N_PORT, PG_N_USER, PG_N_PASSWORD,
#              PG_N_DATABASE (default: the name), each falling back to libpq's PGHOST, PGPORT, PGUSER,
#              PGPASSWORD; BACKUP_PG_DUMP_COMPRESS.
# Objects:     postgres/<name>.dump (pg_dump-custom).
# Restore:     postgres (every database; `postgres:NAME` one of them), after gitea-db: pg_restore --clean
#              into the database the same variables name, created when missing.
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component postgres 15
kdl_restore_step postgres postgres 25 '^postgres/[^/]+\.dump(\.age)?$'

PG_NAMES=()

# postgres_configured: BACKUP_POSTGRES_DATABASES names a database.
postgres_configured() {
  [[ -n "$(kdl_words "${BACKUP_POSTGRES_DATABASES:-}")" ]]
}

# postgres_config SELECTED: PG_NAMES (each once; 64 for a name that cannot be a key, or none when selected).
postgres_config() {
  local name
  PG_NAMES=()
  while IFS= read -r name; do
    if [[ ! "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$ ]]; then
      KDL_CONFIG_ERROR="BACKUP_POSTGRES_DATABASES: '$name' is not a name of letters, digits, _ and - (it names postgres/<name>.dump and PG_<NAME>_*)"
      return "$EX_USAGE"
    fi
    [[ " ${PG_NAMES[*]} " == *" $name "* ]] || PG_NAMES+=("$name")
  done < <(kdl_words "${BACKUP_POSTGRES_DATABASES:-}")
  if [[ "$1" == true && ${#PG_NAMES[@]} -eq 0 ]]; then
    KDL_CONFIG_ERROR="BACKUP_COMPONENTS selects postgres but BACKUP_POSTGRES_DATABASES lists no database"
    return "$EX_USAGE"
  fi
  pg_load_compress
}

# postgres_var NAME FIELD: the value of PG_<NAME>_<FIELD> (NAME upper-cased, - as _), empty when unset.
postgres_var() {
  local var=${1^^}
  var="PG_${var//-/_}_$2"
  printf '%s' "${!var:-}"
}

# postgres_env NAME: exports libpq's variables for database NAME (call it in a subshell): PG_<NAME>_* over PG*,
# the database defaulting to NAME.
postgres_env() {
  local field value
  for field in HOST PORT USER PASSWORD; do
    value=$(postgres_var "$1" "$field")
    [[ -z "$value" ]] || export "PG$field=$value"
  done
  value=$(postgres_var "$1" DATABASE)
  export PGDATABASE=${value:-$1}
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-$KDL_DEFAULT_PGCONNECT_TIMEOUT}
}

# postgres_preflight: each database answers, with a pg_dump new enough and able to compress as configured
# (check postgres-NAME).
postgres_preflight() {
  local name failed=0
  for name in "${PG_NAMES[@]}"; do
    (postgres_env "$name" && pg_check "postgres-$name" "$PG_DUMP_COMPRESS") || failed=1
  done
  return "$failed"
}

# produce_postgres_dump NAME COMPRESS: database NAME in pg_dump's custom format (runs in the pipeline's subshell).
produce_postgres_dump() {
  postgres_env "$1"
  produce_pg_dump "$2"
}

# postgres_backup: postgres/<name>.dump for each database, one at a time (checked by pg_restore --list); a
# database that fails is an error of the component, the others are still stored.
postgres_backup() {
  local name info
  for name in "${PG_NAMES[@]}"; do
    info=$(postgres_env "$name" && jq -nc --arg h "${PGHOST:-localhost}" --arg p "${PGPORT:-5432}" --arg d "$PGDATABASE" \
      --arg server "$(cat "$WORK/checks/postgres-$name.server_version_num" 2>/dev/null)" --arg compress "$PG_DUMP_COMPRESS" \
      '{host: $h, port: ($p | tonumber? // $p), database: $d, serverVersionNum: ($server | tonumber? // null), compress: $compress}')
    put_member databases "$name" "$info" "postgres-$name" "postgres/$name.dump" pg_dump-custom produce_postgres_dump "$name" "$PG_DUMP_COMPRESS"
  done
}

# postgres_describe DETAILS: one line for `restore.sh show`.
postgres_describe() {
  jq -r '.databases // {} | to_entries | map("\(.key) (\(.value.database // "?") on \(.value.host // "?"):\(.value.port // "?"), \(.value.tables // "?") tables\(if .value.stored == false then ", not stored" else "" end))") | join("; ")' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# postgres_plan STEP: per database of the step, what pg_restore will drop and recreate (77 when a database
# must be created and may not be).
postgres_plan() {
  local comp key rest name
  while IFS=$'\t' read -r comp key rest; do
    name=$(member_name "$key" postgres dump)
    (postgres_env "$name" && pg_plan_restore "postgres:$name") || exit $?
  done < <(step_objects_of "$1")
}

# postgres_apply STEP: per database, created when missing, then pg_restore --clean --if-exists --no-owner.
postgres_apply() {
  local comp key bytes sha enc format name
  while IFS=$'\t' read -r comp key bytes sha enc format; do
    name=$(member_name "$key" postgres dump)
    log info "restore object" step="postgres:$name" key="$key" consumer=pg_restore_into
    (
      postgres_env "$name"
      pg_create_if_missing
      object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" pg_restore_into </dev/null
    ) || exit $?
    echo "restored: postgres:$name into $(postgres_env "$name" && pg_target)"
  done < <(step_objects_of "$1")
}

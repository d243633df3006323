# shellcheck shell=bash
# Summary: PostgreSQL for the components that dump and restore a database: the preflight check,
#          the maintenance-database SQL of a restore, pg_restore, and the exit status a failure deserves.
# shellcheck disable=SC2034  # PG_DUMP_COMPRESS and KDL_CONFIG_ERROR are read by the components
# Usage: source lib/common.sh first. Connections come from libpq's PG* variables (the password from
#        PGPASSWORD, never an argument).

# major_of VERSION: the major version number in a PostgreSQL version string (15.4 → 15, 9.6.1 → 9).
major_of() {
  [[ "$1" =~ ([0-9]+)(\.[0-9]+)? ]] && printf '%s' "${BASH_REMATCH[1]}"
}

PG_DUMP_COMPRESS=$KDL_DEFAULT_PG_DUMP_COMPRESS

# pg_load_compress: PG_DUMP_COMPRESS from BACKUP_PG_DUMP_COMPRESS (every dump of the run); sets
# KDL_CONFIG_ERROR and returns 64 when pg_dump could not take it.
pg_load_compress() {
  PG_DUMP_COMPRESS=${BACKUP_PG_DUMP_COMPRESS:-$KDL_DEFAULT_PG_DUMP_COMPRESS}
  if [[ ! "$PG_DUMP_COMPRESS" =~ ^([0-9]|(none|gzip|lz4|zstd)(:[A-Za-z0-9=,_-]+)?)$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_PG_DUMP_COMPRESS '$PG_DUMP_COMPRESS' is not a pg_dump --compress value (0-9, or gzip|lz4|zstd[:LEVEL] with pg_dump 16+)"
    return "$EX_USAGE"
  fi
}

# pg_target: "host:port/db" for plans and errors.
pg_target() {
  printf '%s:%s/%s' "${PGHOST:-localhost}" "${PGPORT:-5432}" "${PGDATABASE:-$KDL_DEFAULT_PGDATABASE}"
}

# pg_failure_status PSQL_STATUS ERRFILE: the exit status a failed psql deserves, from statuses, not
# messages: a connection that failed (2) while the server answers pg_isready was refused (77), else
# the server is unavailable (69); a failed statement (3, under ON_ERROR_STOP with VERBOSITY verbose)
# is 77 for SQLSTATE class 42501 (insufficient privilege) or 28 (authorization), else 1.
pg_failure_status() {
  local status=$1 errfile=$2
  case "$status" in
    2)
      if PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-$KDL_DEFAULT_PGCONNECT_TIMEOUT} pg_isready -q >/dev/null 2>&1; then echo "$EX_NOPERM"; else echo "$EX_UNAVAILABLE"; fi
      ;;
    3) if grep -qE '^(psql:[^ ]* )?(ERROR|FATAL): +(42501|28[0-9A-Z]{3}):' "$errfile"; then echo "$EX_NOPERM"; else echo "$EX_FAILURE"; fi ;;
    *) echo "$EX_FAILURE" ;;
  esac
}

# pg_check KEY COMPRESS: psql, pg_dump and pg_restore present, the server answers, pg_dump's major ≥ the
# server's, and this pg_dump can compress as COMPRESS says: a method (gzip:N, lz4, zstd: pg_dump 16+,
# built with them) is tried by an empty schema-only dump, every schema excluded; a gzip level 0-9 works
# with every pg_dump. Records the outcome as check KEY;
# the server's version in $WORK/checks/KEY.server_version_num.
pg_check() {
  local key=$1 compress=$2 status=0 server_num server_major dump_version dump_major
  check_require "$key" pg_dump pg_restore psql pg_isready || return 1
  kdl_run_job psql -X -A -t -q -c 'SHOW server_version_num' >"$WORK/checks/$key.out" 2>"$WORK/checks/$key.err.log" || status=$?
  if ((status != 0)); then
    check_fail "$key" "$(pg_failure_status "$status" "$WORK/checks/$key.err.log")" \
      "PostgreSQL $(pg_target) unreachable: $(kdl_tail_text "$WORK/checks/$key.err.log" 1)"
    return 1
  fi
  server_num=$(tr -dc '0-9' <"$WORK/checks/$key.out")
  server_major=$((${server_num:-0} / 10000))
  dump_version=$(pg_dump --version 2>/dev/null | head -n1)
  dump_major=$(major_of "${dump_version#*) }")
  printf '%s\n' "$server_num" >"$WORK/checks/$key.server_version_num"
  if ((${dump_major:-0} < server_major)); then
    check_fail "$key" "$EX_UNAVAILABLE" "pg_dump $dump_major is older than the PostgreSQL $server_major server: install a client of major $server_major or newer"
    return 1
  fi
  if [[ ! "$compress" =~ ^[0-9]$ ]] && ! kdl_run_job pg_dump --schema-only --exclude-schema='*' --format=custom --no-password --compress="$compress" \
    >/dev/null 2>"$WORK/checks/$key.compress.err"; then
    check_fail "$key" "$EX_UNAVAILABLE" "pg_dump $dump_major cannot compress with BACKUP_PG_DUMP_COMPRESS=$compress: $(kdl_tail_text "$WORK/checks/$key.compress.err" 1)"
    return 1
  fi
  check_ok "$key" server_major="$server_major" pg_dump_major="$dump_major" compress="$compress"
}

# produce_pg_dump COMPRESS: PGDATABASE in pg_dump's custom format (password from PGPASSWORD),
# compressed by pg_dump as COMPRESS says.
produce_pg_dump() {
  pg_dump --format=custom --no-password --compress="$1"
}

# pg_admin_sql: runs SQL from stdin on the maintenance database (variables: -v db=NAME); dies 69/77
# on connection errors, 77 on a refused privilege.
pg_admin_sql() {
  local status=0 out
  out=$(PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-$KDL_DEFAULT_PGCONNECT_TIMEOUT} psql -X -q -t -A -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
    -v db="${PGDATABASE:-$KDL_DEFAULT_PGDATABASE}" -d postgres 2>"$WORK/psql.err") || status=$?
  if ((status != 0)); then
    status=$(pg_failure_status "$status" "$WORK/psql.err")
    # The message without verbose mode's SQLSTATE and LOCATION lines.
    sed -E 's/(ERROR|FATAL): +[0-9A-Z]{5}: /\1: /' "$WORK/psql.err" | grep -v '^LOCATION:' >"$WORK/psql.err.msg" || true
    mv -f "$WORK/psql.err.msg" "$WORK/psql.err"
    case "$status" in
      "$EX_NOPERM") die "$EX_NOPERM" "PostgreSQL at $(pg_target) refused us: $(tool_error_line "$WORK/psql.err")" ;;
      "$EX_UNAVAILABLE") die "$EX_UNAVAILABLE" "PostgreSQL at $(pg_target) unreachable: $(tool_error_line "$WORK/psql.err")" ;;
      *) die "$EX_FAILURE" "PostgreSQL at $(pg_target): $(tool_error_line "$WORK/psql.err")" ;;
    esac
  fi
  printf '%s\n' "$out"
}

# pg_require_createdb: dies 77 before anything changes when our role may not create PGDATABASE.
pg_require_createdb() {
  local can
  can=$(pg_admin_sql <<<"SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user;")
  [[ "$can" == t ]] || die "$EX_NOPERM" "PostgreSQL at $(pg_target) refused us: permission denied to create database (role ${PGUSER:-$(id -un)} has no CREATEDB: create the database first, owned by that role, or grant it CREATEDB)"
}

# pg_database_exists: true when PGDATABASE exists on the server (asked on the maintenance database).
pg_database_exists() {
  [[ "$(pg_admin_sql <<<"SELECT count(*) FROM pg_database WHERE datname = :'db';")" == 1 ]]
}

# pg_plan_restore LABEL: the plan line of restoring into PGDATABASE: what pg_restore will drop and recreate, or the
# database to create; a database to create needs CREATEDB, checked here so that a dry run fails as the real run
# would (77).
pg_plan_restore() {
  local tables
  if pg_database_exists; then
    tables=$(psql -X -q -t -A -c "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema')" </dev/null 2>/dev/null || echo '?')
    echo "plan: $1: database $(pg_target) exists ($tables tables): pg_restore --clean --if-exists --no-owner drops and recreates every object of the dump"
  else
    pg_require_createdb
    echo "plan: $1: create database $PGDATABASE on ${PGHOST:-localhost}:${PGPORT:-5432}, then pg_restore --no-owner into it"
  fi
}

# pg_create_if_missing: creates PGDATABASE when it does not exist.
pg_create_if_missing() {
  if ! pg_database_exists; then
    pg_admin_sql <<<'CREATE DATABASE :"db";' >/dev/null
    log info "created database" database="$PGDATABASE" server="${PGHOST:-localhost}:${PGPORT:-5432}"
  fi
}

# pg_restore_into: stdin (a pg_dump -Fc stream) restored into PGDATABASE in one transaction.
pg_restore_into() {
  pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction --dbname="${PGDATABASE:-$KDL_DEFAULT_PGDATABASE}" >&2
}

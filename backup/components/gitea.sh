# shellcheck shell=bash
# Summary: component gitea (KDL 5; in the default selection on KDL 5 only): Gitea's PostgreSQL database (pg_dump -Fc) and its /data volume
#          minus the rebuildable and host-specific folders (tar | zstd).
#
# Environment: PG* (libpq; PGDATABASE default gitea), BACKUP_PG_DUMP_COMPRESS, GITEA_DATA_DIR,
#              GITEA_DATA_EXCLUDE; restore.sh verify: BACKUP_VERIFY_SCRATCH_PGDATABASE.
# Objects:     gitea/postgres.dump (pg_dump-custom), gitea/data.tar.zst (tar+zstd).
# Restore:     gitea-db (pg_restore --clean into PGDATABASE, created when missing),
#              gitea-data (extracted into GITEA_DATA_DIR, owned by Gitea's uid when run as root).
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component gitea 10
kdl_restore_step gitea-db gitea 20 '^gitea/postgres\.dump(\.age)?$' '' required alone
kdl_restore_step gitea-data gitea 30 '^gitea/data\.tar\.zst(\.age)?$' '' required alone

GITEA_DIR=""
GITEA_EXCLUDES=()

# gitea_config SELECTED: GITEA_DIR, GITEA_EXCLUDES, PGDATABASE, PG_DUMP_COMPRESS (64 when unusable).
gitea_config() {
  local word
  GITEA_DIR=${GITEA_DATA_DIR:-$KDL_DEFAULT_GITEA_DATA_DIR}
  GITEA_EXCLUDES=()
  while IFS= read -r word; do
    word=${word#./}
    word=${word#/}
    word=${word%/}
    [[ -n "$word" ]] && GITEA_EXCLUDES+=("$word")
  done < <(kdl_words "${GITEA_DATA_EXCLUDE-$KDL_DEFAULT_GITEA_DATA_EXCLUDE}")
  export PGDATABASE=${PGDATABASE:-$KDL_DEFAULT_PGDATABASE}
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-$KDL_DEFAULT_PGCONNECT_TIMEOUT}
  pg_load_compress
}

# gitea_configured: Gitea is KDL 5's.
gitea_configured() {
  [[ "$KDL_PLATFORM" == kdl5 ]]
}

# gitea_preflight: the database answers, with a pg_dump new enough and able to compress as configured
# (check gitea-db); the volume can be listed (check gitea-data).
gitea_preflight() {
  local failed=0
  pg_check gitea-db "$PG_DUMP_COMPRESS" || failed=1
  if check_readable_dir gitea-data GITEA_DATA_DIR "$GITEA_DIR"; then check_ok gitea-data dir="$GITEA_DIR"; else failed=1; fi
  return "$failed"
}

# gitea_backup: postgres.dump (checked by pg_restore --list) and data.tar.zst (listed by tar -t),
# streamed at the same time (the dump waits on the database, the tar on the disk and the upload).
gitea_backup() {
  local db_error data_error exclude excludes=() started=() step
  db_error=$(check_error gitea-db)
  data_error=$(check_error gitea-data)
  if [[ -n "$db_error" ]]; then
    component_error "pg_dump: skipped: $db_error"
  else
    details_merge "$(jq -nc --arg db "$PGDATABASE" --arg server "$(cat "$WORK/checks/gitea-db.server_version_num" 2>/dev/null)" \
      --arg compress "$PG_DUMP_COMPRESS" '{database: $db, serverVersionNum: ($server | tonumber? // null), compress: $compress}')"
    object_start pg_dump gitea/postgres.dump pg_dump-custom check produce_pg_dump "$PG_DUMP_COMPRESS"
    started+=(pg_dump)
  fi
  if [[ -n "$data_error" ]]; then
    component_error "tar: skipped: $data_error"
  else
    for exclude in "${GITEA_EXCLUDES[@]}"; do excludes+=("--exclude=./$exclude"); done
    details_merge "$(jq -nc --arg dir "$GITEA_DIR" '{dataDir: $dir, excluded: $ARGS.positional}' --args "${GITEA_EXCLUDES[@]}")"
    object_start tar gitea/data.tar.zst tar+zstd check produce_tar "$GITEA_DIR" "${excludes[@]}" .
    started+=(tar)
  fi
  for step in "${started[@]}"; do object_finish "$step" || true; done
  if [[ -z "$db_error" ]]; then gitea_row_estimate; fi
}

# gitea_row_estimate: adds the planner's row estimate over user tables to the details
# (exact counts would scan every table a second time).
gitea_row_estimate() {
  local rows
  rows=$(psql -X -A -t -q -c 'SELECT coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables' 2>/dev/null | tr -dc '0-9') || true
  [[ -n "$rows" ]] && details_merge "{\"rowsEstimated\": $rows}"
  return 0
}

# gitea_describe DETAILS: one line for `restore.sh show`.
gitea_describe() {
  jq -r '"database \(.database // "?") (\(.pg_dump.tables // "?") tables, ~\(.rowsEstimated // "?") rows), data \(.dataDir // "?"): \(.tar.files // "?") files, \(.tar.repositories // "?") repositories, excluded \((.excluded // []) | join(" "))"' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# gitea_plan STEP: what the step will change.
gitea_plan() {
  case "$1" in
    gitea-db) gitea_plan_db ;;
    gitea-data) gitea_plan_data ;;
  esac
}

# gitea_apply STEP: the step's changes.
gitea_apply() {
  case "$1" in
    gitea-db) gitea_apply_db ;;
    gitea-data) gitea_apply_data ;;
  esac
}

# gitea_plan_db: what pg_restore will drop and recreate (77 now when the database must be created and may not be).
gitea_plan_db() {
  pg_plan_restore gitea-db
}

# gitea_apply_db: creates the database when missing, then pg_restore --clean --if-exists --no-owner.
gitea_apply_db() {
  pg_create_if_missing
  restore_each_object gitea-db pg_restore_into
}

# gitea_plan_data: where the tar goes and what it overwrites.
gitea_plan_data() {
  local dir=$GITEA_DIR existing
  [[ -d "$dir" ]] || die "$EX_NOINPUT" "GITEA_DATA_DIR does not exist: $dir"
  [[ -w "$dir" ]] || die "$EX_NOPERM" "GITEA_DATA_DIR is not writable: $dir"
  existing=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)
  echo "plan: gitea-data: extract gitea/data.tar.zst into $dir ($existing top-level entries present; files in the backup overwrite theirs, others stay)$( ((EUID == 0)) && echo ", then chown -R $KDL_DEFAULT_GITEA_UID_GID")"
}

# gitea_apply_data: extracts the data tar into GITEA_DATA_DIR, then Gitea's owner when root.
gitea_apply_data() {
  restore_each_object gitea-data extract_tar "$GITEA_DIR"
  if ((EUID == 0)); then chown -R -h "$KDL_DEFAULT_GITEA_UID_GID" "$GITEA_DIR"; fi
}

# gitea_verify: with BACKUP_VERIFY_SCRATCH_PGDATABASE, the dump is also restored into that scratch
# database (created, and dropped afterwards, also when a check fails) and its tables counted against
# the dump's table of contents (details.pg_dump.tables).
gitea_verify() {
  local scratch=${BACKUP_VERIFY_SCRATCH_PGDATABASE:-} comp key bytes sha enc format tables rows dumped
  [[ -n "$scratch" ]] || return 0
  [[ "$scratch" != "$PGDATABASE" ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE must differ from PGDATABASE"
  [[ "$scratch" =~ ^[A-Za-z0-9_-]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE is not a plain database name: $scratch"
  IFS=$'\t' read -r comp key bytes sha enc format < <(objects_tsv gitea | awk -F'\t' '$6 == "pg_dump-custom"') || true
  if [[ -z "${key:-}" ]]; then
    verify_note "scratch restore skipped: the set has no Gitea dump"
    return 0
  fi
  if [[ "$(object_mode "$enc")" == raw ]]; then
    verify_note "scratch restore skipped: the dump is encrypted and no identity was given"
    return 0
  fi
  SCRATCH_DB=$scratch
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  PGDATABASE=$scratch pg_admin_sql <<<'CREATE DATABASE :"db";' >/dev/null
  log info "scratch restore" key="$key" target="$(PGDATABASE=$scratch pg_target)"
  PGDATABASE=$scratch object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" pg_restore_into </dev/null
  PGDATABASE=$scratch psql -X -q -t -A -v ON_ERROR_STOP=1 -F $'\t' >"$WORK/scratch-counts.tsv" 2>"$WORK/psql.err" <<'SQL' ||
SELECT format('SELECT %L, count(*) FROM %I.%I',
              CASE WHEN table_schema = 'public' THEN table_name ELSE table_schema || '.' || table_name END,
              table_schema, table_name)
  FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' ORDER BY 1 \gexec
SQL
    die "$EX_FAILURE" "counting the rows restored into $scratch failed: $(tool_error_line "$WORK/psql.err")"
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  SCRATCH_DB=""
  tables=$(grep -c . "$WORK/scratch-counts.tsv" || true)
  rows=$(awk -F'\t' '{ n += $2 } END { print n + 0 }' "$WORK/scratch-counts.tsv")
  dumped=$(jq -r '[.components[] | select(.name == "gitea") | .details.pg_dump.tables // empty][0] // empty' "$MANIFEST")
  if [[ -n "$dumped" && "$dumped" != "$tables" ]]; then
    die "$EX_IOERR" "scratch restore of set $SET_ID: $tables tables restored, the dump's table of contents lists $dumped"
  fi
  log info "scratch restore ok" database="$scratch" tables="$tables" rows="$rows"
  VERIFY_CHECKED+=("scratch restore into $scratch: $tables tables${dumped:+ (as in the dump)}, $rows rows, database dropped")
  echo "scratch restore: $tables tables${dumped:+ (the dump lists $dumped)}, $rows rows restored into $scratch; database dropped"
}

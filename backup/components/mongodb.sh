# shellcheck shell=bash
# Summary: component mongodb: the platform's databases (default kdl and admin), each a gzipped
#          mongodump archive, read back by mongorestore --dryRun while it uploads.
#
# Environment: MONGO_URI (required; handed to the tools in a --config file, never on a command line),
#              MONGO_DATABASES (kdl admin on KDL 5, kdl on KDL 6).
# Objects:     mongodb/<db>.archive.gz (mongodump-archive+gzip).
# Restore:     mongodb (mongorestore --drop of every archive into MONGO_URI).
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component mongodb 20
kdl_restore_step mongodb mongodb 40 '^mongodb/[^/]+\.archive\.gz(\.age)?$'

MONGO_DBS=()

# mongodb_config SELECTED: MONGO_DBS; MONGO_URI is required when selected (64).
mongodb_config() {
  mapfile -t MONGO_DBS < <(kdl_words "${MONGO_DATABASES:-$(kdl_platform_default MONGO_DATABASES)}")
  if [[ "$1" == true && -z "${MONGO_URI:-}" ]]; then
    KDL_CONFIG_ERROR="MONGO_URI is required to back up mongodb (or leave mongodb out of BACKUP_COMPONENTS)"
    return "$EX_USAGE"
  fi
}

# mongodb_tools_config: the tools' --config file holding MONGO_URI, written once into $WORK; its path
# becomes KDL_MONGO_CONFIG, which the archive format's check also reads.
mongodb_tools_config() {
  if [[ -z "$KDL_MONGO_CONFIG" ]]; then
    KDL_MONGO_CONFIG="$WORK/mongo-tools.yaml"
    kdl_write_mongo_config "$KDL_MONGO_CONFIG"
  fi
}

# mongodb_preflight: the tools are present and the server answers (a dump of a database that
# does not exist: it connects, lists nothing, writes an empty archive).
mongodb_preflight() {
  local status=0
  check_require mongodb mongodump mongorestore || return 1
  mongodb_tools_config
  kdl_run_job mongodump --config "$KDL_MONGO_CONFIG" --db kdl_backup_preflight_probe --archive="$WORK/checks/mongo.archive" --quiet \
    >/dev/null 2>"$WORK/checks/mongo.err" || status=$?
  if ((status != 0)); then
    mongo_error_status "$WORK/checks/mongo.err" || status=$?
    ((status == EX_IOERR)) && status=$EX_UNAVAILABLE
    check_fail mongodb "$status" "MongoDB unreachable: $(kdl_tail_text "$WORK/checks/mongo.err" 1)"
    return 1
  fi
  rm -f "$WORK/checks/mongo.archive"
  check_ok mongodb databases="${MONGO_DBS[*]}"
}

# produce_mongodump DB: one database as a gzipped mongodump archive (URI from the config file).
produce_mongodump() {
  mongodump --config "$KDL_MONGO_CONFIG" --db "$1" --archive --gzip
}

# mongodb_backup: <db>.archive.gz per database, all at once; documents per collection from mongodump's
# own report.
mongodb_backup() {
  local db error collections started=()
  error=$(check_error mongodb)
  if [[ -n "$error" ]]; then
    component_error "mongodump: skipped: $error"
    return 0
  fi
  for db in "${MONGO_DBS[@]}"; do
    if [[ ! "$db" =~ ^[A-Za-z0-9_-]+$ ]]; then
      component_error "mongodump: skipped database '$db': not a plain database name"
      continue
    fi
    object_start "mongodump-$db" "mongodb/$db.archive.gz" mongodump-archive+gzip check produce_mongodump "$db"
    started+=("$db")
  done
  for db in "${started[@]}"; do
    object_finish "mongodump-$db" || true
    collections=$(sed -nE 's/.*done dumping ([^ .]+)\.([^ ]+) \(([0-9]+) documents?\).*/\2 \3/p' \
      "$(object_dir "mongodump-$db")/producer.err" 2>/dev/null |
      jq -Rn '[inputs | split(" ") | {key: .[0], value: (.[1] | tonumber)}] | from_entries')
    details_merge "$(jq -nc --arg db "$db" --argjson c "${collections:-{\}}" '{databases: {($db): {collections: $c}}}')"
  done
}

# mongodb_describe DETAILS: one line for `restore.sh show`.
mongodb_describe() {
  jq -r '(.databases // {}) | to_entries | map("\(.key): \(.value.collections // {} | length) collections, \(.value.collections // {} | add // 0) documents") | join("; ")' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# mongo_target: MONGO_URI's hosts without credentials or options, for plans.
mongo_target() {
  local u=${MONGO_URI:-}
  u=${u#*://}
  u=${u##*@}
  printf '%s' "${u%%[/?]*}"
}

# mongodb_plan STEP: which databases are dropped and restored.
mongodb_plan() {
  [[ -n "${MONGO_URI:-}" ]] || die "$EX_USAGE" "MONGO_URI is not set"
  local comp key rest
  while IFS=$'\t' read -r comp key rest; do
    key=${key#mongodb/}
    echo "plan: mongodb: mongorestore --archive --gzip --drop database ${key%%.archive.gz*} on $(mongo_target) (each collection in the archive is dropped, then restored)"
  done < <(step_objects_of "$1")
}

# mongorestore_drop: stdin (a mongodump archive) restored with --drop.
mongorestore_drop() {
  local status=0
  mongorestore --config="$KDL_MONGO_CONFIG" --archive --gzip --drop >&2 2>"$WORK/mongorestore.err" || status=$?
  ((status == 0)) && return 0
  tool_error_line "$WORK/mongorestore.err" >&2
  mongo_error_status "$WORK/mongorestore.err"
}

# mongodb_apply STEP: each database's archive through mongorestore --drop.
mongodb_apply() {
  mongodb_tools_config
  restore_each_object "$1" mongorestore_drop
}

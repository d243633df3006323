# shellcheck shell=bash
# Summary: component mlflow: every project's MLflow store found under MLFLOW_ROOT (a live SQLite
#          database, often in WAL mode) as a consistent snapshot, and its local artifact folders.
#
# Environment: MLFLOW_ROOT (the host path of the projects' claims).
# Objects:     mlflow/<project>/mlflow.db.zst (sqlite+zstd), mlflow/<project>/artifacts.tar.zst (tar+zstd).
# Restore:     mlflow (each database into the project's folder on the target, found by mlflow-scan,
#              else the folder it was backed up from; refuses a target database with activity after
#              the set without --force).
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component mlflow 30
kdl_restore_step mlflow mlflow 50 '^mlflow/[^/]+/(mlflow\.db|artifacts\.tar)\.zst(\.age)?$'

MLFLOW_DIR=""
SNAP_FILE=""
SNAP_ERROR=""

# mlflow_config SELECTED: MLFLOW_DIR.
mlflow_config() {
  MLFLOW_DIR=${MLFLOW_ROOT:-$KDL_DEFAULT_MLFLOW_ROOT}
}

# mlflow_preflight: mlflow-scan and sqlite3 are present and the MLflow root can be listed.
mlflow_preflight() {
  check_require mlflow mlflow-scan sqlite3 || return 1
  check_readable_dir mlflow MLFLOW_ROOT "$MLFLOW_DIR" || return 1
  check_ok mlflow root="$MLFLOW_DIR"
}

# mlflow_stores FILE: the stores of an mlflow-scan document, one line each of project, path, status,
# error, artifact folders (comma-joined) and the store's details JSON, separated by \x1f (a tab would
# let read merge empty fields).
mlflow_stores() {
  jq -r '.stores[]
    | (.path // "") as $path | ($path | sub("/[^/]*$"; "")) as $dir
    | [(.project // ""), $path, (.status // ""), (.error // "no detail"),
       ([(.artifacts // [])[] | .name] | join(",")),
       ({project, folder: ($dir | sub("^.*/"; "")), path, dbBytes, journalMode, experiments, runs, artifacts,
         status, error} | tojson)] | map(tostring) | join("\u001f")' "$1"
}

# snapshot_store PROJECT PATH: a consistent snapshot of one store (copied in one read
# transaction by mlflow-scan) under $WORK/snapshot. Sets SNAP_FILE (empty when there is
# none) and SNAP_ERROR; returns 1 when mlflow-scan failed.
snapshot_store() {
  local project=$1 path=$2 report=$COMPONENT_DIR/snapshot.json json
  SNAP_FILE="" SNAP_ERROR=""
  rm -rf -- "$WORK/snapshot" && mkdir -p "$WORK/snapshot"
  # --check none: produce_checked_snapshot checks the copy while it uploads it.
  kdl_run_job mlflow-scan --max-depth 0 --check none --snapshot "$WORK/snapshot" "${path%/*}" >"$report" \
    2>"$COMPONENT_DIR/snapshot.err" || return 1
  # The usual case without a jq process: mlflow-scan renames a copy into place once written.
  json=$(<"$report")
  if [[ -f "$WORK/snapshot/$project/mlflow.db" && "$json" == *'"status":"ok"'* && "$json" != *'"project":'*'"project":'* ]]; then
    SNAP_FILE="$WORK/snapshot/$project/mlflow.db"
    return 0
  fi
  IFS=$'\x1f' read -r SNAP_FILE SNAP_ERROR < <(jq -r --arg p "$project" '
    [.stores[] | select(.project == $p)][0] | select(. != null)
    | [(.snapshot.path // ""), (.snapshot.error // .error // "")] | join("\u001f")' "$report") || true
  return 0
}

# produce_checked_snapshot FILE DIR: FILE on stdout while PRAGMA integrity_check reads it (on
# the other core); the stream ends, and so the upload completes, only once the check said ok.
# Otherwise the object's s3-put (pid in DIR/put.pid) is stopped before its input ends: it
# aborts the upload and nothing is stored. The check's output goes to DIR/check.out.
produce_checked_snapshot() {
  local file=$1 dir=$2 checker status=0 i
  sqlite3 -readonly -bail "$file" 'PRAGMA integrity_check(20)' >"$dir/check.out" 2>&1 &
  checker=$!
  cat -- "$file" || status=$?
  wait "$checker" || status=$?
  if ((status == 0)) && [[ "$(<"$dir/check.out")" == ok ]]; then return 0; fi
  printf 'integrity_check of the snapshot failed, nothing stored: %s\n' "$(head -n 3 "$dir/check.out" | paste -sd ';' -)" >&2
  for ((i = 0; i < 100; i++)); do
    [[ -s "$dir/put.pid" ]] && break
    sleep 0.05
  done
  kill -TERM "$(<"$dir/put.pid")" 2>/dev/null || true
  return 1
}

# mlflow_finish STEP [VERIFIED]: object_finish, then its folder goes (50 stores' worth of
# small files would otherwise sit next to the next snapshot).
mlflow_finish() {
  object_finish "$@" || true
  rm -rf -- "$(object_dir "$1")"
}

# mlflow_store_usable PROJECT PATH STATUS DETAIL SEEN: false (with the reason recorded) for a store
# that cannot be stored under its project's name.
mlflow_store_usable() {
  local project=$1 path=$2 status=$3 detail=$4 seen=$5
  if [[ "$status" != ok ]]; then
    component_error "mlflow store $path: $status: $detail"
    return 1
  fi
  if [[ ! "$project" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
    component_error "mlflow store $path: project name '$project' cannot be an S3 key segment"
    return 1
  fi
  if [[ "$seen" == *" $project "* ]]; then
    component_error "mlflow store $path: another store already maps to project '$project'; not stored (rename one folder)"
    return 1
  fi
}

# mlflow_backup: per MLflow store (one at a time): mlflow/<project>/mlflow.db.zst from a consistent
# snapshot (removed right after upload) and artifacts.tar.zst for local artifacts.
mlflow_backup() {
  local error project path status detail artifacts store_json seen=" "
  local folders=() folder safe=() pending=""
  error=$(check_error mlflow)
  if [[ -n "$error" ]]; then
    component_error "mlflow-scan: skipped: $error"
    return 0
  fi
  if ! kdl_run_job mlflow-scan "$MLFLOW_DIR" >"$COMPONENT_DIR/scan.json" 2>"$COMPONENT_DIR/scan.err"; then
    component_error "mlflow-scan: $(kdl_tail_text "$COMPONENT_DIR/scan.err" 2)"
    return 0
  fi
  : >"$COMPONENT_DIR/projects.jsonl"
  : >"$COMPONENT_DIR/skipped.jsonl"
  while IFS=$'\x1f' read -r project path status detail artifacts store_json; do
    if [[ "$status" == not-mlflow ]]; then
      printf '%s\n' "$store_json" >>"$COMPONENT_DIR/skipped.jsonl"
      log info step=mlflow-scan path="$path" status="$status" "not an MLflow store: left out"
      continue
    fi
    if ! mlflow_store_usable "$project" "$path" "$status" "$detail" "$seen"; then
      [[ "$status" == ok ]] || printf '%s\n' "$store_json" >>"$COMPONENT_DIR/skipped.jsonl"
      continue
    fi
    seen+="$project "
    if ! snapshot_store "$project" "$path" || [[ -z "$SNAP_FILE" || ! -f "$SNAP_FILE" ]]; then
      component_error "mlflow snapshot of $path failed: ${SNAP_ERROR:-$(kdl_tail_text "$COMPONENT_DIR/snapshot.err" 2)}"
      continue
    fi
    object_start "mlflow-$project" "mlflow/$project/mlflow.db.zst" sqlite+zstd producer \
      produce_checked_snapshot "$SNAP_FILE" "$(object_dir "mlflow-$project")"
    # A store's artifacts stream beside its database and on while the next store is copied
    # (no disk involved); one artifacts upload at a time.
    folders=() safe=()
    if [[ -n "$artifacts" ]]; then
      IFS=, read -r -a folders <<<"$artifacts"
      for folder in "${folders[@]}"; do
        [[ -n "$folder" && "$folder" != /* && "$folder" != *..* ]] && safe+=("$folder")
      done
    fi
    if ((${#safe[@]})); then
      if [[ -n "$pending" ]]; then mlflow_finish "$pending"; fi
      object_start "artifacts-$project" "mlflow/$project/artifacts.tar.zst" tar+zstd check produce_tar "$(dirname "$path")" "${safe[@]}"
      pending="artifacts-$project"
    fi
    # Stored means checked: the upload completes only after integrity_check said ok.
    mlflow_finish "mlflow-$project" true
    rm -rf -- "$WORK/snapshot"
    printf '%s\n' "$store_json" >>"$COMPONENT_DIR/projects.jsonl"
  done < <(mlflow_stores "$COMPONENT_DIR/scan.json")
  if [[ -n "$pending" ]]; then mlflow_finish "$pending"; fi
  details_merge "$(jq -nc --arg r "$MLFLOW_DIR" --slurpfile p "$COMPONENT_DIR/projects.jsonl" --slurpfile s "$COMPONENT_DIR/skipped.jsonl" \
    '{root: $r, projects: [$p[] | del(.status, .error)], skipped: [$s[] | {path, status, error}]}')"
  return 0
}

# mlflow_describe DETAILS: one line for `restore.sh show`.
mlflow_describe() {
  jq -r '"root \(.root // "?"): \((.projects // []) | length) stores (\((.projects // []) | map(.project) | join(", ")))\(if ((.skipped // []) | length) > 0 then ", \(.skipped | length) skipped" else "" end)"' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# mlflow_projects STEP: project names with a database in the step's objects.
mlflow_projects() {
  step_objects_of "$1" | awk -F'\t' '$2 ~ /\/mlflow\.db\.zst/ { split($2, p, "/"); print p[2] }' | sort -u
}

# mlflow_scan_target: `project<TAB>folder` for every store found on the target by mlflow-scan.
mlflow_scan_target() {
  [[ -f "$WORK/mlflow-target.tsv" ]] && return 0
  local status=0
  mlflow-scan "$MLFLOW_DIR" >"$WORK/mlflow-scan.json" 2>"$WORK/mlflow-scan.err" || status=$?
  ((status == 0)) || die "$status" "mlflow-scan $MLFLOW_DIR failed: $(tool_error_line "$WORK/mlflow-scan.err")"
  jq -r '.stores[] | select(.project != null and .path != null) | [.project, (.path | sub("/mlflow\\.db$"; ""))] | @tsv' \
    "$WORK/mlflow-scan.json" >"$WORK/mlflow-target.tsv" || die "$EX_IOERR" "mlflow-scan printed something unexpected"
}

# mlflow_folder PROJECT: the project's store folder on the target, or MLFLOW_ROOT/<the folder it was backed up from>.
mlflow_folder() {
  local project=$1 folder orig
  mlflow_scan_target
  folder=$(awk -F'\t' -v p="$project" '$1 == p { print $2; exit }' "$WORK/mlflow-target.tsv")
  if [[ -z "$folder" ]]; then
    orig=$(jq -r --arg p "$project" '[.components[] | select(.name == "mlflow") | (.details.projects // [])[]
        | select(.project == $p) | .folder // empty][0] // empty' "$MANIFEST")
    [[ -n "$orig" && "$orig" != . && "$orig" != .. && "$orig" != */* ]] || orig=$project
    folder="$MLFLOW_DIR/$orig"
  fi
  printf '%s\n' "$folder"
}

# mlflow_last_activity DB: newest MLflow activity in DB in epoch seconds (runs, experiments), else file mtime.
mlflow_last_activity() {
  local db=$1 ms
  ms=$(sqlite3 -readonly "$db" 'SELECT max(coalesce(max(r.end_time), 0), coalesce(max(r.start_time), 0),
         coalesce((SELECT max(last_update_time) FROM experiments), 0)) FROM runs r;' 2>/dev/null) || ms=""
  if [[ "$ms" =~ ^[0-9]+$ ]]; then echo $((ms / 1000)); else stat -c %Y "$db"; fi
}

# mlflow_plan STEP: each project's target folder; refuses (64) a target database newer than the set without --force.
mlflow_plan() {
  [[ -d "$MLFLOW_DIR" ]] || die "$EX_NOINPUT" "MLFLOW_ROOT does not exist: $MLFLOW_DIR"
  local project folder started newer=() last
  started=$(set_started_epoch)
  : >"$WORK/mlflow-plan.tsv"
  while IFS= read -r project; do
    folder=$(mlflow_folder "$project")
    printf '%s\t%s\n' "$project" "$folder" >>"$WORK/mlflow-plan.tsv"
    if [[ -f "$folder/mlflow.db" ]]; then
      last=$(mlflow_last_activity "$folder/mlflow.db")
      if ((last > started)); then
        echo "plan: mlflow: project $project: $folder/mlflow.db has activity after the backup ($(date -u -d "@$last" +%FT%TZ))$([[ "$FORCE" == true ]] && echo ': replaced anyway (--force)' || echo ': REFUSED without --force')"
        [[ "$FORCE" == true ]] || newer+=("$project")
      else
        echo "plan: mlflow: project $project: replace $folder/mlflow.db (and remove its -wal/-shm)"
      fi
    else
      echo "plan: mlflow: project $project: write $folder/mlflow.db$([[ -d "$folder" ]] || echo ' (folder created)')"
    fi
    if step_objects_of "$1" | grep -qF "mlflow/$project/artifacts.tar"; then
      echo "plan: mlflow: project $project: extract artifacts.tar.zst into $folder"
    fi
  done < <(mlflow_projects "$1")
  ((${#newer[@]} == 0)) || die "$EX_USAGE" "refusing to replace MLflow databases newer than set $SET_ID (${newer[*]}); --force replaces them"
}

# write_sqlite_into FOLDER: stdin (an SQLite database, checked by the format's check on the way)
# checked again as the file it becomes, then moved over FOLDER/mlflow.db.
write_sqlite_into() {
  local folder=$1 tmp result
  tmp=$(mktemp "$folder/.mlflow.db.restore.XXXXXX")
  cat >"$tmp"
  result=$(sqlite3 -readonly "$tmp" 'PRAGMA integrity_check;' 2>&1 | head -n 3) || true
  [[ "$result" == ok ]] || { rm -f "$tmp"; printf 'integrity_check: %s\n' "$result" >&2; return "$EX_IOERR"; }
  chmod 0644 "$tmp"
  chown --reference="$folder" "$tmp" 2>/dev/null || true
  rm -f "$folder/mlflow.db-wal" "$folder/mlflow.db-shm"
  mv -f "$tmp" "$folder/mlflow.db"
}

# mlflow_apply STEP: each project's database (and local artifacts) into the folder chosen by the plan.
mlflow_apply() {
  local step=$1 project folder comp key bytes sha enc format
  while IFS=$'\t' read -r project folder; do
    mkdir -p "$folder"
    while IFS=$'\t' read -r comp key bytes sha enc format; do
      case "$key" in
        "mlflow/$project/mlflow.db.zst"*)
          log info "mlflow database" project="$project" target="$folder/mlflow.db"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" write_sqlite_into "$folder" </dev/null
          ;;
        "mlflow/$project/artifacts.tar.zst"*)
          log info "mlflow artifacts" project="$project" target="$folder"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" extract_tar "$folder" </dev/null
          ;;
      esac
    done < <(step_objects_of "$step")
  done <"$WORK/mlflow-plan.tsv"
}

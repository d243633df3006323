# shellcheck shell=bash
# Summary: component mlflow: every project's MLflow store found under MLFLOW_ROOT (a live SQLite
#          database, often in WAL mode) as a consistent snapshot, and its local artifact folders.
#
# Environment: MLFLOW_ROOT (the host path of the projects' claims); restore: MLFLOW_RESTORE_OWNER.
# Objects:     mlflow/<project>/mlflow.db.zst (sqlite+zstd), mlflow/<project>/artifacts.tar.zst (tar+zstd).
# Restore:     mlflow (each database into the project's folder on the target: found by mlflow-scan, else
#              the empty folder of the project's new claim, else the folder it was backed up from; refuses a
#              target database with activity after the set without --force; folders it creates belong to
#              MLFLOW_RESTORE_OWNER).
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component mlflow 30
kdl_restore_step mlflow mlflow 50 '^mlflow/[^/]+/(mlflow\.db|artifacts\.tar)\.zst(\.age)?$'

MLFLOW_DIR=""
MLFLOW_SCAN_NS=()
MLFLOW_OWNER=$KDL_DEFAULT_MLFLOW_OWNER
SNAP_FILE=""
SNAP_ERROR=""

# mlflow_config SELECTED: MLFLOW_DIR; MLFLOW_OWNER (uid:gid of folders a restore creates, 64 when malformed).
mlflow_config() {
  MLFLOW_DIR=${MLFLOW_ROOT:-$KDL_DEFAULT_MLFLOW_ROOT}
  MLFLOW_OWNER=${MLFLOW_RESTORE_OWNER:-$KDL_DEFAULT_MLFLOW_OWNER}
  if [[ ! "$MLFLOW_OWNER" =~ ^[0-9]+:[0-9]+$ ]]; then
    KDL_CONFIG_ERROR="MLFLOW_RESTORE_OWNER '$MLFLOW_OWNER' must be numeric uid:gid (MLflow's image runs as 1000:1000)"
    return "$EX_USAGE"
  fi
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
  kdl_run_job mlflow-scan "${MLFLOW_SCAN_NS[@]}" --max-depth 0 --check none --snapshot "$WORK/snapshot" "${path%/*}" >"$report" \
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
  mlflow_namespaces
  if ! kdl_run_job mlflow-scan "${MLFLOW_SCAN_NS[@]}" "$MLFLOW_DIR" >"$COMPONENT_DIR/scan.json" 2>"$COMPONENT_DIR/scan.err"; then
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
  mlflow_namespaces
  mlflow-scan "${MLFLOW_SCAN_NS[@]}" "$MLFLOW_DIR" >"$WORK/mlflow-scan.json" 2>"$WORK/mlflow-scan.err" || status=$?
  ((status == 0)) || die "$status" "mlflow-scan $MLFLOW_DIR failed: $(tool_error_line "$WORK/mlflow-scan.err")"
  jq -r '.stores[] | select(.project != null and .path != null) | [.project, (.path | sub("/mlflow\\.db$"; ""))] | @tsv' \
    "$WORK/mlflow-scan.json" >"$WORK/mlflow-target.tsv" || die "$EX_IOERR" "mlflow-scan printed something unexpected"
}

# mlflow_namespaces: MLFLOW_SCAN_NS, mlflow-scan's --namespace flags for KDL 6's claim folders (none on KDL 5).
mlflow_namespaces() {
  local ns
  MLFLOW_SCAN_NS=()
  ns=$(kdl_mlflow_namespaces)
  [[ -z "$ns" ]] || MLFLOW_SCAN_NS=(--namespace "$ns")
}

# mlflow_claim_folder PROJECT: the one folder under MLFLOW_ROOT named for PROJECT's claim
# (KDL 5: kdl-<project>-mlflow-claim-pvc-<uid>; KDL 6: <ns>-<project>-mlflow-pvc-<uid>: a new cluster gives
# the claim a new uid) that has no store yet; empty when there is none or more than one.
mlflow_claim_folder() {
  local project=$1 dir found=() ns pattern=()
  ns=$(kdl_mlflow_namespaces)
  pattern=("$MLFLOW_DIR"/kdl-"$project"-mlflow-claim-pvc-*/)
  [[ -z "$ns" ]] || pattern+=("$MLFLOW_DIR/$ns-$project"-mlflow-pvc-*/)
  for dir in "${pattern[@]}"; do
    [[ -d "$dir" ]] || continue
    dir=${dir%/}
    if [[ "${dir##*/}" =~ ^kdl-(.+)-mlflow-claim-pvc-[0-9A-Za-z-]+$ && "${BASH_REMATCH[1]}" == "$project" ]] ||
      [[ -n "$ns" && "${dir##*/}" == "$ns-$project-mlflow-pvc-"* && "${dir##*/}" =~ -mlflow-pvc-[0-9A-Za-z-]+$ ]]; then
      [[ -e "$dir/mlflow.db" ]] || found+=("$dir")
    fi
  done
  ((${#found[@]} == 1)) && printf '%s\n' "${found[0]}"
  return 0
}

# mlflow_folder PROJECT: the project's store folder on the target (found by mlflow-scan), else its claim's
# empty folder, else MLFLOW_ROOT/<the folder it was backed up from>.
mlflow_folder() {
  local project=$1 folder orig
  mlflow_scan_target
  folder=$(awk -F'\t' -v p="$project" '$1 == p { print $2; exit }' "$WORK/mlflow-target.tsv")
  [[ -n "$folder" ]] || folder=$(mlflow_claim_folder "$project")
  if [[ -z "$folder" ]]; then
    orig=$(jq -r --arg p "$project" '[.components[] | select(.name == "mlflow") | (.details.projects // [])[]
        | select(.project == $p) | .folder // empty][0] // empty' "$MANIFEST")
    [[ -n "$orig" && "$orig" != . && "$orig" != .. && "$orig" != */* ]] || orig=$project
    folder="$MLFLOW_DIR/$orig"
  fi
  printf '%s\n' "$folder"
}

# mlflow_last_activity DB: the newest MLflow activity in DB in epoch seconds: runs started or ended,
# experiments changed, registered models and versions changed. A fresh server's store (MLflow creates the
# Default experiment, id 0, stamped with its start time) has none: 0. A file without MLflow's tables is
# judged by its modification time.
mlflow_last_activity() {
  local db=$1 tables sql="SELECT max(0" ms=""
  tables=" $(sqlite3 -readonly "$db" "SELECT name FROM sqlite_master WHERE type = 'table'" 2>/dev/null | tr '\n' ' ') "
  if [[ "$tables" == *" runs "* && "$tables" == *" experiments "* ]]; then
    sql+=", coalesce((SELECT max(max(coalesce(start_time, 0), coalesce(end_time, 0))) FROM runs), 0)"
    sql+=", coalesce((SELECT max(last_update_time) FROM experiments e WHERE NOT (e.experiment_id = 0
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = 0))), 0)"
    [[ "$tables" == *" registered_models "* ]] && sql+=", coalesce((SELECT max(last_updated_time) FROM registered_models), 0)"
    [[ "$tables" == *" model_versions "* ]] && sql+=", coalesce((SELECT max(last_updated_time) FROM model_versions), 0)"
    # Stores of MLflow versions older than the columns named here: runs and experiments only.
    ms=$(sqlite3 -readonly "$db" "$sql)" 2>/dev/null) ||
      ms=$(sqlite3 -readonly "$db" "SELECT max(coalesce((SELECT max(max(coalesce(start_time, 0), coalesce(end_time, 0))) FROM runs), 0),
             coalesce((SELECT max(last_update_time) FROM experiments), 0))" 2>/dev/null) || ms=""
  fi
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
      mlflow_store_state "$folder" >"$WORK/mlflow-state-$project"
      if [[ -e "$folder/mlflow.db-shm" || -e "$folder/mlflow.db-wal" ]]; then
        log warn "an MLflow server may still have this store open: stop it (scale its Deployment to 0) before the restore" \
          project="$project" store="$folder/mlflow.db"
      fi
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

# mlflow_store_state FOLDER: what tells that a store changed: size and modification time of the database
# and of its WAL.
mlflow_store_state() {
  stat -c '%n %s %Y' "$1/mlflow.db" "$1/mlflow.db-wal" 2>/dev/null || true
}

# write_sqlite_into FOLDER PROJECT: stdin (an SQLite database, checked by the format's check on the way)
# checked again as the file it becomes, then moved over FOLDER/mlflow.db with the folder's owner. The copy
# is in rollback-journal mode (SQLite's backup leaves it so); MLflow switches it back to WAL if it wants.
# A store that changed since the plan read it (a server still writing) is warned about.
write_sqlite_into() {
  local folder=$1 project=$2 tmp
  tmp=$(mktemp "$folder/.mlflow.db.restore.XXXXXX")
  cat >"$tmp"
  sqlite_file_ok "$tmp" || { rm -f "$tmp"; return "$EX_IOERR"; }
  chmod 0644 "$tmp"
  chown --reference="$folder" "$tmp" 2>/dev/null || true
  if [[ -f "$WORK/mlflow-state-$project" && "$(mlflow_store_state "$folder")" != "$(<"$WORK/mlflow-state-$project")" ]]; then
    log warn "the store changed during the restore: is its MLflow server still running? It is replaced all the same" \
      project="$project" store="$folder/mlflow.db"
  fi
  rm -f "$folder/mlflow.db-wal" "$folder/mlflow.db-shm"
  mv -f "$tmp" "$folder/mlflow.db"
}

# mlflow_prepare_folder FOLDER: the project's folder, created readable by MLflow (0755) and, when created
# by root, owned by MLFLOW_OWNER (an existing folder keeps its owner).
mlflow_prepare_folder() {
  local folder=$1
  [[ -d "$folder" ]] && return 0
  mkdir -m 0755 "$folder" # a child of MLFLOW_ROOT, which the plan found
  if ((EUID == 0)); then chown "$MLFLOW_OWNER" "$folder"; fi
}

# mlflow_own_artifacts FOLDER: extracted artifacts get the folder's owner (as root only).
mlflow_own_artifacts() {
  if ((EUID == 0)); then chown -R -h --reference="$1" "$1"; fi
}

# mlflow_apply STEP: each project's database (and local artifacts) into the folder chosen by the plan.
mlflow_apply() {
  local step=$1 project folder comp key bytes sha enc format
  while IFS=$'\t' read -r project folder; do
    mlflow_prepare_folder "$folder"
    while IFS=$'\t' read -r comp key bytes sha enc format; do
      case "$key" in
        "mlflow/$project/mlflow.db.zst"*)
          log info "mlflow database" project="$project" target="$folder/mlflow.db"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" write_sqlite_into "$folder" "$project" </dev/null
          ;;
        "mlflow/$project/artifacts.tar.zst"*)
          log info "mlflow artifacts" project="$project" target="$folder"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" extract_tar "$folder" </dev/null
          mlflow_own_artifacts "$folder"
          ;;
      esac
    done < <(step_objects_of "$step")
  done <"$WORK/mlflow-plan.tsv"
}

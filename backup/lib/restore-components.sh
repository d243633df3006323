# shellcheck shell=bash
# Summary: per-component steps of restore.sh: format checks, plans, and the changes themselves.
#
# Steps (the order of `all`): k8s-secrets gitea-db gitea-data mongodb mlflow k8s-resources.
# Each step has objects (step_objects), a plan (plan_STEP, printed before anything changes), and an
# apply (apply_STEP) that streams each object through object_pipeline into its target.

# shellcheck disable=SC2034  # used by restore.sh
readonly ALL_STEPS=(k8s-secrets gitea-db gitea-data mongodb mlflow k8s-resources)

# ---------------------------------------------------------------- format checks (verify consumers)

# check_pg_dump: stdin is a pg_dump custom-format archive whose table of contents reads.
check_pg_dump() {
  pg_restore --list >/dev/null
}

# check_tar: stdin is a tar stream with no hostile entry.
check_tar() {
  tar_check_listing >/dev/null
}

# check_sqlite: stdin is an SQLite database that passes PRAGMA integrity_check (staged in $WORK, one at a time).
check_sqlite() {
  local db="$WORK/check.db" result
  rm -f "$db"
  cat >"$db"
  result=$(sqlite3 -readonly "$db" 'PRAGMA integrity_check;' 2>&1 | head -n 3) || true
  rm -f "$db"
  [[ "$result" == ok ]] || { printf 'integrity_check: %s\n' "${result//$'\n'/; }" >&2; return 74; }
}

# check_yaml: stdin is multi-document YAML where every document names its apiVersion and kind.
check_yaml() {
  awk '
    function end_doc() { if (lines > 0 && !(api && kind)) bad++; lines = 0; api = 0; kind = 0 }
    /^---/ { end_doc(); next }
    /^[[:space:]]*(#.*)?$/ { next }
    { lines++ }
    /^apiVersion:/ { api = 1 }
    /^kind:/ { kind = 1 }
    END { end_doc(); if (bad) { print bad " document(s) without apiVersion/kind" > "/dev/stderr"; exit 74 } }'
}

# mongo_config: writes $WORK/mongo.yaml holding MONGO_URI (kept out of argv) and prints its path.
mongo_config() {
  local file="$WORK/mongo.yaml"
  [[ -f "$file" ]] || kdl_write_mongo_config "$file"
  printf '%s\n' "$file"
}

# mongo_status ERRFILE: 69 when mongorestore's error says the server was unreachable, 77 when refused, else 74.
mongo_status() {
  if grep -qiE 'no reachable servers|server selection|connection refused|connect: |timed out|no such host' "$1"; then
    return "$EX_UNAVAILABLE"
  elif grep -qiE 'auth|unauthorized|not authorized' "$1"; then return "$EX_NOPERM"; else return "$EX_IOERR"; fi
}

# check_mongo_archive: stdin is a mongodump --archive --gzip stream. With MONGO_URI set, mongorestore
# reads it with --dryRun (it writes nothing); otherwise the gzip framing and the archive's magic
# number (0x8199e26d) are checked here.
check_mongo_archive() {
  if [[ -n "${MONGO_URI:-}" ]] && command -v mongorestore >/dev/null; then
    local cfg status=0
    cfg=$(mongo_config)
    mongorestore --config="$cfg" --archive --gzip --dryRun --quiet >/dev/null 2>"$WORK/mongorestore.err" || status=$?
    ((status == 0)) && return 0
    tool_error_line "$WORK/mongorestore.err" >&2
    mongo_status "$WORK/mongorestore.err"
    return
  fi
  local magic
  magic=$(gzip -dc | { head -c 4 | od -An -tx1 | tr -d ' \n'; cat >/dev/null; })
  ((PIPESTATUS[0] == 0)) || { echo "not a gzip stream" >&2; return 74; }
  [[ "$magic" == 6de29981 ]] || { echo "not a mongodump archive (magic $magic)" >&2; return 74; }
}

# discard: swallows stdin (objects of an unknown format: checksum only).
discard() {
  cat >/dev/null
}

# check_for KEY: the format check of an object, by its name.
check_for() {
  local key=${1%.age}
  case "$key" in
    *.dump) echo check_pg_dump ;;
    *.tar | *.tar.zst) echo check_tar ;;
    *.archive.gz) echo check_mongo_archive ;;
    *.db | *.db.zst) echo check_sqlite ;;
    *.yaml | *.yaml.zst) echo check_yaml ;;
    *) echo discard ;;
  esac
}

# object_mode ENCRYPTED: the decrypt mode for an object, given whether an identity is at hand.
object_mode() {
  if [[ "$1" != true ]]; then echo plain; elif [[ -n "$IDENTITY" ]]; then echo age; else echo raw; fi
}

# check_label CHECK: what a format check runs, in words (for verify's report).
check_label() {
  case "$1" in
    check_pg_dump) echo "pg_restore --list" ;;
    check_tar) echo "tar -t" ;;
    check_sqlite) echo "PRAGMA integrity_check" ;;
    check_mongo_archive)
      if [[ -n "${MONGO_URI:-}" ]] && command -v mongorestore >/dev/null; then echo "mongorestore --dryRun"; else echo "archive framing"; fi
      ;;
    check_yaml) echo "YAML documents" ;;
  esac
}

# verify_objects TSV_FILE: every object in TSV_FILE downloaded, checked and (if readable) format-checked.
# Sets VERIFIED_COUNT, VERIFIED_BYTES, VERIFIED_UNREAD and VERIFIED_CHECKS (the format checks run, in words).
verify_objects() {
  local comp key bytes sha enc mode check count=0 total=0 unread=0
  local -A used=()
  while IFS=$'\t' read -r comp key bytes sha enc; do
    mode=$(object_mode "$enc")
    check=$(check_for "$key")
    [[ "$mode" == raw ]] && check=discard && unread=$((unread + 1))
    [[ "$check" == discard ]] || used[$(check_label "$check")]=1
    log info "verify object" component="$comp" key="$key" bytes="$bytes" check="$check"
    object_pipeline "$key" "$sha" "$mode" "$check" </dev/null
    count=$((count + 1))
    total=$((total + bytes))
  done <"$1"
  # shellcheck disable=SC2034  # read by restore.sh
  VERIFIED_COUNT=$count VERIFIED_BYTES=$total VERIFIED_UNREAD=$unread
  # shellcheck disable=SC2034  # read by restore.sh
  VERIFIED_CHECKS=""
  if ((${#used[@]})); then VERIFIED_CHECKS=$(printf '%s\n' "${!used[@]}" | LC_ALL=C sort | paste -sd ';' - | sed 's/;/, /g'); fi
}

# ---------------------------------------------------------------- step objects

# step_component STEP: the manifest component a step takes its objects from.
step_component() {
  case "$1" in
    gitea-db | gitea-data) echo gitea ;;
    mongodb) echo mongodb ;;
    mlflow) echo mlflow ;;
    k8s-secrets | k8s-resources) echo kubernetes ;;
  esac
}

# step_key_regex STEP: which of the component's keys the step uses.
step_key_regex() {
  case "$1" in
    gitea-db) echo '^gitea/postgres\.dump(\.age)?$' ;;
    gitea-data) echo '^gitea/data\.tar\.zst(\.age)?$' ;;
    mongodb) echo '^mongodb/[^/]+\.archive\.gz(\.age)?$' ;;
    mlflow) echo '^mlflow/[^/]+/(mlflow\.db|artifacts\.tar)\.zst(\.age)?$' ;;
    k8s-secrets) echo '^kubernetes/secrets\.yaml\.zst(\.age)?$' ;;
    k8s-resources) echo '^kubernetes/[^/]+\.yaml\.zst(\.age)?$' ;;
  esac
}

# step_objects STEP ALLOW_PARTIAL: writes the step's objects to $WORK/steps/STEP.tsv; returns 1 when
# the step has nothing to do (skipped with a warning); dies 66 when a needed component is missing.
step_objects() {
  local step=$1 allow_partial=$2 comp status file="$WORK/steps/$1.tsv" regex
  comp=$(step_component "$step")
  regex=$(step_key_regex "$step")
  mkdir -p "$WORK/steps"
  status=$(jq -r --arg c "$comp" '[.components[] | select(.name == $c) | .status][0] // "absent"' "$MANIFEST")
  if [[ "$status" != success ]]; then
    [[ "$allow_partial" == true ]] || die "$EX_NOINPUT" "set $SET_ID has no usable $comp component (status $status); --allow-partial skips it"
    log warn "skipping step: component not in the set" step="$step" component="$comp" status="$status"
    return 1
  fi
  objects_tsv ".name == \"$comp\"" | awk -F'\t' -v re="$regex" '$2 ~ re' >"$file"
  if [[ "$step" == k8s-resources ]]; then
    awk -F'\t' '$2 !~ /^kubernetes\/secrets\.yaml/' "$file" >"$file.tmp" && mv "$file.tmp" "$file"
  fi
  if [[ ! -s "$file" ]]; then
    case "$step" in
      gitea-db | gitea-data) die "$EX_NOINPUT" "set $SET_ID has no object for $step" ;;
    esac
    log warn "nothing to restore" step="$step"
    return 1
  fi
}

# ---------------------------------------------------------------- targets

# pg_target: "host:port/db" for plans and errors.
pg_target() {
  printf '%s:%s/%s' "${PGHOST:-localhost}" "${PGPORT:-5432}" "${PGDATABASE:-gitea}"
}

# pg_admin_sql: runs SQL from stdin on the maintenance database (variables: -v db=NAME); 69/77 on connection errors.
pg_admin_sql() {
  local status=0 out
  out=$(PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10} psql -X -q -t -A -v ON_ERROR_STOP=1 -v db="${PGDATABASE:-gitea}" -d postgres 2>"$WORK/psql.err") || status=$?
  if ((status != 0)); then
    if grep -qiE 'password authentication|permission denied|no pg_hba' "$WORK/psql.err"; then
      die "$EX_NOPERM" "PostgreSQL at $(pg_target) refused us: $(tool_error_line "$WORK/psql.err")"
    fi
    ((status == 2)) && die "$EX_UNAVAILABLE" "PostgreSQL at $(pg_target) unreachable: $(tool_error_line "$WORK/psql.err")"
    die "$EX_FAILURE" "PostgreSQL at $(pg_target): $(tool_error_line "$WORK/psql.err")"
  fi
  printf '%s\n' "$out"
}

# mongo_target: MONGO_URI's hosts without credentials or options, for plans.
mongo_target() {
  local u=${MONGO_URI:-}
  u=${u#*://}
  u=${u##*@}
  printf '%s' "${u%%[/?]*}"
}

# kubectl_setup: a kubeconfig in $WORK from K8S_SERVER/K8S_TOKEN_FILE/K8S_CA_FILE (the token stays in its
# file: kubectl reads tokenFile), or kubectl's own configuration (in-cluster or KUBECONFIG) otherwise.
kubectl_setup() {
  KUBECTL=(kubectl)
  if [[ -n "${K8S_SERVER:-}" ]]; then
    local cfg="$WORK/kubeconfig"
    {
      printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: target\n  cluster:\n    server: "%s"\n' "$K8S_SERVER"
      [[ -n "${K8S_CA_FILE:-}" ]] && printf '    certificate-authority: "%s"\n' "$K8S_CA_FILE"
      printf 'users:\n- name: restore\n  user:\n'
      if [[ -n "${K8S_TOKEN_FILE:-}" ]]; then printf '    tokenFile: "%s"\n' "$K8S_TOKEN_FILE"; else printf '    {}\n'; fi
      printf 'contexts:\n- name: target\n  context:\n    cluster: target\n    user: restore\n    namespace: "%s"\n' "${K8S_NAMESPACE:-kdl}"
      printf 'current-context: target\n'
    } >"$cfg"
    KUBECTL+=(--kubeconfig "$cfg")
  fi
  KUBECTL+=(--namespace "${K8S_NAMESPACE:-kdl}")
}

# ---------------------------------------------------------------- plans

# each_object STEP: the step's objects as TSV lines on stdout.
each_object() {
  cat "$WORK/steps/$1.tsv"
}

# plan_gitea_db: what pg_restore will drop and recreate.
plan_gitea_db() {
  local exists tables
  exists=$(pg_admin_sql <<<"SELECT count(*) FROM pg_database WHERE datname = :'db';")
  if [[ "$exists" == 1 ]]; then
    tables=$(PGCONNECT_TIMEOUT=10 psql -X -q -t -A -c "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema')" </dev/null 2>/dev/null || echo '?')
    echo "plan: gitea-db: database $(pg_target) exists ($tables tables): pg_restore --clean --if-exists --no-owner drops and recreates every object of the dump"
  else
    echo "plan: gitea-db: create database ${PGDATABASE:-gitea} on ${PGHOST:-localhost}:${PGPORT:-5432}, then pg_restore --no-owner into it"
  fi
}

# plan_gitea_data: where the tar goes and what it overwrites.
plan_gitea_data() {
  local dir=$GITEA_DATA_DIR existing
  [[ -d "$dir" ]] || die "$EX_NOINPUT" "GITEA_DATA_DIR does not exist: $dir"
  [[ -w "$dir" ]] || die "$EX_NOPERM" "GITEA_DATA_DIR is not writable: $dir"
  existing=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)
  echo "plan: gitea-data: extract gitea/data.tar.zst into $dir ($existing top-level entries present; files in the backup overwrite theirs, others stay)$( ((EUID == 0)) && echo ', then chown -R 1000:1000')"
}

# plan_mongodb: which databases are dropped and restored.
plan_mongodb() {
  [[ -n "${MONGO_URI:-}" ]] || die "$EX_USAGE" "MONGO_URI is not set"
  local comp key rest
  while IFS=$'\t' read -r comp key rest; do
    key=${key#mongodb/}
    echo "plan: mongodb: mongorestore --archive --gzip --drop database ${key%%.archive.gz*} on $(mongo_target) (each collection in the archive is dropped, then restored)"
  done < <(each_object mongodb)
}

# mlflow_projects: project names with a database in the step's objects.
mlflow_projects() {
  each_object mlflow | awk -F'\t' '{ split($2, p, "/"); if ($2 ~ /\/mlflow\.db\.zst/) print p[2] }' | sort -u
}

# mlflow_scan_target: `project<TAB>folder` for every store found on the target by mlflow-scan.
mlflow_scan_target() {
  [[ -f "$WORK/mlflow-target.tsv" ]] && return 0
  local status=0
  mlflow-scan "$MLFLOW_ROOT" >"$WORK/mlflow-scan.json" 2>"$WORK/mlflow-scan.err" || status=$?
  ((status == 0)) || die "$status" "mlflow-scan $MLFLOW_ROOT failed: $(tool_error_line "$WORK/mlflow-scan.err")"
  jq -r '(if type == "array" then . else (.stores // .projects // []) end)[]
         | select(.project != null and .path != null)
         | [.project, (.path | sub("/mlflow\\.db$"; ""))] | @tsv' "$WORK/mlflow-scan.json" >"$WORK/mlflow-target.tsv" ||
    die "$EX_IOERR" "mlflow-scan printed something unexpected"
}

# mlflow_folder PROJECT: the project's store folder on the target, or MLFLOW_ROOT/<original folder name>.
mlflow_folder() {
  local project=$1 folder orig
  mlflow_scan_target
  folder=$(awk -F'\t' -v p="$project" '$1 == p { print $2; exit }' "$WORK/mlflow-target.tsv")
  if [[ -z "$folder" ]]; then
    orig=$(jq -r --arg p "$project" '
        [.components[] | select(.name == "mlflow") | .details // {} | (.projects // .stores // [])
         | (if type == "object" then to_entries | map(.value + {project: (.value.project // .key)}) else . end)[]
         | select(.project == $p) | (.folder // .path // .dir // empty)
         | sub("/mlflow\\.db$"; "") | split("/") | last][0] // empty' "$MANIFEST")
    [[ -n "$orig" && "$orig" != . && "$orig" != .. && "$orig" != */* ]] || orig=$project
    folder="$MLFLOW_ROOT/$orig"
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

# set_started_epoch: the set's startedAt (else its id) in epoch seconds.
set_started_epoch() {
  local started id
  started=$(jq -r '.startedAt // empty' "$MANIFEST")
  id=$SET_ID
  if [[ -z "$started" && "$id" =~ ^([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z$ ]]; then
    started="${BASH_REMATCH[1]}-${BASH_REMATCH[2]}-${BASH_REMATCH[3]}T${BASH_REMATCH[4]}:${BASH_REMATCH[5]}:${BASH_REMATCH[6]}Z"
  fi
  date -u -d "$started" +%s 2>/dev/null || die "$EX_IOERR" "set $SET_ID has no readable startedAt"
}

# plan_mlflow: each project's target folder; refuses (64) a target database newer than the set without --force.
plan_mlflow() {
  [[ -d "$MLFLOW_ROOT" ]] || die "$EX_NOINPUT" "MLFLOW_ROOT does not exist: $MLFLOW_ROOT"
  local project folder started newer=() last
  started=$(set_started_epoch)
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
    if grep -qF "mlflow/$project/artifacts.tar" "$WORK/steps/mlflow.tsv"; then
      echo "plan: mlflow: project $project: extract artifacts.tar.zst into $folder"
    fi
  done < <(mlflow_projects)
  ((${#newer[@]} == 0)) || die "$EX_USAGE" "refusing to replace MLflow databases newer than set $SET_ID (${newer[*]}); --force replaces them"
}

# plan_k8s STEP: what kubectl applies, or which files --output writes.
plan_k8s() {
  local comp key rest plural
  while IFS=$'\t' read -r comp key rest; do
    plural=${key#kubernetes/}
    plural=${plural%%.yaml*}
    if [[ -n "$OUTPUT_DIR" ]]; then
      echo "plan: kubernetes: write $OUTPUT_DIR/$plural.yaml (decrypted, decompressed; nothing applied)"
    else
      echo "plan: kubernetes: kubectl apply --server-side $plural into namespace ${K8S_NAMESPACE:-kdl}${K8S_SERVER:+ on $K8S_SERVER}"
    fi
  done < <(each_object "$1")
}

# plan_step STEP: the step's plan lines on stdout.
plan_step() {
  case "$1" in
    gitea-db) plan_gitea_db ;;
    gitea-data) plan_gitea_data ;;
    mongodb) plan_mongodb ;;
    mlflow) plan_mlflow ;;
    k8s-secrets | k8s-resources) plan_k8s "$1" ;;
  esac
}

# step_changes_live STEP: true unless the step only writes files (--output).
step_changes_live() {
  [[ "$1" != k8s-* || -z "$OUTPUT_DIR" ]]
}

# ---------------------------------------------------------------- apply

# pg_restore_into: stdin (a pg_dump -Fc stream) restored into PGDATABASE in one transaction.
pg_restore_into() {
  pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction --dbname="${PGDATABASE:-gitea}" >&2
}

# apply_gitea_db: creates the database when missing, then pg_restore --clean --if-exists --no-owner.
apply_gitea_db() {
  local comp key bytes sha enc exists
  exists=$(pg_admin_sql <<<"SELECT count(*) FROM pg_database WHERE datname = :'db';")
  if [[ "$exists" != 1 ]]; then
    pg_admin_sql <<<'CREATE DATABASE :"db";' >/dev/null
    log info "created database" database="${PGDATABASE:-gitea}"
  fi
  while IFS=$'\t' read -r comp key bytes sha enc; do
    log info "pg_restore" key="$key" target="$(pg_target)"
    object_pipeline "$key" "$sha" "$(object_mode "$enc")" pg_restore_into </dev/null
  done < <(each_object gitea-db)
}

# extract_tar DIR: stdin (a checked tar stream) extracted into DIR with GNU tar's own guards as well.
extract_tar() {
  tar -x -f - -C "$1" --no-overwrite-dir --delay-directory-restore --no-same-owner
}

# apply_gitea_data: extracts the data tar into GITEA_DATA_DIR, then owner 1000:1000 when root.
apply_gitea_data() {
  local comp key bytes sha enc
  while IFS=$'\t' read -r comp key bytes sha enc; do
    log info "extract" key="$key" target="$GITEA_DATA_DIR"
    object_pipeline "$key" "$sha" "$(object_mode "$enc")" extract_tar "$GITEA_DATA_DIR" </dev/null
  done < <(each_object gitea-data)
  if ((EUID == 0)); then chown -R -h 1000:1000 "$GITEA_DATA_DIR"; fi
}

# mongorestore_drop: stdin (a mongodump archive) restored with --drop.
mongorestore_drop() {
  local cfg status=0
  cfg=$(mongo_config)
  mongorestore --config="$cfg" --archive --gzip --drop >&2 2>"$WORK/mongorestore.err" || status=$?
  ((status == 0)) && return 0
  tool_error_line "$WORK/mongorestore.err" >&2
  mongo_status "$WORK/mongorestore.err"
}

# apply_mongodb: each database's archive through mongorestore --drop.
apply_mongodb() {
  local comp key bytes sha enc
  while IFS=$'\t' read -r comp key bytes sha enc; do
    log info "mongorestore" key="$key" target="$(mongo_target)"
    object_pipeline "$key" "$sha" "$(object_mode "$enc")" mongorestore_drop </dev/null
  done < <(each_object mongodb)
}

# write_sqlite_into FOLDER: stdin (an SQLite database) checked, then moved over FOLDER/mlflow.db.
write_sqlite_into() {
  local folder=$1 tmp result
  tmp=$(mktemp "$folder/.mlflow.db.restore.XXXXXX")
  cat >"$tmp"
  result=$(sqlite3 -readonly "$tmp" 'PRAGMA integrity_check;' 2>&1 | head -n 3) || true
  [[ "$result" == ok ]] || { rm -f "$tmp"; printf 'integrity_check: %s\n' "$result" >&2; return 74; }
  chmod 0644 "$tmp"
  chown --reference="$folder" "$tmp" 2>/dev/null || true
  rm -f "$folder/mlflow.db-wal" "$folder/mlflow.db-shm"
  mv -f "$tmp" "$folder/mlflow.db"
}

# apply_mlflow: each project's database (and local artifacts) into the folder chosen by the plan.
apply_mlflow() {
  local project folder comp key bytes sha enc
  while IFS=$'\t' read -r project folder; do
    mkdir -p "$folder"
    while IFS=$'\t' read -r comp key bytes sha enc; do
      case "$key" in
        "mlflow/$project/mlflow.db.zst"*)
          log info "mlflow database" project="$project" target="$folder/mlflow.db"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" write_sqlite_into "$folder" </dev/null
          ;;
        "mlflow/$project/artifacts.tar.zst"*)
          log info "mlflow artifacts" project="$project" target="$folder"
          object_pipeline "$key" "$sha" "$(object_mode "$enc")" extract_tar "$folder" </dev/null
          ;;
      esac
    done < <(each_object mlflow)
  done <"$WORK/mlflow-plan.tsv"
}

# kubectl_apply: stdin (YAML) applied server side; 69 unreachable, 77 refused.
kubectl_apply() {
  local status=0
  "${KUBECTL[@]}" apply --server-side --field-manager=kdl-restore ${FORCE_CONFLICTS:+--force-conflicts} -f - >&2 2>"$WORK/kubectl.err" || status=$?
  ((status == 0)) && return 0
  tool_error_line "$WORK/kubectl.err" >&2
  if grep -qiE 'unable to connect|connection refused|no such host|timeout' "$WORK/kubectl.err"; then return "$EX_UNAVAILABLE"; fi
  if grep -qiE 'forbidden|unauthorized' "$WORK/kubectl.err"; then return "$EX_NOPERM"; fi
  return "$EX_FAILURE"
}

# write_output FILE: stdin written to FILE through a temporary name.
write_output() {
  cat >"$1.part" && mv -f "$1.part" "$1"
}

# apply_k8s STEP: kubectl apply --server-side of each exported file, or the files written to --output.
apply_k8s() {
  local comp key bytes sha enc plural
  [[ -n "$OUTPUT_DIR" ]] && mkdir -p "$OUTPUT_DIR"
  [[ -n "$OUTPUT_DIR" ]] || kubectl_setup
  while IFS=$'\t' read -r comp key bytes sha enc; do
    plural=${key#kubernetes/}
    plural=${plural%%.yaml*}
    if [[ -n "$OUTPUT_DIR" ]]; then
      log info "write manifests" key="$key" file="$OUTPUT_DIR/$plural.yaml"
      object_pipeline "$key" "$sha" "$(object_mode "$enc")" write_output "$OUTPUT_DIR/$plural.yaml" </dev/null
    else
      log info "kubectl apply --server-side" key="$key" namespace="${K8S_NAMESPACE:-kdl}"
      object_pipeline "$key" "$sha" "$(object_mode "$enc")" kubectl_apply </dev/null
    fi
  done < <(each_object "$1")
}

# apply_step STEP: runs the step's changes.
apply_step() {
  case "$1" in
    gitea-db) apply_gitea_db ;;
    gitea-data) apply_gitea_data ;;
    mongodb) apply_mongodb ;;
    mlflow) apply_mlflow ;;
    k8s-secrets | k8s-resources) apply_k8s "$1" ;;
  esac
}

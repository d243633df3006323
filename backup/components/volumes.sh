# shellcheck shell=bash
# Summary: component volumes: any mounted folder (KDL 5's drone-pvc, a KDL 6 volume), streamed as tar | zstd
#          and checked like Gitea's data (hostile entries counted on backup, refused on restore).
#
# Environment: BACKUP_VOLUMES (name=path pairs, space separated; the component is configured when set);
#              BACKUP_VOLUME_N_EXCLUDE (N: the name upper-cased, - as _): patterns relative to the path.
# Objects:     volumes/<name>.tar.zst (tar+zstd).
# Restore:     volumes (every volume; `volumes:NAME` one of them), after the databases: extracted into the
#              path it was backed up from, or into --target DIR (one volume); owners kept when run as root.
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component volumes 35
kdl_restore_step volumes volumes 35 '^volumes/[^/]+\.tar\.zst(\.age)?$'

VOLUME_NAMES=()
declare -gA VOLUME_PATHS=()

# volumes_configured: BACKUP_VOLUMES names a folder.
volumes_configured() {
  [[ -n "$(kdl_words "${BACKUP_VOLUMES:-}")" ]]
}

# volumes_config SELECTED: VOLUME_NAMES and VOLUME_PATHS from BACKUP_VOLUMES (64 for a malformed pair, a name
# given twice, a relative path, or none when selected).
volumes_config() {
  local pair name path
  VOLUME_NAMES=()
  VOLUME_PATHS=()
  while IFS= read -r pair; do
    name=${pair%%=*}
    path=${pair#*=}
    if [[ "$pair" != *=* || ! "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$ || "$path" != /* ]]; then
      KDL_CONFIG_ERROR="BACKUP_VOLUMES: '$pair' is not name=/absolute/path (name: letters, digits, _ and -)"
      return "$EX_USAGE"
    fi
    if [[ -n "${VOLUME_PATHS[$name]+set}" ]]; then
      KDL_CONFIG_ERROR="BACKUP_VOLUMES: the name '$name' is given twice (each is stored as volumes/<name>.tar.zst)"
      return "$EX_USAGE"
    fi
    VOLUME_NAMES+=("$name")
    VOLUME_PATHS[$name]=${path%/}
    [[ -n "${VOLUME_PATHS[$name]}" ]] || VOLUME_PATHS[$name]=/
  done < <(kdl_words "${BACKUP_VOLUMES:-}")
  if [[ "$1" == true && ${#VOLUME_NAMES[@]} -eq 0 ]]; then
    KDL_CONFIG_ERROR="BACKUP_COMPONENTS selects volumes but BACKUP_VOLUMES lists no folder"
    return "$EX_USAGE"
  fi
}

# volume_excludes NAME: the volume's exclude patterns, one per line, relative to its path.
volume_excludes() {
  local var=${1^^} word
  var="BACKUP_VOLUME_${var//-/_}_EXCLUDE"
  while IFS= read -r word; do
    word=${word#./}
    word=${word#/}
    word=${word%/}
    [[ -z "$word" ]] || printf '%s\n' "$word"
  done < <(kdl_words "${!var:-}")
}

# volumes_preflight: every folder can be listed (check volume-NAME).
volumes_preflight() {
  local name failed=0
  for name in "${VOLUME_NAMES[@]}"; do
    if check_readable_dir "volume-$name" "BACKUP_VOLUMES ($name)" "${VOLUME_PATHS[$name]}"; then
      check_ok "volume-$name" dir="${VOLUME_PATHS[$name]}"
    else
      failed=1
    fi
  done
  return "$failed"
}

# volumes_backup: volumes/<name>.tar.zst for each folder, one at a time (listed by the tar check on the way).
volumes_backup() {
  local name exclude excludes=() args=() info
  for name in "${VOLUME_NAMES[@]}"; do
    mapfile -t excludes < <(volume_excludes "$name")
    info=$(jq -nc --arg p "${VOLUME_PATHS[$name]}" '{path: $p, excluded: $ARGS.positional}' --args "${excludes[@]}")
    args=()
    for exclude in "${excludes[@]}"; do args+=("--exclude=./$exclude"); done
    put_member volumes "$name" "$info" "volume-$name" "volumes/$name.tar.zst" tar+zstd produce_tar "${VOLUME_PATHS[$name]}" "${args[@]}" .
  done
}

# volumes_describe DETAILS: one line for `restore.sh show`.
volumes_describe() {
  jq -r '.volumes // {} | to_entries | map("\(.key) (\(.value.path // "?"): \(.value.files // "?") files\(if (.value.excluded // []) != [] then ", excluded \(.value.excluded | join(" "))" else "" end)\(if .value.stored == false then ", not stored" else "" end))") | join("; ")' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# volume_target NAME: where the volume goes: --target DIR, else the path it was backed up from.
volume_target() {
  if [[ -n "$TARGET_DIR" ]]; then
    printf '%s' "$TARGET_DIR"
    return 0
  fi
  jq -r --arg n "$1" '[.components[] | select(.name == "volumes") | .details.volumes[$n].path // empty][0] // empty' "$MANIFEST"
}

# volumes_is_live STEP: extracting into --target DIR changes no running system.
volumes_is_live() {
  [[ -z "$TARGET_DIR" ]]
}

# volumes_plan STEP: per volume, where it goes and what it overwrites; --target takes one volume (64); the
# target must exist (66) and be writable (77).
volumes_plan() {
  local comp key rest name dir existing count
  count=$(step_objects_of "$1" | wc -l)
  if [[ -n "$TARGET_DIR" ]] && ((count > 1)); then
    die "$EX_USAGE" "--target takes one volume and set $SET_ID has $count: restore volumes:NAME ... --target DIR"
  fi
  while IFS=$'\t' read -r comp key rest; do
    name=$(member_name "$key" volumes tar.zst)
    dir=$(volume_target "$name")
    [[ -n "$dir" ]] || die "$EX_NOINPUT" "set $SET_ID does not say where volume $name was backed up from: give --target DIR"
    [[ -d "$dir" ]] || die "$EX_NOINPUT" "the target of volume $name does not exist: $dir (mount its claim there, or give --target DIR)"
    [[ -w "$dir" ]] || die "$EX_NOPERM" "the target of volume $name is not writable: $dir"
    existing=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)
    echo "plan: volumes:$name: extract $key into $dir ($existing top-level entries present; files in the backup overwrite theirs, others stay)$( ((EUID == 0)) && echo "; owners as backed up")"
  done < <(step_objects_of "$1")
}

# volume_extract DIR: stdin (a tar stream the tar check found safe before anything changed) into DIR; as root
# with the numeric owners it was stored with.
volume_extract() {
  local owner=--no-same-owner
  ((EUID != 0)) || owner=--same-owner
  tar -x -f - -C "$1" --no-overwrite-dir --delay-directory-restore --numeric-owner "$owner"
}

# volumes_apply STEP: every volume of the step extracted into its target.
volumes_apply() {
  local comp key bytes sha enc format name dir
  while IFS=$'\t' read -r comp key bytes sha enc format; do
    name=$(member_name "$key" volumes tar.zst)
    dir=$(volume_target "$name")
    log info "restore object" step="volumes:$name" key="$key" target="$dir"
    object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" volume_extract "$dir" </dev/null
    echo "restored: volumes:$name into $dir"
  done < <(step_objects_of "$1")
}

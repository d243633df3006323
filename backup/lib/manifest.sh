# shellcheck shell=bash
# Summary: manifest.json (kdl-backup/v1, backup/manifest.schema.json): backup.sh writes it from the
#          components' entries, last; restore.sh checks every manifest it reads against the schema.
# Usage: source lib/common.sh first.
#
# Globals read: WORK BACKUP_ID STARTED_AT KDL_COMPONENTS KDL_PLATFORM KDL_RECIPIENTS S3PUT_OPTS.

KDL_MANIFEST_SCHEMA="$(dirname "${BASH_SOURCE[0]}")/../manifest.schema.json"
KDL_SCHEMA_JQ="$(dirname "${BASH_SOURCE[0]}")/schema.jq"
readonly KDL_MANIFEST_SCHEMA KDL_SCHEMA_JQ

# manifest_violation FILE: the first way FILE breaks the schema, on one line; empty when it matches
# (a file that is not JSON at all is a violation too).
manifest_violation() {
  local out
  if ! out=$(jq -r --slurpfile schema "$KDL_MANIFEST_SCHEMA" -f "$KDL_SCHEMA_JQ" "$1" 2>&1); then
    out="not JSON: ${out##*: }"
  fi
  printf '%s' "${out%%$'\n'*}"
}

# write_component NAME STATUS SECONDS ERROR: the component's manifest entry as
# $WORK/components/NAME/component.json.
write_component() {
  local name=$1 dir="$WORK/components/$1"
  mkdir -p "$dir"
  [[ -f "$dir/objects.jsonl" ]] || : >"$dir/objects.jsonl"
  [[ -f "$dir/details.json" ]] || echo '{}' >"$dir/details.json"
  jq -n --arg name "$name" --arg status "$2" --argjson seconds "$3" --arg error "$4" \
    --slurpfile objects "$dir/objects.jsonl" --slurpfile details "$dir/details.json" \
    '{name: $name, status: $status, seconds: $seconds, error: (if $error == "" then null else $error end),
      objects: ($objects | sort_by(._seq) | map(del(._seq))), details: ($details[0] // {})}' >"$dir/component.json"
}

# tool_version CMD: the version a tool reports, reduced to its number (empty when absent).
tool_version() {
  local out
  command -v "$1" >/dev/null 2>&1 || return 0
  out=$("$1" --version 2>&1 | head -n1) || true
  [[ "$out" =~ v?([0-9]+(\.[0-9]+)+) ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# tools_json: versions of the helpers and of pg_dump, mongodump, zstd, age, sqlite3, as a JSON object.
tools_json() {
  local tool args=()
  for tool in s3-put s3-ls s3-prune k8s-export mlflow-scan notify bucket-sync pg_dump mongodump zstd age sqlite3; do
    args+=("$tool" "$(tool_version "$tool")")
  done
  jq -n '$ARGS.positional | [range(0; length; 2) as $i | {key: .[$i], value: (.[$i + 1] | if . == "" then null else . end)}] | from_entries' \
    --args "${args[@]}"
}

# overall_status: success when every selected component succeeded, failure when none did,
# partial otherwise.
overall_status() {
  jq -rs '[.[] | select(.status != "skipped")] as $run
    | if ($run | all(.status == "success")) then "success"
      elif ($run | any(.status == "success")) then "partial" else "failure" end' \
    "$WORK"/components/*/component.json
}

# write_manifest STATUS FILE: manifest.json from the component entries, in backup order.
write_manifest() {
  local status=$1 file=$2 encryption=null name components=()
  if encrypted; then
    encryption=$(jq -nc '{type: "age", recipients: $ARGS.positional}' --args "${KDL_RECIPIENTS[@]}")
  fi
  for name in "${KDL_COMPONENTS[@]}"; do
    [[ ! -f "$WORK/components/$name/component.json" ]] || components+=("$WORK/components/$name/component.json")
  done
  jq -n --arg id "$BACKUP_ID" --arg platform "$KDL_PLATFORM" --arg started "$STARTED_AT" --arg finished "$(kdl_utc_iso)" --arg status "$status" \
    --argjson encryption "$encryption" --argjson tools "$(tools_json)" --slurpfile components <(cat "${components[@]}") \
    '{format: "kdl-backup/v1", id: $id, startedAt: $started, finishedAt: $finished, status: $status,
      platform: $platform, encryption: $encryption, tools: $tools, components: $components}' >"$file"
}

# upload_manifest FILE: manifest.json, last, unencrypted (it holds counts and checksums, no data).
upload_manifest() {
  kdl_run_job s3-put "${S3PUT_OPTS[@]}" --content-type application/json "$1" \
    "$(kdl_s3_url "$BACKUP_ID/manifest.json")" >"$WORK/manifest.put.json" 2>"$WORK/manifest.put.err"
}

# print_summary MANIFEST: the final table on stderr.
print_summary() {
  say ""
  say "$(printf '%-11s %-8s %7s %14s %9s  %s' component status objects bytes seconds error)"
  local line
  while IFS= read -r line; do say "$line"; done < <(jq -r '.components[] |
    [.name, .status, (.objects | length | tostring), (.objects | map(.bytes) | add // 0 | tostring),
     (.seconds | tostring), (.error // "")] | @tsv' "$1" |
    while IFS=$'\t' read -r name status objects bytes seconds error; do
      printf '%-11s %-8s %7s %14s %9s  %s\n' "$name" "$status" "$objects" "$bytes" "$seconds" "${error:0:160}"
    done)
  say "$(jq -r '"set \(.id): \(.status), \([.components[].objects[]] | length) objects, \([.components[].objects[].bytes] | add // 0) bytes, encrypted: \(.encryption != null)"' "$1")"
}

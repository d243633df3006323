# shellcheck shell=bash
# Summary: component kubernetes: the objects KDL's API creates at run time (custom resources, per-user
#          Secrets), exported by k8s-export as clean YAML, one file per resource.
#
# Environment: K8S_NAMESPACE (default: the service account's, else kdl), K8S_RESOURCES and
#              K8S_SECRET_NAME_REGEX (defaults by platform: lib/platform.sh), K8S_SERVER, K8S_TOKEN_FILE, K8S_CA_FILE.
# Objects:     kubernetes/<plural>.yaml.zst (yaml+zstd).
# Restore:     k8s-secrets first of all (kubectl apply --server-side), k8s-resources last (so the
#              operators rebuild onto restored data); with --output DIR the YAML is written, not applied.
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component kubernetes 40
kdl_restore_step k8s-secrets kubernetes 10 '^kubernetes/secrets\.yaml\.zst(\.age)?$'
kdl_restore_step k8s-resources kubernetes 60 '^kubernetes/[^/]+\.yaml\.zst(\.age)?$' '^kubernetes/secrets\.yaml'

K8S_NS=""
K8S_RES=()
K8S_CONN=()
SECRET_REGEX=""

# kubernetes_config SELECTED: K8S_NS, K8S_RES (secrets added when a name regex is set), K8S_CONN;
# two resources with one plural would share a key (64).
kubernetes_config() {
  local word plural seen=" "
  K8S_NS=$(kdl_k8s_namespace)
  mapfile -t K8S_RES < <(kdl_words "${K8S_RESOURCES:-$(kdl_platform_default K8S_RESOURCES)}")
  SECRET_REGEX=${K8S_SECRET_NAME_REGEX-$(kdl_platform_default K8S_SECRET_NAME_REGEX)}
  if [[ -n "$SECRET_REGEX" && " ${K8S_RES[*]} " != *" secrets "* ]]; then K8S_RES+=(secrets); fi
  for word in "${K8S_RES[@]}"; do
    plural=${word%%.*}
    if [[ "$seen" == *" $plural "* ]]; then
      KDL_CONFIG_ERROR="K8S_RESOURCES: two resources share the plural '$plural' (each is stored as kubernetes/$plural.yaml)"
      return "$EX_USAGE"
    fi
    seen+="$plural "
  done
  mapfile -t K8S_CONN < <(kdl_k8s_connection_args)
  return 0
}

# kubernetes_preflight: k8s-export can list every resource (a list with a label selector that
# matches nothing: cheap, yet it needs the same permission).
kubernetes_preflight() {
  local resource status code
  check_require kubernetes k8s-export || return 1
  for resource in "${K8S_RES[@]}"; do
    status=0
    kdl_run_job k8s-export "${K8S_CONN[@]}" --namespace "$K8S_NS" --label-selector "kdl-backup.konstellation.io/preflight=none" \
      "$resource" >/dev/null 2>"$WORK/checks/k8s.err" || status=$?
    if ((status != 0)); then
      code=$EX_UNAVAILABLE
      ((status == EX_NOPERM)) && code=$EX_NOPERM
      check_fail kubernetes "$code" "cannot list $resource in namespace $K8S_NS (k8s-export exit $status): $(kdl_tail_text "$WORK/checks/k8s.err" 1)"
      return 1
    fi
  done
  check_ok kubernetes namespace="$K8S_NS" resources="${K8S_RES[*]}"
}

# produce_k8s_export RESOURCE [NAME_REGEX]: the cleaned objects of RESOURCE as YAML.
produce_k8s_export() {
  local resource=$1 regex=${2:-} args=()
  [[ -n "$regex" ]] && args+=("--name-regex=$regex")
  k8s-export "${K8S_CONN[@]}" --namespace "$K8S_NS" --format yaml --summary "${args[@]}" "$resource"
}

# kubernetes_backup: kubernetes/<plural>.yaml.zst per resource, all at once (Secrets filtered by
# K8S_SECRET_NAME_REGEX); warns when Secrets are stored unencrypted.
kubernetes_backup() {
  local error resource plural regex
  error=$(check_error kubernetes)
  if [[ -n "$error" ]]; then
    component_error "k8s-export: skipped: $error"
    return 0
  fi
  details_merge "$(jq -nc --arg ns "$K8S_NS" '{namespace: $ns, objects: {}}')"
  for resource in "${K8S_RES[@]}"; do
    plural=${resource%%.*}
    regex=""
    if [[ "$plural" == secrets ]]; then
      regex=$SECRET_REGEX
      encrypted || log warn step=secrets encrypted=false "Kubernetes Secrets are stored unencrypted: set BACKUP_AGE_RECIPIENTS"
    fi
    object_start "$plural" "kubernetes/$plural.yaml.zst" yaml+zstd check produce_k8s_export "$resource" "$regex"
  done
  for resource in "${K8S_RES[@]}"; do
    plural=${resource%%.*}
    object_finish "$plural" && check_k8s_summary "$resource" "$plural"
  done
  return 0
}

# check_k8s_summary RESOURCE PLURAL: the number of YAML documents stored must equal the count
# k8s-export reported (--summary); on a mismatch the object is marked unverified. Keeps the
# count in details.objects.
check_k8s_summary() {
  local resource=$1 plural=$2 dir documents reported merged
  dir=$(object_dir "$plural")
  documents=$(jq -r '.objects' "$dir/verify.out" 2>/dev/null)
  reported=$(grep '^{' "$dir/producer.err" 2>/dev/null | tail -n1 | jq -r --arg r "$resource" --arg p "$plural" '.[$r] // .[$p] // empty' 2>/dev/null)
  merged=$(jq -c --arg p "$plural" --argjson n "${documents:-null}" 'del(.[$p]) | .objects[$p] = $n' "$COMPONENT_DIR/details.json") &&
    printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
  if [[ -n "$reported" && "$reported" != "$documents" ]]; then
    component_error "$plural: k8s-export reported $reported objects but $documents YAML documents were stored"
    merged=$(jq -c 'if .key | startswith("kubernetes/'"$plural"'.") then .verified = false else . end' "$COMPONENT_DIR/objects.jsonl") &&
      printf '%s\n' "$merged" >"$COMPONENT_DIR/objects.jsonl"
    return 1
  fi
  return 0
}

# kubernetes_describe DETAILS: one line for `restore.sh show`.
kubernetes_describe() {
  jq -r '"namespace \(.namespace // "?"): \((.objects // {}) | to_entries | map("\(.value) \(.key)") | join(", "))"' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

KUBECTL=()

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
      printf 'contexts:\n- name: target\n  context:\n    cluster: target\n    user: restore\n    namespace: "%s"\n' "$K8S_NS"
      printf 'current-context: target\n'
    } >"$cfg"
    KUBECTL+=(--kubeconfig "$cfg")
  fi
  KUBECTL+=(--namespace "$K8S_NS")
}

# kubernetes_is_live STEP: false when --output writes the YAML to files instead of applying it.
kubernetes_is_live() {
  [[ -z "$OUTPUT_DIR" ]]
}

# kubernetes_plan STEP: what kubectl applies, or which files --output writes.
kubernetes_plan() {
  local comp key rest plural
  while IFS=$'\t' read -r comp key rest; do
    plural=${key#kubernetes/}
    plural=${plural%%.yaml*}
    if [[ -n "$OUTPUT_DIR" ]]; then
      echo "plan: kubernetes: write $OUTPUT_DIR/$plural.yaml (decrypted, decompressed; nothing applied)"
    else
      echo "plan: kubernetes: kubectl apply --server-side $plural into namespace $K8S_NS${K8S_SERVER:+ on $K8S_SERVER}"
    fi
  done < <(step_objects_of "$1")
}

# kubectl_apply: stdin (YAML) applied server side; 69 unreachable, 77 refused. kubectl exits 1 for
# every error, so its message is all there is to tell them apart.
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

# kubernetes_apply STEP: kubectl apply --server-side of each exported file, or the files written to --output.
kubernetes_apply() {
  local comp key bytes sha enc format plural
  [[ -n "$OUTPUT_DIR" ]] && mkdir -p "$OUTPUT_DIR"
  [[ -n "$OUTPUT_DIR" ]] || kubectl_setup
  while IFS=$'\t' read -r comp key bytes sha enc format; do
    plural=${key#kubernetes/}
    plural=${plural%%.yaml*}
    if [[ -n "$OUTPUT_DIR" ]]; then
      log info "write manifests" key="$key" file="$OUTPUT_DIR/$plural.yaml"
      object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" write_output "$OUTPUT_DIR/$plural.yaml" </dev/null
    else
      log info "kubectl apply --server-side" key="$key" namespace="$K8S_NS"
      object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" kubectl_apply </dev/null
    fi
  done < <(step_objects_of "$1")
}

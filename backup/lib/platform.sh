# shellcheck shell=bash
# Summary: the platform's generation, KDL 5 (Gitea, Drone) or KDL 6 (Keycloak): BACKUP_PLATFORM, or with
#          `auto` found from the custom resources the API server serves (k8s-export --served); and the
#          defaults that differ between the generations. A variable set explicitly always wins.
# Usage: source lib/common.sh and lib/config.sh first; kdl_resolve_platform, then kdl_platform_default NAME.
# shellcheck disable=SC2034  # KDL_PLATFORM* are read by the scripts and components that source this file

readonly KDL_DEFAULT_PLATFORM=auto
readonly KDL5_K8S_RESOURCES="kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io"
readonly KDL6_K8S_RESOURCES="kdlprojects.v1.kdl.konstellation.io kdlusertools.v1.kdl.konstellation.io"
readonly KDL5_K8S_SECRET_NAME_REGEX='-ssh-keys$|^codeserver-oauth2-|^kdl-server-oauth2-credentials$|^drone-oauth2-credentials$'
readonly KDL6_K8S_SECRET_NAME_REGEX='-ssh-keys$'
readonly KDL5_MONGO_DATABASES="kdl admin"
readonly KDL6_MONGO_DATABASES="kdl"

KDL_PLATFORM=""        # kdl5 or kdl6
KDL_PLATFORM_REASON="" # why, in words, for the preflight's log line

# kdl_k8s_connection_args: k8s-export's connection flags from K8S_SERVER, K8S_TOKEN_FILE, K8S_CA_FILE.
kdl_k8s_connection_args() {
  [[ -z "${K8S_SERVER:-}" ]] || printf '%s\n' --server "$K8S_SERVER"
  [[ -z "${K8S_TOKEN_FILE:-}" ]] || printf '%s\n' --token-file "$K8S_TOKEN_FILE"
  [[ -z "${K8S_CA_FILE:-}" ]] || printf '%s\n' --ca-file "$K8S_CA_FILE"
  return 0
}

# kdl_resolve_platform: sets KDL_PLATFORM and KDL_PLATFORM_REASON from BACKUP_PLATFORM (auto, kdl5, kdl6);
# sets KDL_CONFIG_ERROR and returns 64 for any other value.
kdl_resolve_platform() {
  local wanted=${BACKUP_PLATFORM:-$KDL_DEFAULT_PLATFORM}
  case "$wanted" in
    kdl5 | kdl6)
      KDL_PLATFORM=$wanted
      KDL_PLATFORM_REASON="BACKUP_PLATFORM=$wanted"
      ;;
    auto) kdl_discover_platform ;;
    *)
      KDL_CONFIG_ERROR="BACKUP_PLATFORM must be auto, kdl5 or kdl6 (got '$wanted')"
      return "$EX_USAGE"
      ;;
  esac
}

# kdl_discover_platform: asks the API server which generation's KDLProject resource it serves. KDL 6's wins
# when both are (an upgrade in progress: KDL 6 is the running platform). Without an answer (no API server
# configured, unreachable, refused) KDL 5's defaults apply, as before this setting existed, and the reason says so.
kdl_discover_platform() {
  local conn=() out err status=0 kdl5=${KDL5_K8S_RESOURCES%% *} kdl6=${KDL6_K8S_RESOURCES%% *}
  mapfile -t conn < <(kdl_k8s_connection_args)
  err=$(mktemp "${TMPDIR:-/tmp}/kdl-platform.XXXXXX")
  out=$(k8s-export "${conn[@]}" --retries 1 --served "$kdl6" "$kdl5" 2>"$err") || status=$?
  if ((status != 0)); then
    KDL_PLATFORM=kdl5
    KDL_PLATFORM_REASON="BACKUP_PLATFORM=auto: the API server could not be asked (k8s-export exit $status: $(kdl_tail_text "$err" 1)); KDL 5's defaults"
  elif grep -qxF "$kdl6 served" <<<"$out"; then
    KDL_PLATFORM=kdl6
    KDL_PLATFORM_REASON="BACKUP_PLATFORM=auto: the API server serves $kdl6"
    if grep -qxF "$kdl5 served" <<<"$out"; then KDL_PLATFORM_REASON+=" (and KDL 5's $kdl5: KDL 6 wins)"; fi
  elif grep -qxF "$kdl5 served" <<<"$out"; then
    KDL_PLATFORM=kdl5
    KDL_PLATFORM_REASON="BACKUP_PLATFORM=auto: the API server serves $kdl5"
  else
    KDL_PLATFORM=kdl5
    KDL_PLATFORM_REASON="BACKUP_PLATFORM=auto: the API server serves neither $kdl6 nor $kdl5; KDL 5's defaults"
  fi
  rm -f -- "$err"
  return 0
}

# kdl_platform_default NAME: the platform's default of K8S_RESOURCES, K8S_SECRET_NAME_REGEX or MONGO_DATABASES.
kdl_platform_default() {
  case "$1" in
    K8S_RESOURCES | K8S_SECRET_NAME_REGEX | MONGO_DATABASES) ;;
    *) die "$EX_FAILURE" "kdl_platform_default: unknown setting $1" ;;
  esac
  local var=KDL5_$1
  [[ "$KDL_PLATFORM" != kdl6 ]] || var=KDL6_$1
  printf '%s' "${!var}"
}

# kdl_mlflow_namespaces: the namespaces whose KDL 6 claim folders (<ns>-<project>-mlflow-pvc-<uid>) name a
# project (mlflow-scan --namespace); none on KDL 5.
kdl_mlflow_namespaces() {
  [[ "$KDL_PLATFORM" != kdl6 ]] || kdl_k8s_namespace
}

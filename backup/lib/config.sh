# shellcheck shell=bash
# Summary: the environment contract shared by backup.sh, restore.sh and the components: every
#          default (once, here), bucket and prefix, age recipients, the MongoDB tools' config file,
#          the Kubernetes namespace, S3 URLs.
# Usage: source lib/common.sh first, then this file; call kdl_load_s3_config.
# shellcheck disable=SC2034  # KDL_* globals are read by the scripts that source this file

# --- defaults of the environment contract (docs/configuration.md) --------------------------------
readonly KDL_DEFAULT_PREFIX=kdl-backup
readonly KDL_DEFAULT_KEEP_LAST=8
readonly KDL_DEFAULT_KEEP_DAYS=0
readonly KDL_DEFAULT_REQUIRE_ENCRYPTION=false
readonly KDL_DEFAULT_VERIFY_MAX_AGE_HOURS=192
readonly KDL_DEFAULT_PGDATABASE=gitea
readonly KDL_DEFAULT_PGCONNECT_TIMEOUT=10
readonly KDL_DEFAULT_PG_DUMP_COMPRESS=1
readonly KDL_DEFAULT_GITEA_DATA_DIR=/data
readonly KDL_DEFAULT_GITEA_DATA_EXCLUDE="gitea/indexers ssh lost+found"
readonly KDL_DEFAULT_GITEA_UID_GID=1000:1000
readonly KDL_DEFAULT_MLFLOW_ROOT=/shared-volume
readonly KDL_DEFAULT_MLFLOW_OWNER=1000:1000
readonly KDL_DEFAULT_K8S_NAMESPACE=kdl
# K8S_RESOURCES, K8S_SECRET_NAME_REGEX and MONGO_DATABASES default by the platform's generation (lib/platform.sh).
readonly KDL_SERVICE_ACCOUNT_DIR=${KDL_SERVICE_ACCOUNT_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}

KDL_BUCKET=""
KDL_PREFIX=""
KDL_RECIPIENTS=()
KDL_CONFIG_ERROR=""

# kdl_load_s3_config: sets KDL_BUCKET from BACKUP_S3_BUCKET (or the original chart's
# BUCKET_NAME) and KDL_PREFIX from BACKUP_S3_PREFIX (default kdl-backup, no leading or
# trailing slash). Sets KDL_CONFIG_ERROR and returns 64 when they are unusable.
kdl_load_s3_config() {
  KDL_BUCKET=${BACKUP_S3_BUCKET:-${BUCKET_NAME:-}}
  KDL_BUCKET=${KDL_BUCKET#s3://}
  KDL_BUCKET=${KDL_BUCKET%/}
  if [[ -z "$KDL_BUCKET" ]]; then
    KDL_CONFIG_ERROR="BACKUP_S3_BUCKET (or BUCKET_NAME) is required"
    return "$EX_USAGE"
  fi
  if [[ ! "$KDL_BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_S3_BUCKET '$KDL_BUCKET' is not a valid bucket name"
    return "$EX_USAGE"
  fi
  KDL_PREFIX=${BACKUP_S3_PREFIX-$KDL_DEFAULT_PREFIX}
  while [[ "$KDL_PREFIX" == /* ]]; do KDL_PREFIX=${KDL_PREFIX#/}; done
  while [[ "$KDL_PREFIX" == */ ]]; do KDL_PREFIX=${KDL_PREFIX%/}; done
  if [[ -z "$KDL_PREFIX" ]]; then
    KDL_CONFIG_ERROR="BACKUP_S3_PREFIX must not be empty (retention refuses to work on a whole bucket)"
    return "$EX_USAGE"
  fi
  if [[ "$KDL_PREFIX" =~ (^|/)\.\.?(/|$) || "$KDL_PREFIX" =~ [[:cntrl:]] ]]; then
    KDL_CONFIG_ERROR="BACKUP_S3_PREFIX '$KDL_PREFIX' must not contain '.' or '..' segments or control characters"
    return "$EX_USAGE"
  fi
  return 0
}

# kdl_s3_endpoint: the S3 endpoint the helpers use, for error lines: AWS_ENDPOINT_URL_S3, else
# AWS_ENDPOINT_URL, else AWS's own for the region (AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1);
# the same precedence as the helpers (docs/configuration.md).
kdl_s3_endpoint() {
  local endpoint=${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-}}
  if [[ -n "$endpoint" ]]; then
    kdl_redact "$endpoint"
  else
    printf 'AWS S3 in %s' "${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
  fi
}

# kdl_s3_url KEY: s3://bucket/prefix/KEY.
kdl_s3_url() {
  printf 's3://%s/%s/%s' "$KDL_BUCKET" "$KDL_PREFIX" "$1"
}

# kdl_load_recipients: fills KDL_RECIPIENTS from BACKUP_AGE_RECIPIENTS (space, comma or
# newline separated). Each must be an age X25519 public key (age1 + 58 bech32 characters)
# that age itself accepts. Sets KDL_CONFIG_ERROR and returns 64 otherwise.
kdl_load_recipients() {
  local recipient
  KDL_RECIPIENTS=()
  while IFS= read -r recipient; do
    [[ -n "$recipient" ]] || continue
    if [[ ! "$recipient" =~ ^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$ ]]; then
      KDL_CONFIG_ERROR="BACKUP_AGE_RECIPIENTS: '${recipient:0:12}...' is not an age public key (age1...); never put an identity (AGE-SECRET-KEY-...) here"
      return "$EX_USAGE"
    fi
    if command -v age >/dev/null 2>&1 && ! age -e -r "$recipient" </dev/null >/dev/null 2>&1; then
      KDL_CONFIG_ERROR="BACKUP_AGE_RECIPIENTS: age refuses recipient '${recipient:0:12}...'"
      return "$EX_USAGE"
    fi
    KDL_RECIPIENTS+=("$recipient")
  done < <(kdl_words "${BACKUP_AGE_RECIPIENTS:-}")
  return 0
}

# kdl_write_mongo_config FILE: writes the MongoDB tools' --config YAML holding `uri:` from
# MONGO_URI, so the connection string (and its password) never appears in an argument list.
kdl_write_mongo_config() {
  local file=$1 uri=${MONGO_URI:-}
  (
    umask 077
    printf "uri: '%s'\n" "${uri//\'/\'\'}" >"$file"
  )
}

# kdl_k8s_namespace: K8S_NAMESPACE, else the service account's namespace (in a pod), else the default.
kdl_k8s_namespace() {
  local ns=${K8S_NAMESPACE:-}
  if [[ -z "$ns" && -r "$KDL_SERVICE_ACCOUNT_DIR/namespace" ]]; then ns=$(<"$KDL_SERVICE_ACCOUNT_DIR/namespace"); fi
  printf '%s' "${ns:-$KDL_DEFAULT_K8S_NAMESPACE}"
}

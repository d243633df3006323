#!/usr/bin/env bash
# Summary: a new, empty S3 on the running stack's Ceph RGW: a user in a tenant of its own (its own bucket
# namespace), for restores into an empty MinIO or a second backup store.
# Usage: scripts/stack/s3-user.sh --dir DIR --tenant NAME --env-file FILE [--bucket NAME]
#
# FILE gets `export K=V` lines: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3
# (and BACKUP_S3_BUCKET with --bucket, which is created). Exit 64 on bad arguments, 1 when RGW refuses.
set -Eeuo pipefail
umask 077

# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/stack/rgw.sh
source "$(dirname "${BASH_SOURCE[0]}")/rgw.sh"

main() {
  local tenant="" env_file="" bucket=""
  STACK_DIR=""
  while (($#)); do
    case "$1" in
      --dir | --tenant | --env-file | --bucket)
        [[ -n "${2:-}" ]] || STACK_DIE_CODE=64 die "$1 needs a value (see --help)"
        case "$1" in
          --dir) STACK_DIR=$2 ;; --tenant) tenant=$2 ;; --env-file) env_file=$2 ;; --bucket) bucket=$2 ;;
        esac
        shift 2 ;;
      -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) STACK_DIE_CODE=64 die "unknown argument $1 (see --help)" ;;
    esac
  done
  [[ -n "$STACK_DIR" && -n "$tenant" && -n "$env_file" ]] || STACK_DIE_CODE=64 die "--dir, --tenant and --env-file are required"
  [[ "$tenant" =~ ^[a-z0-9_]{1,32}$ ]] || STACK_DIE_CODE=64 die "--tenant must be 1-32 of a-z 0-9 _"
  [[ -f "$STACK_DIR/stack.env" ]] || STACK_DIE_CODE=64 die "no stack in $STACK_DIR (scripts/stack/up.sh)"
  RGW_CONF=$(sed -n 's/^export STACK_RGW_CONF=//p' "$STACK_DIR/stack.env")
  RGW_PORT=$(sed -n 's/^export AWS_ENDPOINT_URL_S3=http:\/\/127\.0\.0\.1://p' "$STACK_DIR/stack.env")
  [[ -f "$RGW_CONF" && "$RGW_PORT" =~ ^[0-9]+$ ]] || die "the stack in $STACK_DIR runs no Ceph RGW"
  rgw_user "$tenant" "$tenant" "$env_file"
  if [[ -n "$bucket" ]]; then
    rgw_bucket "$env_file" "$bucket"
    printf 'export BACKUP_S3_BUCKET=%s\n' "$bucket" >>"$env_file"
  fi
}

main "$@"

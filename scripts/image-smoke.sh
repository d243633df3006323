#!/usr/bin/env bash
# Summary: prove the backup image's runtime without a Docker engine: a debootstrapped bookworm
#          root filesystem with backup/packages.txt installed, the built helpers and scripts copied
#          in, then in a chroot: every helper's --version and a full backup of the local stack as
#          user 1000.
# Usage: scripts/image-smoke.sh [--rebuild]
#
# Needs root, debootstrap and Debian's mirror. KDL_BIN_DIR names the release helpers (default:
# swift build -c release --static-swift-stdlib); KDL_STACK_ENV a running stack (default: one is
# started with --seed tiny and stopped at the end). The two packages from outside Debian are
# stood in for: PGDG's postgresql-client-N by Debian's postgresql-client-15 (the stack's major),
# MongoDB's database tools by the test doubles (Tests/fixtures/mongodump, mongorestore) with
# Debian's python3 and the repository venv's pinned pymongo (Debian's 3.11 cannot speak to
# nx-27017's wire version; both Pythons are 3.11). The root filesystem with the packages installed is cached in
# .cache/image-smoke/ keyed by the package list; --rebuild discards the cache.
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../backup/lib/common.sh
source "$ROOT/backup/lib/common.sh"
KDL_TOOL=image-smoke
CACHE="$ROOT/.cache/image-smoke"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HELPERS=(s3-put s3-get s3-ls s3-prune k8s-export mlflow-scan notify bucket-sync)
STANDIN_PACKAGES=(postgresql-client-15 python3 python3-yaml)
WORK=""
ROOTFS=""
OWN_STACK_DIR="" # not STACK_DIR: sourcing stack.env sets that one
MOUNTS=()
REBUILD=false

# parse_args ARGS...: --rebuild, --help.
parse_args() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --rebuild) REBUILD=true ;;
      -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) die 64 "unknown argument '$arg' (usage: scripts/image-smoke.sh [--rebuild])" ;;
    esac
  done
}

# cleanup: unmounts, stops a stack started here, removes the work folder.
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
  if [[ -n "$OWN_STACK_DIR" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$OWN_STACK_DIR" >/dev/null 2>&1 || true
    rm -rf "$OWN_STACK_DIR"
  fi
  if [[ -n "$WORK" ]]; then rm -rf --one-file-system "$WORK"; fi
}

# debian_packages: the package list for the chroot: Debian lines of packages.txt as pinned,
# the stand-ins for the pgdg and mongodb lines (kubectl, used only by restore.sh, is not smoke-tested here).
debian_packages() {
  awk '$1 == "debian" {print $2}' "$ROOT/backup/packages.txt"
  printf '%s\n' "${STANDIN_PACKAGES[@]}"
}

# minbase_rootfs: a cached tarball of a debootstrapped bookworm (minbase) with Debian's three
# suites in its sources (the pinned versions come from bookworm-updates and -security, as
# debian:bookworm-slim has them); prints its path.
minbase_rootfs() {
  local tarball="$CACHE/bookworm-minbase.tar" staging
  if [[ -f "$tarball" ]]; then
    printf '%s\n' "$tarball"
    return 0
  fi
  mkdir -p "$CACHE"
  staging=$(mktemp -d "$CACHE/staging.XXXXXX")
  log info step=debootstrap mirror="$MIRROR" "building the base root filesystem (a few minutes, cached after)"
  debootstrap --variant=minbase bookworm "$staging" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { rm -rf "$staging"; die 69 "debootstrap failed: see $CACHE/debootstrap.log"; }
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
    "$MIRROR" "$MIRROR" "$MIRROR" >"$staging/etc/apt/sources.list"
  tar -C "$staging" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$staging"
  printf '%s\n' "$tarball"
}

# base_rootfs: a cached tarball of the minbase root filesystem with the packages installed
# (keyed by the package list); prints its path.
base_rootfs() {
  local key tarball staging minbase status=0 packages
  key=$( (debian_packages; echo "$MIRROR") | sha256sum | cut -c1-16)
  tarball="$CACHE/bookworm-$key.tar"
  if $REBUILD; then rm -f "$CACHE"/bookworm-*.tar; fi
  if [[ -f "$tarball" ]]; then
    log info step=rootfs cache=hit tarball="$tarball"
    printf '%s\n' "$tarball"
    return 0
  fi
  minbase=$(minbase_rootfs)
  staging=$(mktemp -d "$CACHE/staging.XXXXXX")
  tar -C "$staging" -xf "$minbase"
  cp /etc/resolv.conf "$staging/etc/resolv.conf"
  mount -t proc proc "$staging/proc"
  mapfile -t packages < <(debian_packages)
  log info step=apt packages="${packages[*]}"
  chroot "$staging" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" && apt-get clean && rm -rf /var/lib/apt/lists/*' \
    apt "${packages[@]}" >"$CACHE/apt.log" 2>&1 || status=$?
  umount -l "$staging/proc"
  if ((status != 0)); then
    rm -rf "$staging"
    die 69 "installing the runtime packages failed: see $CACHE/apt.log"
  fi
  chroot "$staging" useradd --uid 1000 --user-group --home-dir /tmp --no-create-home --shell /usr/sbin/nologin kdl-backup
  tar -C "$staging" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$staging"
  log info step=rootfs cache=stored tarball="$tarball"
  printf '%s\n' "$tarball"
}

# helpers_dir: the release helpers (KDL_BIN_DIR or a release build).
helpers_dir() {
  if [[ -n "${KDL_BIN_DIR:-}" ]]; then printf '%s\n' "$KDL_BIN_DIR"; return 0; fi
  "$ROOT/scripts/build.sh" --quiet
}

# install_image_files BIN_DIR: what the Dockerfile copies: helpers (stripped) into
# /usr/local/bin, backup/ into /opt/kdl-backup with its entry points linked; the test doubles
# stand in for MongoDB's tools.
install_image_files() {
  local bin=$1 tool
  for tool in "${HELPERS[@]}"; do
    install -m 0755 "$bin/$tool" "$ROOTFS/usr/local/bin/$tool"
    strip "$ROOTFS/usr/local/bin/$tool"
  done
  mkdir -p "$ROOTFS/opt/kdl-backup"
  cp -R "$ROOT/backup/." "$ROOTFS/opt/kdl-backup/"
  chmod 0755 "$ROOTFS"/opt/kdl-backup/*.sh
  ln -sf /opt/kdl-backup/backup.sh "$ROOTFS/usr/local/bin/backup.sh"
  for tool in mongodump mongorestore; do
    install -m 0755 "$ROOT/Tests/fixtures/$tool" "$ROOTFS/usr/local/bin/$tool"
    sed -i '1s|.*|#!/usr/bin/python3|' "$ROOTFS/usr/local/bin/$tool"
  done
  install -m 0644 "$ROOT/Tests/fixtures/mongo_archive.py" "$ROOTFS/usr/local/bin/mongo_archive.py"
  local site
  site=$("$ROOT/.venv/bin/python" -c 'import pymongo, os; print(os.path.dirname(os.path.dirname(pymongo.__file__)))')
  mkdir -p "$ROOTFS/usr/local/lib/python3.11/dist-packages"
  cp -R "$site/pymongo" "$site/bson" "$site/gridfs" "$site/dns" "$ROOTFS/usr/local/lib/python3.11/dist-packages/"
}

# stage_sources: copies of the stack's Gitea data, MLflow root and API credentials owned by 1000
# (the pod mounts them readable by its user), and the run's environment file.
stage_sources() {
  local smoke="$ROOTFS/smoke"
  mkdir -p "$smoke/tmp"
  cp -a "$GITEA_DATA_DIR" "$smoke/gitea-data"
  cp -a "$MLFLOW_ROOT" "$smoke/mlflow"
  cp "$K8S_TOKEN_FILE" "$smoke/token"
  cp "$K8S_CA_FILE" "$smoke/ca.crt"
  chown -R 1000:1000 "$smoke"
  chmod 0700 "$smoke"
  cat >"$smoke/env" <<EOF
export AWS_ACCESS_KEY_ID='$AWS_ACCESS_KEY_ID' AWS_SECRET_ACCESS_KEY='$AWS_SECRET_ACCESS_KEY'
export AWS_REGION='$AWS_REGION' AWS_ENDPOINT_URL_S3='$AWS_ENDPOINT_URL_S3'
export BACKUP_S3_BUCKET='$BACKUP_S3_BUCKET' BACKUP_S3_PREFIX='$SMOKE_PREFIX' BACKUP_ID='$SMOKE_ID'
export PGHOST='$PGHOST' PGPORT='$PGPORT' PGUSER='$PGUSER' PGPASSWORD='$PGPASSWORD' PGDATABASE='$PGDATABASE'
export MONGO_URI='$MONGO_URI'
export GITEA_DATA_DIR=/smoke/gitea-data MLFLOW_ROOT=/smoke/mlflow TMPDIR=/smoke/tmp HOME=/smoke/tmp
export K8S_SERVER='$K8S_SERVER' K8S_TOKEN_FILE=/smoke/token K8S_CA_FILE=/smoke/ca.crt K8S_NAMESPACE='$K8S_NAMESPACE'
export PATH=/usr/local/bin:/usr/bin:/bin
EOF
  chown 1000:1000 "$smoke/env"
  chmod 0600 "$smoke/env"
}

# in_chroot CMD...: runs CMD as user 1000 inside the root filesystem.
in_chroot() {
  chroot --userspec=1000:1000 "$ROOTFS" /usr/bin/env -i HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin "$@"
}

main() {
  parse_args "$@"
  [[ $(id -u) -eq 0 ]] || die 77 "needs root (debootstrap, chroot, mounts)"
  local missing
  missing=$(require_cmd debootstrap chroot tar strip) || die 69 "missing tools: $missing"
  trap cleanup EXIT
  local tarball bin tool version
  tarball=$(base_rootfs)
  bin=$(helpers_dir)
  WORK=$(mktemp -d /tmp/kdl-image-smoke.XXXXXX)
  ROOTFS="$WORK/rootfs"
  mkdir -p "$ROOTFS"
  tar -C "$ROOTFS" -xf "$tarball"
  chmod 0755 "$ROOTFS" # the cached tree's top came from mktemp -d (0700): user 1000 must traverse /
  mount -t proc proc "$ROOTFS/proc" && MOUNTS+=("$ROOTFS/proc")
  mount --bind /dev "$ROOTFS/dev" && MOUNTS+=("$ROOTFS/dev")
  install_image_files "$bin"

  if [[ -z "${KDL_STACK_ENV:-}" ]]; then
    OWN_STACK_DIR=$(mktemp -d /tmp/kdl-image-smoke-stack.XXXXXX)
    "$ROOT/scripts/stack/up.sh" --dir "$OWN_STACK_DIR" --seed tiny >&2
    KDL_STACK_ENV="$OWN_STACK_DIR/stack.env"
  fi
  # shellcheck source=/dev/null
  source "$KDL_STACK_ENV"
  kdl_register_env_secrets
  SMOKE_PREFIX="image-smoke-$$-$RANDOM"
  SMOKE_ID=$(date -u +%Y%m%dT%H%M%SZ)
  stage_sources

  for tool in "${HELPERS[@]}" backup.sh pg_dump mongodump zstd age jq; do
    version=$(in_chroot "$tool" --version 2>&1 | head -n1) || die 1 "$tool --version failed in the chroot: $version"
    log info step=version tool="$tool" version="$version"
  done

  local status=0
  in_chroot bash -c 'source /smoke/env && exec backup.sh' || status=$?
  if ((status != 0)); then die 1 "backup.sh in the chroot exited $status"; fi
  PATH="$bin:$PATH" s3-get "s3://$BACKUP_S3_BUCKET/$SMOKE_PREFIX/$SMOKE_ID/manifest.json" "$WORK/manifest.json" >/dev/null ||
    die 1 "the chroot's backup left no manifest"
  [[ "$(jq -r .status "$WORK/manifest.json")" == success ]] || die 1 "the chroot's backup is $(jq -r .status "$WORK/manifest.json")"
  log info step=done prefix="$SMOKE_PREFIX" id="$SMOKE_ID" objects="$(jq '[.components[].objects[]] | length' "$WORK/manifest.json")" \
    "image runtime ok: every helper runs and a full backup succeeded as user 1000"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

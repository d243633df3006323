#!/usr/bin/env bash
# Summary: install everything a fresh Debian bookworm machine lacks to build, test and demo kdl-backup.
# Usage: scripts/setup.sh [--quiet]
#
# Idempotent: says what it installs and skips what is present. Debian packages
# through apt, Python tools pinned in scripts/requirements*.txt into .venv
# (checkov, whose pins clash with moto's, into .venv-checkov; MLflow, likewise, into .venv-mlflow).
set -Eeuo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
CHECKOV_VENV="$ROOT/.venv-checkov"
MLFLOW_VENV="$ROOT/.venv-mlflow"

APT_PACKAGES=(
  # build: the C system libraries behind CCurl, CJQ, CSQLite, CCrypto, CZlib
  libcurl4-openssl-dev libjq-dev libsqlite3-dev libssl-dev zlib1g-dev pkg-config
  # the job's own tools and the local stack
  postgresql postgresql-client sqlite3 zstd age tar git jq curl ca-certificates openssl procps psmisc iproute2
  # the stack's S3: Ceph RGW (one mon, a memstore OSD, radosgw; scripts/stack/rgw.sh)
  ceph-mon ceph-osd radosgw ceph-common
  # tests and the image smoke test
  bats bats-assert bats-support shellcheck debootstrap valgrind time
  # the MinIO benchmark's peer
  restic
  python3-venv
)

say() { printf 'setup: %s\n' "$*" >&2; }

# install_apt_packages: installs the Debian packages that are missing, one apt call.
install_apt_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    say "apt: all ${#APT_PACKAGES[@]} packages present"
    return
  fi
  say "apt: installing ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# python_for_venv: a Python 3.11+ that can make a venv (pyenv's on the dev image, Debian's elsewhere).
python_for_venv() {
  local py
  for py in python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import venv, sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"
      return
    fi
  done
  echo /usr/bin/python3
}

# install_venv DIR REQUIREMENTS: creates the venv and installs the pinned requirements when they changed.
install_venv() {
  local dir=$1 requirements=$2 stamp
  stamp="$dir/.requirements.sha256"
  if [[ -f "$stamp" ]] && sha256sum --status -c "$stamp" 2>/dev/null && [[ -x "$dir/bin/python" ]]; then
    say "pip: $(basename "$dir") up to date with $(basename "$requirements")"
    return
  fi
  [[ -x "$dir/bin/python" ]] || { say "pip: creating $(basename "$dir")"; "$(python_for_venv)" -m venv "$dir"; }
  say "pip: installing $(basename "$requirements") into $(basename "$dir")"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  sha256sum "$requirements" >"$stamp"
}

# check_swift: the toolchain is part of the machine image, not something apt can install.
check_swift() {
  if command -v swift >/dev/null; then
    say "swift: $(swift --version 2>/dev/null | head -n1)"
  elif [[ -x /opt/swift/usr/bin/swift ]]; then
    say "swift: /opt/swift/usr/bin (add it to PATH)"
  else
    say "swift: not found; install Swift 6 for Linux at /opt/swift"
    return 69
  fi
}

main() {
  install_apt_packages
  install_venv "$VENV" "$ROOT/scripts/requirements.txt"
  install_venv "$MLFLOW_VENV" "$ROOT/scripts/requirements-mlflow.txt"
  if [[ -f "$ROOT/scripts/requirements-checkov.txt" ]]; then
    install_venv "$CHECKOV_VENV" "$ROOT/scripts/requirements-checkov.txt"
  fi
  check_swift
  say "done"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

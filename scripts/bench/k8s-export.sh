#!/usr/bin/env bash
# Summary: measure k8s-export: export 5,000 Secrets from the Kubernetes API double (10 pages of 500),
#          wall time and peak RSS vs issue 4's targets (< 2 s, < 48 MiB); prints a markdown table.
# Usage: scripts/bench/k8s-export.sh     (KDL_BIN_DIR: folder of the release helpers; default .build/release)
#
# Also measured, for context: the same 10 pages fetched with curl alone (the double's own serving
# time, a floor no client beats), and peak RSS for 1,000 objects (memory must not grow with objects).
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${KDL_BIN_DIR:-$ROOT/.build/release}
PYTHON=$ROOT/.venv/bin/python
RUNS=5
WORK=""
DOUBLE_PID=""

cleanup() {
  if [[ -n "$DOUBLE_PID" ]]; then
    kill "$DOUBLE_PID" 2>/dev/null || true
    wait "$DOUBLE_PID" 2>/dev/null || true
  fi
  [[ -n "$WORK" ]] && rm -rf "$WORK"
}

# make_objects FILE: 5,000 Secrets in namespace kdl and 1,000 in namespace small, shaped like KDL's ssh-keys Secrets.
make_objects() {
  "$PYTHON" - "$1" <<'PY'
import base64, json, sys
def secret(ns, i):
    key = base64.b64encode((f"-----BEGIN OPENSSH PRIVATE KEY-----\n{i:05d}" + "A" * 400 + "\n").encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"user{i:05d}-ssh-keys", "namespace": ns, "labels": {"app": "kdl-server"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "data": {"KDL_USER_PRIVATE_SSH_KEY": key, "KDL_USER_PUBLIC_SSH_KEY": base64.b64encode(f"ssh-ed25519 AAAA{i}".encode()).decode()}}
items = [secret("kdl", i) for i in range(5000)] + [secret("small", i) for i in range(1000)]
json.dump({"crds": [], "items": items}, open(sys.argv[1], "w"))
PY
}

# start_double: the API double on a free loopback port; waits for WORK/double/port.
start_double() {
  mkdir -p "$WORK/double"
  "$PYTHON" "$ROOT/Tests/fixtures/kube_api_double.py" --port 0 --dir "$WORK/double" --objects "$WORK/objects.json" \
    >/dev/null 2>"$WORK/double.stderr" &
  DOUBLE_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do
    [[ -s "$WORK/double/port" ]] && return 0
    sleep 0.05
  done
  echo "k8s-export bench: the API double did not start: $(cat "$WORK/double.stderr")" >&2
  return 1
}

# median: the middle of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# measure NAMESPACE: runs k8s-export RUNS times; prints "median_seconds max_rss_kib objects bytes median_cpu_seconds".
measure() {
  local namespace=$1 times=() cpus=() rss=0 i start end kib user sys
  for ((i = 0; i < RUNS; i++)); do
    start=$(date +%s.%N)
    /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$BIN_DIR/k8s-export" --server "$SERVER" --token-file "$WORK/double/token" \
      --ca-file "$WORK/double/ca.crt" -n "$namespace" --summary -o "$WORK/out.yaml" secrets 2>"$WORK/stderr"
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
    read -r kib user sys < <(tail -n1 "$WORK/rss")
    cpus+=("$(echo "$user + $sys" | bc)")
    ((kib > rss)) && rss=$kib
  done
  local objects
  objects=$(tail -n1 "$WORK/stderr" | jq -r '.secrets')
  printf '%s %s %s %s %s\n' "$(printf '%s\n' "${times[@]}" | median)" "$rss" "$objects" "$(stat -c %s "$WORK/out.yaml")" \
    "$(printf '%s\n' "${cpus[@]}" | median)"
}

# fetch_floor: the same list with curl alone (pages followed by their continue token), median seconds.
fetch_floor() {
  local times=() i start end token
  for ((i = 0; i < RUNS; i++)); do
    start=$(date +%s.%N)
    token=""
    while :; do
      curl -sS --fail --cacert "$WORK/double/ca.crt" -H "Authorization: Bearer $(cat "$WORK/double/token")" \
        "$SERVER/api/v1/namespaces/kdl/secrets?limit=500${token:+&continue=$token}" -o "$WORK/page.json"
      token=$(jq -r '.metadata.continue // ""' "$WORK/page.json")
      [[ -n "$token" ]] || break
    done
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
  done
  printf '%s\n' "${times[@]}" | median
}

yes_no() { if (($(echo "$1" | bc))); then echo yes; else echo no; fi; }

main() {
  [[ -x "$BIN_DIR/k8s-export" ]] || { echo "k8s-export bench: no $BIN_DIR/k8s-export (swift build -c release)" >&2; exit 66; }
  WORK=$(mktemp -d)
  trap cleanup EXIT
  make_objects "$WORK/objects.json"
  start_double
  SERVER="https://127.0.0.1:$(cat "$WORK/double/port")"
  measure kdl >/dev/null  # warm-up: the double's first answers and the page cache

  local big_s big_rss big_n big_bytes big_cpu small_s small_rss small_n floor_s load
  read -r big_s big_rss big_n big_bytes big_cpu < <(measure kdl)
  read -r small_s small_rss small_n _ _ < <(measure small)
  floor_s=$(fetch_floor)
  load=$(cut -d' ' -f1 /proc/loadavg)
  [[ "$big_n" == 5000 && "$small_n" == 1000 ]] || { echo "k8s-export bench: exported $big_n and $small_n objects, expected 5000 and 1000" >&2; exit 1; }
  local big_mib small_mib
  big_mib=$(echo "scale=1; $big_rss / 1024" | bc)
  small_mib=$(echo "scale=1; $small_rss / 1024" | bc)

  echo "| measure (median of $RUNS runs; Secrets from the API double over TLS, 500 a page; load average $load on $(nproc) cores) | figure | target | met |"
  echo "|---|---|---|---|"
  echo "| wall time, 5,000 objects ($((big_bytes / 1024)) KiB of YAML) | $(printf '%.3f' "$big_s") s | < 2 s | $(yes_no "$big_s < 2") |"
  echo "| CPU time of k8s-export (user + sys), 5,000 objects | $(printf '%.3f' "$big_cpu") s | — | — |"
  echo "| peak RSS, 5,000 objects | ${big_mib} MiB | < 48 MiB | $(yes_no "$big_mib < 48") |"
  echo "| peak RSS, 1,000 objects (memory flat in the object count) | ${small_mib} MiB | within 4 MiB of 5,000's | $(yes_no "($big_mib - $small_mib) < 4") |"
  echo "| wall time, 1,000 objects | $(printf '%.3f' "$small_s") s | — | — |"
  echo "| floor: the 10 pages fetched by curl alone (the double's serving time) | $(printf '%.3f' "$floor_s") s | — | — |"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

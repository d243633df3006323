#!/usr/bin/env bash
# Summary: mlflow-scan targets (issue 5): scan 1,000 projects (< 1 s); snapshot a 500 MiB database while a
#          writer inserts runs, against cp of the same file (<= 1.5x cp). Prints a markdown table.
# Usage: KDL_BIN_DIR=DIR scripts/bench/mlflow-scan.sh
#   env: BENCH_MLFLOW_PROJECTS (1000), BENCH_MLFLOW_MIB (500), BENCH_MLFLOW_JOURNAL (wal|delete, default wal),
#        BENCH_MLFLOW_REPEAT (3: each figure is the median of this many runs)
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROJECTS=${BENCH_MLFLOW_PROJECTS:-1000}
MIB=${BENCH_MLFLOW_MIB:-500}
JOURNAL=${BENCH_MLFLOW_JOURNAL:-wal}
REPEAT=${BENCH_MLFLOW_REPEAT:-3}
PYTHON="$ROOT/.venv/bin/python"
WORK=""
WRITER_PID=""

die() { echo "mlflow-scan bench: $*" >&2; exit 1; }

cleanup() {
  if [[ -n "$WRITER_PID" ]]; then kill "$WRITER_PID" 2>/dev/null || true; wait "$WRITER_PID" 2>/dev/null || true; fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# now_ns: monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }

# elapsed START_NS: seconds since START_NS, three decimals.
elapsed() { awk -v ns=$(($(now_ns) - $1)) 'BEGIN { printf "%.3f", ns / 1e9 }'; }

# median: the middle of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# make_projects DIR N: N claim folders holding a copy of one small MLflow store, every tenth with local mlruns/.
make_projects() {
  "$PYTHON" - "$1" "$2" <<'PY'
import os, shutil, sys, uuid
sys.path.insert(0, os.path.join(os.environ["BENCH_ROOT"], "Tests", "e2e"))
from pathlib import Path
from test_mlflow_scan import make_store
root, count = Path(sys.argv[1]), int(sys.argv[2])
template = make_store(root.parent / "template", runs=50)
for n in range(count):
    folder = root / f"kdl-project-{n:04d}-mlflow-claim-pvc-{uuid.UUID(int=n)}"
    folder.mkdir(parents=True)
    shutil.copyfile(template, folder / "mlflow.db")
    if n % 10 == 0:
        (folder / "mlruns" / "0" / "run" / "artifacts").mkdir(parents=True)
        (folder / "mlruns" / "0" / "run" / "artifacts" / "model.pkl").write_bytes(b"x" * 4096)
PY
}

# make_big_store FILE MIB MODE: an MLflow store of about MIB MiB (20,000 runs and their metrics) in journal MODE.
make_big_store() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import os, sqlite3, sys
sys.path.insert(0, os.path.join(os.environ["BENCH_ROOT"], "Tests", "e2e"))
from test_mlflow_scan import SCHEMA
path, mib, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = sqlite3.connect(path, isolation_level=None)
c.execute(f"PRAGMA journal_mode={mode}")
c.executescript(SCHEMA)
c.execute("""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
INSERT INTO runs (run_uuid, name, source_type, status, start_time, lifecycle_stage, experiment_id)
SELECT printf('%032x', i), 'run-' || i, 'LOCAL', 'FINISHED', 1700000000000 + i, 'active', 0 FROM n""")
batch = 0
while c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0] < mib << 20:
    c.execute(f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999)
    INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
    SELECT 'loss', (i % 1000) / 1000.0, 1700000000000 + i, printf('%032x', i % 20000), {batch} * 100000 + i, 0 FROM n""")
    batch += 1
if mode == "wal":
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
PY
}

# start_writer DB STOPFILE: the e2e tests' writer (one transaction per run, as MLflow does) in the background.
start_writer() {
  "$PYTHON" -c "import os, sys; sys.path.insert(0, os.path.join(os.environ['BENCH_ROOT'], 'Tests', 'e2e')); from test_mlflow_scan import WRITER; sys.argv = ['writer'] + sys.argv[1:]; exec(WRITER)" \
    "$1" "$2" 20000 >"$WORK/writer.out" 2>"$WORK/writer.err" &
  WRITER_PID=$!
}

# json_field FILE EXPR: a value from the first store of a report.
json_field() { "$PYTHON" -c "import json, sys; s = json.load(open(sys.argv[1]))['stores'][0]; print($2)" "$1"; }

main() {
  [[ -n "${KDL_BIN_DIR:-}" && -x "$KDL_BIN_DIR/mlflow-scan" ]] || die "set KDL_BIN_DIR to the folder of the release helpers (scripts/bench.sh does)"
  [[ -x "$PYTHON" ]] || die "$PYTHON is missing: run scripts/setup.sh"
  export BENCH_ROOT="$ROOT"
  local scan="$KDL_BIN_DIR/mlflow-scan"
  WORK=$(mktemp -d /tmp/mlflow-scan-bench.XXXXXX)
  trap cleanup EXIT

  # 1. Scan many projects (warm cache: the first run is discarded).
  make_projects "$WORK/many/shared-volume" "$PROJECTS"
  "$scan" "$WORK/many/shared-volume" >"$WORK/many.json"
  local found scans=() i start
  found=$("$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1])); print(r['summary']['ok'])" "$WORK/many.json")
  [[ "$found" == "$PROJECTS" ]] || die "scan found $found ok stores, expected $PROJECTS"
  for ((i = 0; i < REPEAT; i++)); do
    start=$(now_ns)
    "$scan" "$WORK/many/shared-volume" >/dev/null
    scans+=("$(elapsed "$start")")
  done

  # 2. Snapshot one big store while a writer inserts runs; cp of the same file under the same load.
  local big="$WORK/big/shared-volume/kdl-big-mlflow-claim-pvc-0001"
  mkdir -p "$big"
  make_big_store "$big/mlflow.db" "$MIB" "$JOURNAL"
  local bytes
  bytes=$(stat -c %s "$big/mlflow.db")
  start_writer "$big/mlflow.db" "$WORK/stop"
  sleep 1
  local cps=() totals=() copies=() checks=() digests=() rss=() quicks=() quick_checks=() runs_before runs_after
  runs_before=$("$PYTHON" -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1], timeout=60).execute('SELECT count(*) FROM runs').fetchone()[0])" "$big/mlflow.db")
  for ((i = 0; i < REPEAT; i++)); do
    rm -f "$WORK/cp.db"
    start=$(now_ns)
    cp "$big/mlflow.db" "$WORK/cp.db"
    cps+=("$(elapsed "$start")")

    rm -rf "$WORK/snap"
    start=$(now_ns)
    /usr/bin/time -f %M -o "$WORK/rss" "$scan" "$WORK/big/shared-volume" --snapshot "$WORK/snap" >"$WORK/snap.json"
    totals+=("$(elapsed "$start")")
    [[ "$(json_field "$WORK/snap.json" "s['snapshot']['integrity']")" == ok ]] || die "snapshot not ok: $(cat "$WORK/snap.json")"
    copies+=("$(json_field "$WORK/snap.json" "s['snapshot']['copySeconds']")")
    checks+=("$(json_field "$WORK/snap.json" "s['snapshot']['checkSeconds']")")
    digests+=("$(json_field "$WORK/snap.json" "s['snapshot']['digestSeconds']")")
    rss+=("$(cat "$WORK/rss")")

    rm -rf "$WORK/snap"
    start=$(now_ns)
    "$scan" "$WORK/big/shared-volume" --snapshot "$WORK/snap" --check quick >"$WORK/snap.json"
    quicks+=("$(elapsed "$start")")
    quick_checks+=("$(json_field "$WORK/snap.json" "s['snapshot']['checkSeconds']")")
  done
  runs_after=$(json_field "$WORK/snap.json" "s['runs']")
  touch "$WORK/stop"
  wait "$WRITER_PID" || die "the writer failed: $(cat "$WORK/writer.err")"
  WRITER_PID=""

  local scan_s cp_s total_s copy_s check_s digest_s quick_s
  scan_s=$(median "${scans[@]}")
  cp_s=$(median "${cps[@]}")
  total_s=$(median "${totals[@]}")
  copy_s=$(median "${copies[@]}")
  check_s=$(median "${checks[@]}")
  digest_s=$(median "${digests[@]}")
  quick_s=$(median "${quicks[@]}")
  echo "| measure | measured | target |"
  echo "|---|---|---|"
  echo "| scan $PROJECTS projects (median of $REPEAT; runs: ${scans[*]} s) | $scan_s s | < 1 s |"
  echo "| cp of the $((bytes >> 20)) MiB $JOURNAL-mode mlflow.db, writer active (runs: ${cps[*]} s) | $cp_s s | reference |"
  echo "| snapshot copy with the backup API (runs: ${copies[*]} s) | $copy_s s = $(ratio "$copy_s" "$cp_s")x cp | <= 1.5x cp |"
  echo "| PRAGMA integrity_check of the copy (default --check integrity) | $check_s s | - |"
  echo "| PRAGMA quick_check of the copy (--check quick) | $(median "${quick_checks[@]}") s | - |"
  echo "| sha256 of the copy | $digest_s s | - |"
  echo "| whole mlflow-scan --snapshot run (runs: ${totals[*]} s) | $total_s s = $(ratio "$total_s" "$cp_s")x cp | <= 1.5x cp |"
  echo "| whole run with --check quick (runs: ${quicks[*]} s) | $quick_s s = $(ratio "$quick_s" "$cp_s")x cp | <= 1.5x cp |"
  echo "| mlflow-scan max RSS | $(($(median "${rss[@]}") / 1024)) MiB | streaming (not the db size) |"
  echo "| runs the writer committed during the snapshots (in the last copy: $runs_after) | $(cat "$WORK/writer.out") (started from $runs_before) | writer active |"
  echo
  echo "Load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores."
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

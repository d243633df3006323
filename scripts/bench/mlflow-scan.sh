#!/usr/bin/env bash
# Summary: mlflow-scan targets (issue 5): scan 1,000 projects (< 1 s); snapshot a 500 MiB database while a
#          writer inserts runs, against cp of the same file (<= 1.5x cp), for a WAL and a rollback-journal store.
#          Per store and round, alternating: cp, a --snapshot run (default --check integrity), a run with
#          --check quick; each figure is the best of the rounds (all rounds shown). Prints a markdown table.
# Usage: KDL_BIN_DIR=DIR scripts/bench/mlflow-scan.sh
#   env: BENCH_MLFLOW_PROJECTS (1000), BENCH_MLFLOW_MIB (500), BENCH_MLFLOW_REPEAT (3 rounds, at least 2)
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROJECTS=${BENCH_MLFLOW_PROJECTS:-1000}
MIB=${BENCH_MLFLOW_MIB:-500}
REPEAT=${BENCH_MLFLOW_REPEAT:-3}
PYTHON="$ROOT/.venv/bin/python"
WORK=""
WRITER_PID=""
STOP=""

die() { echo "mlflow-scan bench: $*" >&2; exit 1; }

cleanup() {
  if [[ -n "$WRITER_PID" ]]; then kill "$WRITER_PID" 2>/dev/null || true; wait "$WRITER_PID" 2>/dev/null || true; fi
  if [[ -n "$STOP" ]]; then touch "$STOP"; fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# now_ns: monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }

# elapsed START_NS: seconds since START_NS, three decimals.
elapsed() { awk -v ns=$(($(now_ns) - $1)) 'BEGIN { printf "%.3f\n", ns / 1e9 }'; }

# best: the smallest of the numbers given as arguments.
best() { printf '%s\n' "$@" | sort -g | head -n 1; }

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

# start_writer DB STOPFILE FIRST: in the background, the e2e tests' writer (one transaction per run with its
# params and metrics, as MLflow's SQLAlchemy store does) until STOPFILE exists; it prints the runs it committed
# and its longest commit (seconds from BEGIN IMMEDIATE to COMMIT, lock waits included).
start_writer() {
  "$PYTHON" -c "import os, sys; sys.path.insert(0, os.path.join(os.environ['BENCH_ROOT'], 'Tests', 'e2e')); from test_mlflow_scan import WRITER; sys.argv = ['writer'] + sys.argv[1:]; exec(WRITER)" \
    "$1" "$2" "$3" >"$WORK/writer.out" 2>"$WORK/writer.err" &
  WRITER_PID=$!
  STOP=$2
}

# stop_writer: stops the writer and appends "RUNS LONGEST" to $WORK/writer-<store>.txt.
stop_writer() {
  touch "$STOP"
  wait "$WRITER_PID" || die "the writer failed: $(cat "$WORK/writer.err")"
  WRITER_PID=""
  cat "$WORK/writer.out" >>"$WORK/writer-$1.txt"
  rm -f "$STOP"
}

# run_sampled OUT CMD...: runs CMD with stdout to OUT.json, polling /proc/PID/status every 20 ms for its peak
# anonymous and file-backed resident memory; writes "ANON_KIB FILE_KIB" to OUT.rss and the wall time to OUT.s.
run_sampled() {
  local out=$1 start pid anon=0 file=0 key value rest rc=0
  shift
  start=$(now_ns)
  "$@" >"$out.json" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    while read -r key value rest; do
      case $key in
        RssAnon:) if ((value > anon)); then anon=$value; fi ;;
        RssFile:) if ((value > file)); then file=$value; fi ;;
      esac
    done <"/proc/$pid/status" 2>/dev/null || true
    sleep 0.02
  done
  wait "$pid" || rc=$?
  elapsed "$start" >"$out.s"
  echo "$anon $file" >"$out.rss"
  return "$rc"
}

# json_field FILE EXPR: a value from the first store of a report.
json_field() { "$PYTHON" -c "import json, sys; s = json.load(open(sys.argv[1]))['stores'][0]; print($2)" "$1"; }

# measure_round STORE ROUND: one round on the store of that name, writer active: cp, a default snapshot run, a quick one.
# Appends each figure to $WORK/<store>.<figure>.
measure_round() {
  local name=$1 round=$2 tree="$WORK/$1/shared-volume" db start out="$WORK/run"
  db="$tree/kdl-$1-mlflow-claim-pvc-0001/mlflow.db"
  start_writer "$db" "$WORK/stop" $((100000000 + round * 10000000))
  sleep 1
  rm -f "$WORK/cp.db"
  start=$(now_ns)
  cp "$db" "$WORK/cp.db"
  elapsed "$start" >>"$WORK/$name.cp"
  rm -f "$WORK/cp.db"

  local check
  for check in integrity quick; do
    rm -rf "$WORK/snap"
    run_sampled "$out" "$SCAN" "$tree" --snapshot "$WORK/snap" --check "$check" || die "mlflow-scan failed: $(cat "$out.json")"
    [[ "$(json_field "$out.json" "s['snapshot'].get('integrity')")" == ok ]] || die "snapshot not ok: $(cat "$out.json")"
    cat "$out.s" >>"$WORK/$name.total-$check"
    json_field "$out.json" "s['snapshot']['checkSeconds']" >>"$WORK/$name.check-$check"
    json_field "$out.json" "s['snapshot']['copySeconds']" >>"$WORK/$name.copy"
    json_field "$out.json" "s['snapshot']['digestSeconds']" >>"$WORK/$name.digest"
    json_field "$out.json" "s['snapshot']['method']" >"$WORK/$name.method"
    cat "$out.rss" >>"$WORK/$name.rss"
  done
  rm -rf "$WORK/snap"
  stop_writer "$name"
}

# figure STORE NAME: "best s (all: a b c)" of the figures recorded for STORE.
figure() {
  local values
  mapfile -t values <"$WORK/$1.$2"
  echo "$(best "${values[@]}") s (${values[*]})"
}

# cell_vs_cp STORE NAME: the best figure and its ratio to the best cp of the same store.
cell_vs_cp() {
  local values cps
  mapfile -t values <"$WORK/$1.$2"
  mapfile -t cps <"$WORK/$1.cp"
  echo "$(best "${values[@]}") s = $(ratio "$(best "${values[@]}")" "$(best "${cps[@]}")")x cp (${values[*]})"
}

# rss STORE: peak anonymous and file-backed resident memory over the store's runs, MiB.
rss() {
  local anon file
  anon=$(cut -d' ' -f1 "$WORK/$1.rss" | sort -g | tail -n 1)
  file=$(cut -d' ' -f2 "$WORK/$1.rss" | sort -g | tail -n 1)
  echo "$((anon / 1024)) MiB anon + $((file / 1024)) MiB file-backed"
}

# writer STORE: runs committed while measuring, and the longest commit.
writer() {
  awk '{ runs += $1; if ($2 > longest) longest = $2 } END { printf "%d runs, longest commit %.3f s", runs, longest }' "$WORK/writer-$1.txt"
}

main() {
  [[ -n "${KDL_BIN_DIR:-}" && -x "$KDL_BIN_DIR/mlflow-scan" ]] || die "set KDL_BIN_DIR to the folder of the release helpers (scripts/bench.sh does)"
  [[ -x "$PYTHON" ]] || die "$PYTHON is missing: run scripts/setup.sh"
  ((REPEAT >= 2)) || die "BENCH_MLFLOW_REPEAT must be at least 2"
  export BENCH_ROOT="$ROOT"
  SCAN="$KDL_BIN_DIR/mlflow-scan"
  WORK=$(mktemp -d /tmp/mlflow-scan-bench.XXXXXX)
  trap cleanup EXIT

  # 1. Scan many projects (warm cache: the first run is discarded).
  make_projects "$WORK/many/shared-volume" "$PROJECTS"
  "$SCAN" "$WORK/many/shared-volume" >"$WORK/many.json"
  local found scans=() i start
  found=$("$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1])); print(r['summary']['ok'])" "$WORK/many.json")
  [[ "$found" == "$PROJECTS" ]] || die "scan found $found ok stores, expected $PROJECTS"
  for ((i = 0; i < REPEAT; i++)); do
    start=$(now_ns)
    "$SCAN" "$WORK/many/shared-volume" >/dev/null
    scans+=("$(elapsed "$start")")
  done
  rm -rf "$WORK/many" "$WORK/template"

  # 2. One big WAL store and the same database in rollback-journal mode (MLflow's SQLite default).
  local wal_db="$WORK/wal/shared-volume/kdl-wal-mlflow-claim-pvc-0001/mlflow.db"
  local rollback_db="$WORK/rollback/shared-volume/kdl-rollback-mlflow-claim-pvc-0001/mlflow.db"
  mkdir -p "$(dirname "$wal_db")" "$(dirname "$rollback_db")"
  make_big_store "$wal_db" "$MIB" wal
  cp "$wal_db" "$rollback_db"
  "$PYTHON" -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=DELETE')" "$rollback_db"
  local wal_bytes rollback_bytes
  wal_bytes=$(stat -c %s "$wal_db")
  rollback_bytes=$(stat -c %s "$rollback_db")
  for ((i = 0; i < REPEAT; i++)); do
    measure_round wal "$i"
    measure_round rollback "$i"
  done

  echo "| measure (best of $REPEAT rounds; every round in brackets) | WAL store ($((wal_bytes >> 20)) MiB) | rollback-journal store ($((rollback_bytes >> 20)) MiB) | target |"
  echo "|---|---|---|---|"
  echo "| scan $PROJECTS projects | $(best "${scans[@]}") s (${scans[*]}) | | < 1 s |"
  echo "| cp of mlflow.db, writer active | $(figure wal cp) | $(figure rollback cp) | reference |"
  echo "| snapshot copy ($(cat "$WORK/wal.method") / $(cat "$WORK/rollback.method")), writer active | $(cell_vs_cp wal copy) | $(cell_vs_cp rollback copy) | <= 1.5x cp |"
  echo "| PRAGMA integrity_check of the copy (default --check integrity) | $(figure wal check-integrity) | $(figure rollback check-integrity) | - |"
  echo "| PRAGMA quick_check of the copy (--check quick) | $(figure wal check-quick) | $(figure rollback check-quick) | - |"
  echo "| sha256 of the copy | $(figure wal digest) | $(figure rollback digest) | - |"
  echo "| whole mlflow-scan --snapshot run, default check | $(cell_vs_cp wal total-integrity) | $(cell_vs_cp rollback total-integrity) | (target is the copy's) |"
  echo "| whole run with --check quick | $(cell_vs_cp wal total-quick) | $(cell_vs_cp rollback total-quick) | (target is the copy's) |"
  echo "| peak resident memory of mlflow-scan (sampled every 20 ms) | $(rss wal) | $(rss rollback) | streaming (anon not the db size) |"
  echo "| writer during the rounds | $(writer wal) | $(writer rollback) | writer active |"
  echo
  echo "The copy replaces the original backup's cp and is what the target applies to. The check and the digest"
  echo "come on top: with the default integrity_check the whole run is several times cp (see the last rows)."
  echo "File-backed memory is the page cache mapped by SQLite (a WAL source is read through mmap for the backup API), not a heap copy."
  echo "Load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores."
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

#!/usr/bin/env bash
# Summary: measure notify: wall time to deliver a partial run to all five channels, the bound a hanging
#          channel puts on a run, and peak RSS; prints a markdown table of figures vs targets.
# Usage: scripts/bench/notify.sh     (KDL_BIN_DIR: folder of the release helpers; default .build/release)
#
# Channels are the loopback capture server (Slack, webhook, Pushgateway, healthchecks) and the SMTP sink
# from Tests/fixtures. Issue 6 sets no figures; the targets below are the bounds the design promises:
# a hanging channel costs at most (retries + 1) x timeout + backoff, and no process of ours exceeds 64 MiB RSS (issue 7).
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${KDL_BIN_DIR:-$ROOT/.build/release}
PYTHON=$ROOT/.venv/bin/python
RUNS=5
WORK=""
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "$WORK" ]] && rm -rf "$WORK"
}

# start_fixture DIR SCRIPT ARGS...: starts a fixture in the background and waits for DIR/port.
start_fixture() {
  local dir=$1 script=$2
  shift 2
  mkdir -p "$dir"
  "$PYTHON" "$ROOT/Tests/fixtures/$script" --dir "$dir" "$@" 2>"$dir/stderr" &
  PIDS+=("$!")
  local i
  for ((i = 0; i < 200; i++)); do
    [[ -s "$dir/port" ]] && return 0
    sleep 0.05
  done
  echo "notify bench: $script did not start" >&2
  return 1
}

# measure NAME ENV...: runs notify RUNS times with the environment, prints "median_seconds max_rss_kib".
measure() {
  local times=() rss=0 i start end kib
  for ((i = 0; i < RUNS; i++)); do
    start=$(date +%s.%N)
    env -i PATH=/usr/bin:/bin "$@" /usr/bin/time -f '%M' -o "$WORK/rss" \
      "$BIN_DIR/notify" --event finish --manifest "$ROOT/Tests/fixtures/manifests/partial.json" >/dev/null 2>"$WORK/stderr" || true
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
    kib=$(tail -n1 "$WORK/rss")
    ((kib > rss)) && rss=$kib
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p" | tr '\n' ' '
  echo "$rss"
}

main() {
  [[ -x "$BIN_DIR/notify" ]] || { echo "notify bench: no $BIN_DIR/notify (build with swift build -c release)" >&2; exit 66; }
  WORK=$(mktemp -d)
  trap cleanup EXIT
  start_fixture "$WORK/http" capture_server.py --port 0 --hang /hang
  start_fixture "$WORK/smtp" smtp_sink.py --port 0
  local http smtp
  http="http://127.0.0.1:$(cat "$WORK/http/port")"
  smtp="smtp://127.0.0.1:$(cat "$WORK/smtp/port")"
  local common=(
    "NOTIFY_SLACK_WEBHOOK_URL=$http/slack/T000/B000/benchtoken" "NOTIFY_PUSHGATEWAY_URL=$http/pgw"
    "NOTIFY_HEALTHCHECK_URL=$http/ping/bench-uuid-0000" "NOTIFY_SMTP_URL=$smtp"
    "NOTIFY_MAIL_FROM=kdl-backup@kdl.example.com" "NOTIFY_MAIL_TO=ops@example.com"
  )
  local healthy hanging healthy_s healthy_rss hanging_s hanging_rss
  read -r healthy_s healthy_rss < <(measure "${common[@]}" "NOTIFY_WEBHOOK_URL=$http/hook")
  read -r hanging_s hanging_rss < <(measure "${common[@]}" "NOTIFY_WEBHOOK_URL=$http/hang" NOTIFY_TIMEOUT_SECONDS=2 NOTIFY_RETRIES=1)
  healthy=$(printf '%.3f' "$healthy_s")
  hanging=$(printf '%.3f' "$hanging_s")
  local bound=5  # 2 attempts x 2 s + at most 1 s of backoff
  local rss_mib
  local rss_kib=$healthy_rss
  ((hanging_rss > rss_kib)) && rss_kib=$hanging_rss
  rss_mib=$(echo "scale=1; $rss_kib / 1024" | bc)

  echo "| measure (median of $RUNS runs, partial manifest, 5 channels) | figure | target | met |"
  echo "|---|---|---|---|"
  echo "| wall time, every channel healthy | ${healthy} s | ≤ 1 s | $(yes_no "$healthy <= 1") |"
  echo "| wall time, webhook hanging (timeout 2 s, 1 retry) | ${hanging} s | ≤ ${bound}.5 s (bound + process start) | $(yes_no "$hanging <= $bound + 0.5") |"
  echo "| peak RSS of notify | ${rss_mib} MiB | ≤ 64 MiB | $(yes_no "$rss_mib <= 64") |"
}

yes_no() { if (($(echo "$1" | bc))); then echo yes; else echo no; fi; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi

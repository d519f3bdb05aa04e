#!/usr/bin/env bash
# Memory benchmark: N letters (N/3 signers x 3 targets, rounded up) are imported, then sent to
# Postfix's smtp-sink on 127.0.0.1 by one `missive send`, whose resident memory (VmRSS in
# /proc/<pid>/status) is sampled every 0.5 s. Prints min/median/max and a sparkline of the
# samples for the import and for the send, and the true peak (the kernel's high-water mark, from
# /usr/bin/time -v), which sampling may miss. Target: the send's peak at most 64 MiB, and flat
# whatever N (compare N=10000 with N=1000000). Fails (exit 1) unless every letter was sent.
#
# Usage: bench/memory.sh [--json] [N] [CONNECTIONS]   (defaults: 1000000 letters, 16 connections)
#   INTERVAL=S   seconds between samples (default 0.5)
# Needs: smtp-sink (apt-get install postfix), /usr/bin/time (apt-get install time), python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

JSON=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --json) JSON=1 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
LETTERS="${ARGS[0]:-1000000}"
CONNS="${ARGS[1]:-16}"
INTERVAL="${INTERVAL:-0.5}"
SIGNERS=$(((LETTERS + 2) / 3))
LETTERS=$((SIGNERS * 3))
need smtp-sink /usr/bin/time pgrep python3

build_release
make_campaign 3
make_signers "$WORK/signers.csv" "$SIGNERS"
start_sink
use_scratch_settings
export MISSIVE_SMTP__CONNECTIONS="$CONNS"

machine_facts
echo "memory: $SIGNERS signers x 3 targets = $LETTERS letters, $CONNS SMTP connections, RSS sampled every $INTERVAL s"

# sampled LABEL COMMAND...: runs the command, writing its VmRSS (KiB) every $INTERVAL s to
# $WORK/LABEL.rss, its stdout to $WORK/LABEL.out; prints the summary line and the sparkline.
sampled() {
  local label=$1; shift
  local start timer pid="" status=0
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/$label.time" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" &
  timer=$!
  track "$timer"
  : >"$WORK/$label.rss"
  while kill -0 "$timer" 2>/dev/null; do
    if [ -z "$pid" ]; then
      pid=$(pgrep -P "$timer" | head -1 || true)
      if [ -n "$pid" ]; then track "$pid"; fi
    fi
    if [ -n "$pid" ]; then
      awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null >>"$WORK/$label.rss" || true
    fi
    sleep "$INTERVAL"
  done
  wait "$timer" || status=$?
  # The true peak, which sampling may miss: the kernel's high-water mark via /usr/bin/time.
  awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/$label.time" >"$WORK/$label.peak"
  if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
    cat "$WORK/$label.err" >&2
    die "$label exited with status $status"
  fi
  python3 - "$WORK/$label.rss" "$label" "$(date +%s.%N)" "$start" "$INTERVAL" "$(cat "$WORK/$label.peak")" <<'PY' | tee "$WORK/$label.summary"
import statistics, sys
path, label, end, start = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
interval, peak = float(sys.argv[5]), int(sys.argv[6]) / 1024
kib = [int(l) for l in open(path) if l.strip()]
if not kib:
    kib = [0]
mib = [k / 1024 for k in kib]
lo, hi = min(mib), max(mib)
bars = "▁▂▃▄▅▆▇█"
# At most 60 columns: each shows the largest sample of its stretch.
step = max(1, -(-len(mib) // 60))
cols = [max(mib[i:i + step]) for i in range(0, len(mib), step)]
spark = "".join(bars[min(7, int((c - lo) / (hi - lo) * 8)) if hi > lo else 0] for c in cols)
print(f"{label}: {end - start:.1f} s, {len(mib)} samples, RSS min {lo:.1f} / median "
      f"{statistics.median(mib):.1f} / max {hi:.1f} MiB; peak (kernel high-water mark) {peak:.1f} MiB")
print(f"  {spark}  ({lo:.0f}..{hi:.0f} MiB, {step * interval:g} s per column)")
PY
}

sampled import "$BIN" import bench "$WORK/signers.csv"
sampled send "$BIN" send --json
stop_sink >/dev/null
read -r _ letters sent < <(status_counts)
peak=$(python3 -c 'import sys; print(int(open(sys.argv[1]).read()) / 1024)' "$WORK/send.peak")
printf 'send peak RSS: %.1f MiB for %d letters (target: at most 64 MiB, flat from 10k to 1M letters)\n' "$peak" "$LETTERS"
if [ "$JSON" = 1 ]; then
  python3 - "$WORK" "$LETTERS" "$sent" <<'PY'
import json, statistics, sys
work, letters, sent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = dict(bench="memory", letters=letters, sent=sent)
for label in ("import", "send"):
    mib = [int(l) / 1024 for l in open(f"{work}/{label}.rss") if l.strip()] or [0]
    out[f"{label}_rss_min_mib"] = round(min(mib), 1)
    out[f"{label}_rss_median_mib"] = round(statistics.median(mib), 1)
    out[f"{label}_rss_max_mib"] = round(max(mib), 1)
    out[f"{label}_rss_peak_mib"] = round(int(open(f"{work}/{label}.peak").read()) / 1024, 1)
print(json.dumps(out))
PY
fi
if [ "$sent" -ne "$LETTERS" ] || [ "$letters" -ne "$LETTERS" ]; then
  echo "FAILED: $sent of $LETTERS letters sent ($letters queued)" >&2
  "$BIN" status >&2 || true
  exit 1
fi
echo "ok: all $sent letters sent"

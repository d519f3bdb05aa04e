#!/usr/bin/env bash
# Pacing benchmark: a real-time run at a fixed global rate (MISSIVE_SENDING__RATE_PER_SECOND,
# burst 1) into Postfix's smtp-sink on 127.0.0.1. Queues RATE x (SECONDS + 1) letters, sends
# them with one `missive send`, then reads every attempt's start time from the queue's
# `attempts` table (python3's sqlite3 module) and prints the letters started in each 10-second
# window from the first one, and the largest deviation from RATE x 10 per window. Target: within
# 1%. Fails (exit 1) unless every letter was sent.
#
# Then, after a stall: the same rate into bench/slow_sink.py, a relay that holds every reply
# for 3 s once it has taken a second's letters, and records when each MAIL arrived. The rate and
# burst are counted when a letter is handed over, so when the stall ends at most `burst` (1)
# letters reach the relay at once and the rest keep their spacing; printed as the letters in
# the first half interval after the stall, the smallest gap between the next ones, and the
# letters in the second after it.
#
# The campaign is a copy of the example with enough targets (each paced at most 1 letter/s,
# `per_hour = 3600`) and a sending window open on every day and hour, so that only the global
# rate holds letters back.
#
# Usage: bench/pacing.sh [--json] [SECONDS] [RATE]   (defaults: 60 s at 50 letters/s)
# Needs: smtp-sink (apt-get install postfix), python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

JSON=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --json) JSON=1 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
DURATION="${ARGS[0]:-60}"
RATE="${ARGS[1]:-50}"
need smtp-sink python3

# Targets: each may take one letter a second, with a fifth to spare.
TARGETS=$(((RATE * 6 + 4) / 5))
[ "$TARGETS" -ge 4 ] || TARGETS=4
LETTERS=$((RATE * (DURATION + 1)))
SIGNERS=$(((LETTERS + TARGETS - 1) / TARGETS))
LETTERS=$((SIGNERS * TARGETS))

build_release
make_campaign "$TARGETS" 1
make_signers "$WORK/signers.csv" "$SIGNERS"
start_sink
use_scratch_settings
export MISSIVE_SENDING__RATE_PER_SECOND="$RATE"
export MISSIVE_SENDING__BURST=1
export MISSIVE_SMTP__CONNECTIONS=4

machine_facts
echo "pacing: $RATE letters/s (burst 1) for $DURATION s: $SIGNERS signers x $TARGETS targets = $LETTERS letters"
"$BIN" import bench "$WORK/signers.csv" >/dev/null 2>"$WORK/import.err" ||
  { cat "$WORK/import.err" >&2; die "the import failed"; }
"$BIN" send --json >"$WORK/send.out" 2>"$WORK/send.err" ||
  { cat "$WORK/send.err" >&2; echo "the send ended with problems" >&2; }
stop_sink >/dev/null
read -r _ letters sent < <(status_counts)

python3 - "$WORK/missive.db" "$DURATION" "$RATE" "$JSON" <<'PY'
import json, sqlite3, sys
db, duration, rate, as_json = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
starts = [r[0] for r in sqlite3.connect(db).execute("SELECT started_at FROM attempts ORDER BY started_at")]
if not starts:
    sys.exit("error: no attempt was recorded")
width = min(10, duration)
t0 = starts[0]
windows = [0] * (duration // width)
for s in starts:
    i = int((s - t0) // (width * 1000))
    if i < len(windows):
        windows[i] += 1
expected = rate * width
devs = [(n - expected) / expected * 100 for n in windows]
worst = max(devs, key=abs)
for i, (n, d) in enumerate(zip(windows, devs)):
    print(f"  {i * width:>4}-{(i + 1) * width:<4} s: {n:>6} letters ({d:+.2f}% of {expected:g})")
print(f"max deviation from {expected:g} per {width}-s window: {worst:+.2f}% (target: within 1%)")
span = (starts[-1] - starts[0]) / 1000
gaps = [b - a for a, b in zip(starts, starts[1:])]
if gaps:
    at = gaps.index(max(gaps))
    print(f"longest gap between two letters: {max(gaps)} ms at {(starts[at] - t0) / 1000:.1f} s "
          f"(one letter every {1000 / rate:g} ms expected)")
print(f"all {len(starts)} attempts in {span:.2f} s = {(len(starts) - 1) / span if span else 0:.2f} letters/s")
if as_json:
    print(json.dumps(dict(bench="pacing", rate=rate, seconds=duration, window_s=width,
                          windows=windows, max_deviation_pct=round(worst, 2),
                          overall_letters_per_s=round((len(starts) - 1) / span, 3) if span else 0)))
PY
if [ "$sent" -ne "$LETTERS" ] || [ "$letters" -ne "$LETTERS" ]; then
  echo "FAILED: $sent of $LETTERS letters sent ($letters queued)" >&2
  "$BIN" status >&2 || true
  exit 1
fi
echo "ok: all $sent letters sent"

# After a stall at the relay: the rate and burst hold at its side.
STALL_S=3
STALL_SIGNERS=$(((RATE * 3 + TARGETS - 1) / TARGETS))
make_signers "$WORK/stall-signers.csv" "$STALL_SIGNERS"
export MISSIVE_DATABASE__URL="sqlite://$WORK/stall.db"
STALL_PORT=$(free_port)
python3 "$ROOT/bench/slow_sink.py" "$STALL_PORT" "$WORK/stall-times" "$RATE" "$STALL_S" \
  >"$WORK/stall-sink.out" 2>&1 &
track $!
wait_port "$STALL_PORT"
export MISSIVE_SMTP__URL="smtp://127.0.0.1:$STALL_PORT"
echo "after a stall: $((STALL_SIGNERS * TARGETS)) letters at $RATE letters/s (burst 1, 4 connections); the relay holds its replies for $STALL_S s after $RATE letters"
"$BIN" import bench "$WORK/stall-signers.csv" >/dev/null 2>"$WORK/import.err" ||
  { cat "$WORK/import.err" >&2; die "the import failed"; }
"$BIN" send --json >"$WORK/stall-send.out" 2>"$WORK/stall-send.err" ||
  { cat "$WORK/stall-send.err" >&2; die "the send after a stall failed"; }
python3 - "$WORK/stall-times" "$RATE" "$STALL_S" "$JSON" <<'PY'
import json, sys
path, rate, stall, as_json = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
times = [int(line) for line in open(path) if line.strip()]
interval = 1000 / rate
gaps = [b - a for a, b in zip(times, times[1:])]
if not gaps or max(gaps) < stall * 1000 * 0.8:
    sys.exit(f"error: no stall of {stall} s found among {len(times)} letters")
resume = gaps.index(max(gaps)) + 1
after = times[resume:]
# Spacing may shrink to half an interval after a sender woke late (src/worker/rate.rs), never
# further: letters closer than that to the first came at once.
burst = sum(1 for t in after if t - after[0] < interval / 2)
nxt = after[: 1 + 8]
min_gap = min(b - a for a, b in zip(nxt, nxt[1:])) if len(nxt) > 1 else 0
second = sum(1 for t in after if t - after[0] < 1000)
print(f"  letters reaching the relay within {interval / 2:g} ms of the stall's end: {burst} (burst 1)")
print(f"  smallest gap between the next {len(nxt) - 1}: {min_gap} ms (one every {interval:g} ms expected)")
print(f"  letters in the second after the stall: {second} (rate {rate:g})")
if as_json:
    print(json.dumps(dict(bench="pacing_after_stall", rate=rate, stall_s=stall,
                          burst_after_stall=burst, min_gap_ms=min_gap, letters_in_next_second=second)))
PY

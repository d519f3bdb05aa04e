#!/usr/bin/env bash
# Dispatch benchmark: N signers x 3 targets imported, rendered, persisted, then sent over SMTP
# to Postfix's smtp-sink on 127.0.0.1, every status recorded. Prints machine facts, letters/s
# for the import and the send phase, CPU seconds and peak RSS (from /usr/bin/time -v), and the
# SMTP sessions the sink saw. Fails (exit 1) unless every letter was sent.
#
# Usage: bench/dispatch.sh [--json] [N] [CONNECTIONS]   (defaults: 10000 signers, 16 connections)
#   --json   also print one line `{"bench":"dispatch",...}` with every figure, last.
# First, as a yardstick, Postfix's smtp-source sends as many 5,000-byte messages (at most 30,000)
# over as many connections into a sink of its own (CALIBRATE=0 skips it).
# Needs: smtp-sink (apt-get install postfix), /usr/bin/time (apt-get install time), python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

JSON=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --json) JSON=1 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
N="${ARGS[0]:-10000}"
CONNS="${ARGS[1]:-16}"
need smtp-sink /usr/bin/time python3

build_release
make_campaign 3
make_signers "$WORK/signers.csv" "$N"
start_sink
use_scratch_settings
export MISSIVE_SMTP__CONNECTIONS="$CONNS"
export MISSIVE_SENDING__CLAIM_BATCH=256

machine_facts
calibrate "$CONNS" "$((N * 3 < 30000 ? N * 3 : 30000))"
echo "dispatch: $N signers x 3 targets = $((N * 3)) letters, $CONNS SMTP connections"

# measure LABEL COMMAND...: runs it under /usr/bin/time -v; sets LABEL_wall, _cpu, _rss_mib.
measure() {
  local label=$1; shift
  /usr/bin/time -v "$@" >"$WORK/$label.out" 2>"$WORK/$label.time" ||
    { cat "$WORK/$label.time" >&2; die "$label failed"; }
  python3 - "$WORK/$label.time" "$label" >"$WORK/$label.vars" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def field(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
wall = 0.0
for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
    wall = wall * 60 + float(part)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss = int(field("Maximum resident set size (kbytes)")) / 1024
label = sys.argv[2]
print(f"{label}_wall={wall:.2f} {label}_cpu={cpu:.2f} {label}_rss_mib={rss:.1f}")
PY
  eval "$(cat "$WORK/$label.vars")"
  local w="${label}_wall" c="${label}_cpu" r="${label}_rss_mib"
  echo "$label: wall ${!w} s, cpu ${!c} s, peak RSS ${!r} MiB"
}

measure import "$BIN" import bench "$WORK/signers.csv"
echo "import phase: $(python3 -c "print(round($((N * 3)) / max($import_wall, 0.01)))") letters/s queued"
measure send "$BIN" send --json
read -r sent attempted send_seconds < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
n = s["sent"] + s["deferred"] + s["failed"] + s["in_doubt"] + s["expired"]
print(s["sent"], n, s["seconds"])' "$WORK/send.out")
send_rate=$(python3 -c "print(round($attempted / max($send_seconds, 0.001)))")
echo "send phase: $sent sent of $attempted attempted in $(printf %.2f "$send_seconds") s = $send_rate letters/s"
sink=$(stop_sink)
echo "smtp-sink: $sink"
read -r _ letters sent_total < <(status_counts)

if [ "$JSON" = 1 ]; then
  python3 -c 'import json, sys; print(json.dumps(dict(bench="dispatch", signers=int(sys.argv[1]),
    letters=int(sys.argv[2]), sent=int(sys.argv[3]), connections=int(sys.argv[4]),
    import_wall_s=float(sys.argv[5]), import_cpu_s=float(sys.argv[6]), import_rss_mib=float(sys.argv[7]),
    send_wall_s=float(sys.argv[8]), send_cpu_s=float(sys.argv[9]), send_rss_mib=float(sys.argv[10]),
    send_letters_per_s=int(sys.argv[11]), smtp_source_msgs_per_s=int(sys.argv[12]))))' \
    "$N" "$letters" "$sent_total" "$CONNS" "$import_wall" "$import_cpu" "$import_rss_mib" \
    "$send_wall" "$send_cpu" "$send_rss_mib" "$send_rate" "$SOURCE_RATE"
fi
if [ "$sent_total" -ne "$((N * 3))" ] || [ "$letters" -ne "$((N * 3))" ]; then
  echo "FAILED: $sent_total of $((N * 3)) letters sent ($letters queued)" >&2
  "$BIN" status >&2 || true
  exit 1
fi
echo "ok: all $sent_total letters sent"

#!/usr/bin/env bash
# Latency benchmark: what a letter's round trips cost when the relay is far away. The relay is
# bench/slow_sink.py, answering every line RTT ms after it arrived (commands sent together, as
# with PIPELINING, share one round trip). LETTERS letters (LETTERS/3 signers x 3 targets) go
# over CONNECTIONS connections with one `missive send`; prints letters/s and the round trips a
# letter cost each connection (CONNECTIONS x seconds / letters / RTT). Fails (exit 1) unless
# every letter was sent.
#
# Usage: bench/latency.sh [--json] [RTT_MS] [CONNECTIONS] [LETTERS]   (defaults: 20 ms, 4, 600)
# Needs: python3.
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
RTT="${ARGS[0]:-20}"
CONNS="${ARGS[1]:-4}"
LETTERS="${ARGS[2]:-600}"
need python3
SIGNERS=$(((LETTERS + 2) / 3))

build_release
make_campaign 3
make_signers "$WORK/signers.csv" "$SIGNERS"
use_scratch_settings
PORT=$(free_port)
python3 "$ROOT/bench/slow_sink.py" "$PORT" "$WORK/times" 0 0 "$RTT" >"$WORK/sink.out" 2>&1 &
track $!
wait_port "$PORT"
export MISSIVE_SMTP__URL="smtp://127.0.0.1:$PORT"
export MISSIVE_SMTP__CONNECTIONS="$CONNS"

machine_facts
echo "latency: $((SIGNERS * 3)) letters over $CONNS connections to a relay $RTT ms of round trip away"
"$BIN" import bench "$WORK/signers.csv" >/dev/null 2>"$WORK/import.err" ||
  { cat "$WORK/import.err" >&2; die "the import failed"; }
"$BIN" send --json >"$WORK/send.out" 2>"$WORK/send.err" ||
  { cat "$WORK/send.err" >&2; die "the send failed"; }
python3 - "$WORK/send.out" "$RTT" "$CONNS" "$JSON" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rtt, conns, as_json = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
n = s["sent"] + s["deferred"] + s["failed"] + s["in_doubt"] + s["expired"]
rate = n / max(s["seconds"], 1e-9)
trips = conns * s["seconds"] / max(n, 1) / (rtt / 1000)
print(f"send: {s['sent']} sent of {n} in {s['seconds']:.2f} s = {rate:.1f} letters/s, "
      f"{trips:.2f} round trips a letter on each connection (connection set-up included)")
if as_json:
    print(json.dumps(dict(bench="latency", rtt_ms=rtt, connections=conns, letters=n,
                          sent=s["sent"], letters_per_s=round(rate, 1),
                          round_trips_per_letter=round(trips, 2))))
PY
read -r _ letters sent < <(status_counts)
if [ "$sent" -ne "$((SIGNERS * 3))" ]; then
  echo "FAILED: $sent of $((SIGNERS * 3)) letters sent" >&2
  exit 1
fi
echo "ok: all $sent letters sent"

#!/usr/bin/env bash
# Dispatch benchmark: N signers x 3 targets imported, rendered, persisted, then sent over SMTP
# to Postfix's smtp-sink on 127.0.0.1, every status recorded. Prints machine facts, letters/s
# for the import and the send phase, CPU seconds and peak RSS (from /usr/bin/time -v), and the
# SMTP sessions the sink saw.
#
# Usage: bench/dispatch.sh [N] [CONNECTIONS]     (defaults: 10000 signers, 16 connections)
# Needs: smtp-sink (apt-get install postfix), /usr/bin/time (apt-get install time).
set -euo pipefail
N="${1:-10000}"
CONNS="${2:-16}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

for tool in smtp-sink /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (hint: apt-get install postfix time python3)" >&2; exit 2; }
done

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$CARGO_TARGET_DIR/release/missive"
WORK="$(mktemp -d)"
trap 'kill $SINK_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A copy of the example campaign with three targets, no campaign-wide cap and no per-target pacing.
mkdir -p "$WORK/letters"
cp -r "$ROOT/letters/mexico-deportations" "$WORK/letters/bench"
python3 - "$WORK/letters/bench/campaign.toml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
parts = text.split("\n[[targets]]")
text = "\n[[targets]]".join(parts[:4])          # keep the first three targets
text = re.sub(r"(?m)^rate_per_second\s*=.*$", "rate_per_second = 1000000.0", text)
text = text.replace("[pacing]\n", "[pacing]\nenabled = false\n", 1)   # measure the pipeline, not office hours
open(path, "w", encoding="utf-8").write(text)
PY
python3 - "$WORK/signers.csv" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
langs = ["en", "fr", "es"]
with open(path, "w", encoding="utf-8") as f:
    f.write("first_name,last_name,email,city,country,language,message\n")
    for i in range(n):
        f.write(f"Signer{i},Núñez,signer{i}@example.net,Montréal,Canada,{langs[i % 3]},I stand with the people seeking safety.\n")
PY

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
smtp-sink -u nobody -c "127.0.0.1:$PORT" 1024 > "$WORK/sink.out" 2>&1 &
SINK_PID=$!
sleep 0.3

export MISSIVE_DATABASE__URL="sqlite://$WORK/missive.db"
export MISSIVE_LETTERS__DIR="$WORK/letters"
export MISSIVE_SMTP__URL="smtp://127.0.0.1:$PORT"
export MISSIVE_SMTP__STARTTLS=off
export MISSIVE_SMTP__CONNECTIONS="$CONNS"
export MISSIVE_SMTP__MAX_MESSAGES_PER_CONNECTION=100000
export MISSIVE_SENDING__RATE_PER_SECOND=1000000
export MISSIVE_SENDING__BURST=100000
export MISSIVE_SENDING__CLAIM_BATCH=1024

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm)"
echo "missive: $("$BIN" --version), $N signers x 3 targets, $CONNS SMTP connections"

measure() { # label, then the command
  local label=$1; shift
  /usr/bin/time -v "$@" > "$WORK/$label.out" 2> "$WORK/$label.time"
  local wall user sys rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$WORK/$label.time")
  user=$(awk -F': ' '/User time/{print $2}' "$WORK/$label.time")
  sys=$(awk -F': ' '/System time/{print $2}' "$WORK/$label.time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/$label.time")
  echo "$label: wall $wall, cpu $(python3 -c "print(round($user+$sys,2))") s, peak RSS $((rss / 1024)) MiB"
}

measure import "$BIN" import bench "$WORK/signers.csv"
measure send "$BIN" send --json
python3 - "$WORK/send.out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = s["sent"] + s["deferred"] + s["failed"] + s["in_doubt"] + s["expired"]
print(f"send phase: {s['sent']} sent of {n} attempted in {s['seconds']:.2f} s = {n / s['seconds']:.0f} letters/s")
PY
kill -TERM $SINK_PID 2>/dev/null || true; wait $SINK_PID 2>/dev/null || true
echo "smtp-sink: $(tr '\r' '\n' < "$WORK/sink.out" | grep -o 'sess=[0-9]* quit=[0-9]* mesg=[0-9]*' | tail -1)"
"$BIN" status | tail -2

#!/usr/bin/env bash
# Intake benchmark: signatures per second through the web form (POST /c/<slug>/sign) and the
# JSON API (POST /api/v1/campaigns/<slug>/signatures), each a new signer on example.net, against
# `missive serve --no-worker` (release build) on a fresh SQLite file, with wrk on 127.0.0.1.
# Every signature is rendered into 3 letters and committed with them in one transaction before
# the response. The figure that counts is durable signatures/s: signatures found in the
# database afterwards (`missive status --json`) divided by the run's duration.
#
# The form run uses one real anti-forgery pair, fetched from the action page like a browser:
# the cookie and the token bound to it (valid for a day, so one pair serves every request).
# The per-address and per-key rate limits are raised for the run through MISSIVE_HTTP__*.
#
# Usage: bench/intake.sh [--json] [SECONDS] [CONNECTIONS]   (defaults: 10 s, 32 connections)
#   THREADS=N      wrk threads (default 2)
#   PROFILE=1      also record the server with `perf record -g` and print its hottest symbols
#   PERF_CALLGRAPH perf's call-graph option instead of -g, e.g. "--call-graph dwarf,32768"
#                  (the release build has no frame pointers; with KEEP_WORK=1 the perf-*.data
#                  files stay for `perf report --children`)
#   MISSIVE_LOG    the server's log filter (default: serve's own, info)
# Needs: wrk (apt-get install wrk), python3; perf (apt-get install linux-perf) for PROFILE=1.
set -euo pipefail
SERVER_LOG_FILTER="${MISSIVE_LOG:-}"
source "$(dirname "$0")/lib.sh"

JSON=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --json) JSON=1 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
SECONDS_PER_RUN="${ARGS[0]:-10}"
CONNS="${ARGS[1]:-32}"
THREADS="${THREADS:-2}"
need wrk python3
if [ -n "${PROFILE:-}" ]; then need perf; fi

build_release
make_campaign 3
use_scratch_settings
PORT=$(free_port)
API_KEY="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
export MISSIVE_HTTP__BIND="127.0.0.1:$PORT"
export MISSIVE_HTTP__BASE_URL="http://127.0.0.1:$PORT"
export MISSIVE_HTTP__SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
export MISSIVE_HTTP__API_KEYS="$API_KEY"
export MISSIVE_HTTP__SIGN_PER_MINUTE=1000000000
export MISSIVE_HTTP__SIGN_BURST=1000000000
export MISSIVE_HTTP__API_PER_SECOND=1000000000
export MISSIVE_HTTP__API_BURST=1000000000

machine_facts
echo "intake: $SECONDS_PER_RUN s per endpoint, wrk $THREADS threads x $CONNS connections, 3 letters per signature, SQLite"

if [ -n "$SERVER_LOG_FILTER" ]; then export MISSIVE_LOG="$SERVER_LOG_FILTER"; else unset MISSIVE_LOG; fi
"$BIN" serve --no-worker 2>"$WORK/server.log" &
SERVER_PID=$!
track "$SERVER_PID"
wait_port "$PORT"
export MISSIVE_LOG=warn

# One anti-forgery pair, as a browser gets it from the action page.
read -r COOKIE TOKEN < <(python3 - "http://127.0.0.1:$PORT/c/bench" <<'PY'
import re, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as r:
    cookie = re.search(r"missive_csrf=([^;]+)", r.headers.get("Set-Cookie", "")).group(1)
    token = re.search(r'name="csrf" value="([^"]+)"', r.read().decode()).group(1)
print(cookie, token)
PY
) || die "could not read the form's cookie and token from /c/bench" "see $WORK/server.log (KEEP_WORK=1 keeps it)"

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

RESULTS=()
run() { # MODE, then the script's arguments after RUN
  local mode=$1; shift
  local before after sigs letters perf_pid=""
  read -r before letters_before _ < <(status_counts)
  local cpu_before cpu_after
  cpu_before=$(cpu_ticks "$SERVER_PID")
  if [ -n "${PROFILE:-}" ]; then
    perf record -F 499 ${PERF_CALLGRAPH:--g} -o "$WORK/perf-$mode.data" -p "$SERVER_PID" 2>"$WORK/perf-$mode.log" &
    perf_pid=$!
    track "$perf_pid"
  fi
  # In the background, so that a signal to this script stops the run at once (see lib.sh).
  wrk -t "$THREADS" -c "$CONNS" -d "${SECONDS_PER_RUN}s" --latency -s "$ROOT/bench/intake.lua" \
    "http://127.0.0.1:$PORT$1" -- "$mode" "$mode-$$" "${@:2}" >"$WORK/wrk-$mode.out" 2>&1 &
  local wrk_pid=$!
  track "$wrk_pid"
  wait "$wrk_pid" || { cat "$WORK/wrk-$mode.out" >&2; die "wrk failed on the $mode run"; }
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
  cpu_after=$(cpu_ticks "$SERVER_PID")
  read -r after letters_after _ < <(status_counts)
  sigs=$((after - before))
  letters=$((letters_after - letters_before))
  local lines
  mapfile -t lines < <(python3 - "$mode" "$sigs" "$letters" "$(grep '^wrk-result ' "$WORK/wrk-$mode.out" | cut -d' ' -f2-)" \
    "$(( (cpu_after - cpu_before) * 1000 / $(getconf CLK_TCK) ))" <<'PY'
import json, sys
mode, sigs, letters, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
server_cpu_s = int(sys.argv[5]) / 1000
secs = w["duration_us"] / 1e6
r = dict(bench="intake", endpoint=mode, seconds=round(secs, 2), requests=w["requests"],
         failed_requests=w["non_2xx_3xx"] + w["socket_errors"], signatures=sigs, letters=letters,
         durable_signatures_per_s=round(sigs / secs), requests_per_s=round(w["requests"] / secs),
         latency_p50_ms=w["latency_p50_ms"], latency_p99_ms=w["latency_p99_ms"],
         latency_max_ms=w["latency_max_ms"], server_cpu_s=server_cpu_s,
         server_cpu_ms_per_signature=round(server_cpu_s * 1000 / max(sigs, 1), 3))
print(json.dumps(r))
print(f"{mode:>4}: {r['durable_signatures_per_s']:>6} durable signatures/s  ({sigs} signatures, "
      f"{letters} letters committed in {r['seconds']} s; {r['requests']} requests, "
      f"{r['failed_requests']} failed; latency p50 {r['latency_p50_ms']} ms, "
      f"p99 {r['latency_p99_ms']} ms; server CPU {server_cpu_s:.1f} s = "
      f"{r['server_cpu_ms_per_signature']} ms per signature)")
PY
)
  RESULTS+=("${lines[0]}")
  echo "${lines[1]}"
  if [ -n "$perf_pid" ]; then
    echo "  hottest symbols in the server during the $mode run (perf, self time):"
    { perf report -i "$WORK/perf-$mode.data" --no-children --stdio --sort dso,symbol -g none \
        2>/dev/null || true; } | grep -E '^ +[0-9.]+%' | sed 's/ *$//' | cut -c1-150 |
      awk 'NR <= 25 { print "  " $0 }'
  fi
  if [ "$sigs" -le 0 ]; then
    echo "FAILED: no signature was recorded through the $mode endpoint" >&2
    tail -20 "$WORK/server.log" >&2
    exit 1
  fi
}

run form "/c/bench/sign" "$COOKIE" "$TOKEN"
run api "/api/v1/campaigns/bench/signatures" "$API_KEY"
echo "target: at least 5000 durable signatures/s with SQLite"
if [ "$JSON" = 1 ]; then printf '%s\n' "${RESULTS[@]}"; fi

# Shared by the benchmark scripts in bench/ (sourced, not run): tool checks with install hints,
# machine facts, the release build, a scratch folder cleaned up on exit, Postfix's smtp-sink on
# 127.0.0.1, a benchmark copy of the example campaign and a generated signers CSV.
#
# Everything talks only to 127.0.0.1 and uses example.net / example.org addresses.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# MISSIVE_BIN=path runs that binary instead of building one: to compare two builds in turns
# (copy each build's target/release/missive aside, then alternate runs).
BIN="${MISSIVE_BIN:-$CARGO_TARGET_DIR/release/missive}"

die() { echo "error: $1" >&2; [ $# -lt 2 ] || echo "hint: $2" >&2; exit 2; }

# need TOOL...: stops with an install hint for the first tool that is missing.
need() {
  local tool hint
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case "$tool" in
      smtp-sink | smtp-source) hint="apt-get install postfix ($tool comes with it; Postfix itself need not run)" ;;
      wrk) hint="apt-get install wrk" ;;
      /usr/bin/time) hint="apt-get install time" ;;
      python3) hint="apt-get install python3" ;;
      pgrep) hint="apt-get install procps" ;;
      cargo) hint="install Rust from https://rustup.rs" ;;
      *) hint="install $tool" ;;
    esac
    die "$tool is missing" "$hint"
  done
}

# The facts every result is read against, one "machine:" line and one "build:" line.
machine_facts() {
  local mem commit
  mem=$(awk '/MemTotal/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit+dirty"
  fi
  echo "machine: $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $mem, $(uname -sr)"
  echo "build: $(rustc --version 2>/dev/null || echo 'rustc unknown'), commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# The release binary, built if needed (quietly: cargo prints only errors).
build_release() {
  if [ -n "${MISSIVE_BIN:-}" ]; then
    [ -x "$BIN" ] || die "MISSIVE_BIN=$BIN is not an executable"
    return 0
  fi
  need cargo
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin missive
  [ -x "$BIN" ] || die "no binary at $BIN after the build"
}

# A scratch folder in $WORK; background processes registered with `track PID` are stopped and
# the folder removed on exit, however the script ends.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/missive-bench.XXXXXX")"
BG_PIDS=()
track() { BG_PIDS+=("$1"); }
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1 (at most 10 s).
wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$1 after 10 s"
}

# Starts smtp-sink on a free port of 127.0.0.1; sets SINK_PORT and SINK_PID. Extra arguments
# go to smtp-sink (e.g. -d for a dump). It accepts every message and keeps nothing.
start_sink() {
  need smtp-sink
  SINK_PORT=$(free_port)
  smtp-sink -u nobody "$@" -c "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>&1 &
  SINK_PID=$!
  track "$SINK_PID"
  wait_port "$SINK_PORT"
}

# calibrate CONNECTIONS MESSAGES: what Postfix's own client reaches on this machine, as a
# yardstick beside Missive's figure: `smtp-source` (no database, no rendering, no pipelining)
# sends MESSAGES messages of about 5,000 bytes (the size of the benchmark's letters) over
# CONNECTIONS connections into a smtp-sink of its own. Prints one "calibration:" line and sets
# SOURCE_RATE (messages/s). CALIBRATE=0 skips it (SOURCE_RATE=0).
calibrate() {
  SOURCE_RATE=0
  [ "${CALIBRATE:-1}" = 0 ] && return 0
  need smtp-source
  local port pid start end
  port=$(free_port)
  smtp-sink -u nobody -c "127.0.0.1:$port" 1024 >/dev/null 2>&1 &
  pid=$!
  track "$pid"
  wait_port "$port"
  start=$(date +%s.%N)
  smtp-source -d -s "$1" -l 5000 -m "$2" "127.0.0.1:$port" >/dev/null 2>&1 ||
    die "smtp-source failed" "apt-get install postfix"
  end=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  SOURCE_RATE=$(python3 -c "print(round($2 / max($end - $start, 0.001)))")
  echo "calibration: smtp-source -d -s $1 -l 5000 -m $2 into smtp-sink: $SOURCE_RATE messages/s"
}

# The sink's session and message counters ("sess=4 quit=4 mesg=600"), after stopping it.
stop_sink() {
  kill -TERM "$SINK_PID" 2>/dev/null || true
  wait "$SINK_PID" 2>/dev/null || true
  tr '\r' '\n' <"$WORK/sink.out" | grep -o 'sess=[0-9]* quit=[0-9]* mesg=[0-9]*' | tail -1 || true
}

# make_campaign TARGETS [PACED]: letters/bench in $WORK, a copy of the example campaign with
# TARGETS targets (more than the example's four are made up on example.org) and no
# campaign-wide rate cap. PACED=1 also opens the pacing window on every day and hour with the
# largest per-target budget, so only the global rate (sending.rate_per_second) holds letters.
make_campaign() {
  need python3
  mkdir -p "$WORK/letters"
  rm -rf "$WORK/letters/bench"
  cp -r "$ROOT/letters/mexico-deportations" "$WORK/letters/bench"
  python3 - "$WORK/letters/bench/campaign.toml" "$1" "${2:-0}" <<'PY'
import re, sys
path, count, paced = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
text = open(path, encoding="utf-8").read()
head, *targets = text.split("\n[[targets]]")
out = []
for i in range(count):
    t = targets[i % len(targets)]
    if i >= len(targets):
        t = re.sub(r'(?m)^id = "[^"]*"', f'id = "target-{i:03d}"', t)
        t = re.sub(r'(?m)^email = "[^"]*"', f'email = "target-{i:03d}@example.org"', t)
    out.append(t)
head = re.sub(r"(?m)^rate_per_second\s*=.*$", "rate_per_second = 1000000.0", head)
if not paced:
    # Measure the pipeline, not office hours: no per-target pacing.
    head = head.replace("[pacing]\n", "[pacing]\nenabled = false\n", 1)
if paced:
    head = re.sub(r"(?m)^per_hour\s*=.*$", "per_hour = 3600", head)
    head = re.sub(r"(?m)^min_spacing_seconds\s*=.*$", "min_spacing_seconds = 1", head)
    head = re.sub(r"(?m)^days\s*=.*$", 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]', head)
    head = re.sub(r'(?m)^hours\s*=.*$', 'hours = "00:00-24:00"', head)
    head = re.sub(r"(?ms)^holidays\s*=\s*\[.*?\]", "holidays = []", head)
open(path, "w", encoding="utf-8").write(head + "".join("\n[[targets]]" + t for t in out))
PY
}

# make_signers FILE N: a CSV of N distinct signers on example.net, in three languages.
make_signers() {
  need python3
  python3 - "$1" "$2" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
langs = ["en", "fr", "es"]
with open(path, "w", encoding="utf-8") as f:
    f.write("first_name,last_name,email,city,country,language,message\n")
    for i in range(n):
        f.write(f"Signer{i},Núñez,signer{i}@example.net,Montréal,Canada,{langs[i % 3]},"
                "I stand with the people seeking safety.\n")
PY
}

# Settings for every run: the scratch database and campaigns, smtp-sink without TLS, and a
# global rate high enough not to matter unless a script lowers it.
use_scratch_settings() {
  export MISSIVE_DATABASE__URL="sqlite://$WORK/missive.db"
  export MISSIVE_LETTERS__DIR="$WORK/letters"
  export MISSIVE_OUTBOX__DIR="$WORK/outbox"
  export MISSIVE_SMTP__STARTTLS=off
  export MISSIVE_SMTP__MAX_MESSAGES_PER_CONNECTION=100000
  export MISSIVE_SENDING__RATE_PER_SECOND=1000000
  export MISSIVE_SENDING__BURST=100000
  export MISSIVE_PACING__PER_DOMAIN_PER_HOUR=100000000
  export MISSIVE_LOG="${MISSIVE_LOG:-warn}"
  if [ -n "${SINK_PORT:-}" ]; then export MISSIVE_SMTP__URL="smtp://127.0.0.1:$SINK_PORT"; fi
}

# status_counts: "SIGNATURES LETTERS SENT" from `missive status --json`.
status_counts() {
  "$BIN" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
by = s.get("by_state", {})
print(s["signatures"], sum(by.values()), by.get("sent", 0))'
}

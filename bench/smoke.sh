#!/usr/bin/env bash
# CI smoke run of every benchmark at a tiny size, so none of them rots: dispatch (200 signers),
# intake (3 s per endpoint), memory (3,000 letters), pacing (5 s at 20 letters/s, and a 3 s
# stall), latency (30 letters 5 ms away) and one pass
# of each criterion benchmark (`--test`). Nothing is timed or compared: a step fails only if it
# did not run or did not send every letter. About a minute after the release builds.
#
# Usage: bench/smoke.sh
# Needs: smtp-sink (apt-get install postfix), wrk (apt-get install wrk), /usr/bin/time
# (apt-get install time), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "::: bench smoke: $*"; }

step "dispatch.sh 200 signers"
bench/dispatch.sh --json 200 4
step "intake.sh 3 s"
bench/intake.sh --json 3 8
step "memory.sh 3000 letters"
bench/memory.sh --json 3000 4
step "pacing.sh 5 s at 20 letters/s"
bench/pacing.sh --json 5 20
step "latency.sh 5 ms, 2 connections, 30 letters"
bench/latency.sh --json 5 2 30
step "cargo bench --bench letters -- --test"
cargo bench --locked --bench letters -- --test
step "all benchmarks ran"

#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and the decryptor (fuzz/, cargo-fuzz + libFuzzer, nightly toolchain).
# Every target starts from the committed seeds in fuzz/seeds/<target> and keeps what it finds in
# fuzz/corpus/<target> (not committed). Crashes land in fuzz/artifacts/<target> and fail the run.
#
#   ./scripts/fuzz.sh                    every target for 10 minutes (override: FUZZ_SECONDS=3600)
#   ./scripts/fuzz.sh --smoke            every target for 20,000 runs or 40 s, whichever ends first, built
#                                        unoptimised (what the test command does: a cold optimised build of the
#                                        targets took 10-11 of a CI run's 25-28 minutes on two cores, an
#                                        unoptimised one 3; the checks are the same, debug assertions and
#                                        overflow checks included; only the execution rate is lower)
#   ./scripts/fuzz.sh --runs 10000000    every target for that many executions (the figures in docs/SECURITY.md)
#   ./scripts/fuzz.sh decrypt config     only these targets
#   FUZZ_SANITIZER=none ./scripts/fuzz.sh …   without AddressSanitizer (2–3× the executions per second; the
#                                        crate forbids unsafe code, ASAN only watches the C dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(chunked_decoder decrypt sigv4_verify xml_listing config bucket_policy)
LIMIT="-max_total_time=${FUZZ_SECONDS:-600}"
BUILD=-O
if [ "${1:-}" = "--smoke" ]; then
  LIMIT="-runs=20000 -max_total_time=40"
  BUILD=--dev
  shift
elif [ "${1:-}" = "--runs" ]; then
  LIMIT="-runs=$2"
  shift 2
fi
if [ $# -gt 0 ]; then TARGETS=("$@"); fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain on this machine (cargo-fuzz needs one); nothing fuzzed" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz@0.13.2 >&2
fi
cd fuzz
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  printf '==> fuzz %s (%s)\n' "$t" "$LIMIT"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$BUILD" -s "${FUZZ_SANITIZER:-address}" "$t" "corpus/$t" "seeds/$t" -- $LIMIT >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t failed (a crash input, if any, is in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E '^Done|^#[0-9]+ *DONE' "$log" || tail -3 "$log"
  rm -f "$log"
done

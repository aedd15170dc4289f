#!/usr/bin/env bash
# Flame graphs of the proxy under one workload of the side-by-side bench (docs/BENCHMARKS.md, "Where the CPU of a
# PUT goes"): runs benches/gateway for one round with `--perf`, which records each selected proxy with
# `perf record --call-graph dwarf` while the workload runs, then folds every recording with inferno into an SVG.
#
#   ./scripts/profile.sh put-big enc               → target/profile/put-big-enc.svg, .classes.md (shares of the
#                                                    CPU by class of work: scripts/profile_classes.py), .folded
#   ./scripts/profile.sh put4k-c16,get4k-c16 enc,nginx1
#
# Needs perf (Debian's linux-perf) and inferno (`cargo install inferno`, done here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORKLOADS=${1:-put-big}
SYSTEMS=${2:-enc}
OUT=$ROOT/target/profile
mkdir -p "$OUT"
if ! command -v perf >/dev/null; then
  apt-get update -q >&2 && apt-get install -y -q --no-install-recommends linux-perf >&2
fi
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install --locked inferno@0.12.8 >&2
fi
rm -f "$OUT"/*.perf.data
./scripts/bench.sh --rounds 1 --upstreams seaweedfs --workloads "$WORKLOADS" --systems "$SYSTEMS" --perf "$OUT" \
  > "$OUT/bench.md"
for data in "$OUT"/*.perf.data; do
  name=$(basename "$data" .perf.data)
  perf script -i "$data" 2>/dev/null | inferno-collapse-perf > "$OUT/$name.folded"
  inferno-flamegraph --title "s3crypt: $name ($(git rev-parse --short HEAD))" --width 1600 \
    < "$OUT/$name.folded" > "$OUT/$name.svg"
  python3 scripts/profile_classes.py "$OUT/$name.folded" > "$OUT/$name.classes.md"
  echo "==> $OUT/$name.svg, $OUT/$name.classes.md" >&2
done

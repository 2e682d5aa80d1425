#!/usr/bin/env bash
# The test suite: starts the local stack (installing it the first time), then runs every unit
# and integration test of the workspace against it. Extra arguments go to the test runner
# (e.g. `scripts/test.sh -E 'test(dims)'` with nextest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(now)
# Debian packages the tests use: docker-compose validates docker-compose.yaml (no Docker engine
# needed); chromium and chromedriver load the counter's dashboard in a real headless browser.
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "missing Debian packages: install them (sudo apt-get install ${missing[*]}) and rerun"
  say "installing ${missing[*]} (Debian) for the tests ..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null \
    || die "apt-get could not install ${missing[*]}"
fi
# --txn: the transactional Tansu too (the exactly-once tests; they reach it through
# TXN_KAFKA_BOOTSTRAP_SERVERS, exported with the rest of config/local.env by lib.sh).
"$ROOT/scripts/stack.sh" up --txn
# Each run makes ~45 topics with unique names; drop the previous runs' so the brokers stay small.
"$ROOT/scripts/stack.sh" clean-test-topics
# Tests that start a broker of their own (restart durability) use the same build.
export NISSHI_BIN=$NISSHI
export TANSU_BIN=$TANSU
cd "$ROOT"
cargo fmt --all --check || die "the code is not formatted: run 'cargo fmt --all'"
say "building and running the tests (cargo target dir: $CARGO_TARGET_DIR) ..."
# The end-to-end tests run the service binaries as processes.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast --failure-output final "$@"
else
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi
say "test suite finished in $(($(now) - t0)) s"

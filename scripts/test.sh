#!/usr/bin/env bash
# The test suite: starts the local stack (installing it the first time), then runs every unit
# and integration test of the workspace against it. Extra arguments go to the test runner
# (e.g. `scripts/test.sh -E 'test(dims)'` with nextest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(now)
# Debian packages the tests use: docker-compose validates docker-compose.yaml (no Docker engine
# needed); chromium and chromedriver load the counter's dashboard in a real headless browser;
# prometheus brings promtool.
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
# promtool (Debian's prometheus) checks and unit-tests the alert rules of deploy/kubernetes.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
  apt_cmd="apt-get update && apt-get install -y ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "the tests need Debian packages that are missing: run 'sudo sh -c \"$apt_cmd\"' and rerun"
  apt_log=$CACHE_DIR/apt.log
  mkdir -p "$CACHE_DIR"
  say "installing Debian packages ${missing[*]} as root for the tests ($apt_cmd: about 1-3 min, once; log: $apt_log) ..."
  t_apt=$(now)
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } >"$apt_log" 2>&1; then
    tail -n 5 "$apt_log" >&2
    die "apt-get could not install ${missing[*]} (last lines above, log: $apt_log)"
  fi
  say "  installed in $(($(now) - t_apt)) s"
fi
# --txn: the transactional Tansu too (the exactly-once tests; they reach it through
# TXN_KAFKA_BOOTSTRAP_SERVERS, exported with the rest of config/local.env by lib.sh).
"$ROOT/scripts/stack.sh" up --txn
# Each run makes ~45 topics with unique names; drop the previous runs' so the brokers stay small.
"$ROOT/scripts/stack.sh" clean-test-topics
# Tests that start a broker of their own (restart durability, exactly-once faults) use the same
# builds, looked up now that `stack.sh up` has installed them.
eval "$("$ROOT/scripts/stack.sh" paths)"
[[ -n ${NISSHI_BIN-} && -n ${TANSU_BIN-} ]] || die "scripts/stack.sh up left Nisshi or Tansu uninstalled"
export NISSHI_BIN TANSU_BIN
# The offline checkers of deploy/kubernetes/ (installed once into the cache).
DEPLOY_TOOLS=$("$ROOT/scripts/deploy-tools.sh")
export DEPLOY_TOOLS
cd "$ROOT"
cargo fmt --all --check || die "the code is not formatted: run 'cargo fmt --all'"
"$ROOT/scripts/deny.sh"
if [[ ! -d $CARGO_TARGET_DIR/debug/deps ]]; then
  say "first build of the project (debug, for the tests): about 15 min on 2 cores, once; cargo shows its progress below"
fi
say "building and running the tests (cargo target dir: $CARGO_TARGET_DIR) ..."
# The end-to-end tests run the service binaries as processes.
cargo build --workspace --bins
# nextest, not `cargo test`: its profile (.config/nextest.toml) gives every test a time limit, so
# a hang fails in minutes with its name. Installed (cached) when the machine lacks it.
NEXTEST_ROOT=$CACHE_DIR/nextest
export PATH=$NEXTEST_ROOT/bin:$PATH
if ! cargo nextest --version >/dev/null 2>&1; then
  log=$CACHE_DIR/nextest-install.log
  say "installing cargo-nextest into $NEXTEST_ROOT (about 5 min on 2 cores, once; log: $log) ..."
  cargo install --locked --root "$NEXTEST_ROOT" cargo-nextest >"$log" 2>&1 \
    || { tail -n 5 "$log" >&2; die "cargo could not install cargo-nextest (last lines above, log: $log)"; }
fi
# The stack is up: a test that finds a part of it missing fails here instead of skipping
# (pipeline-testkit's needs_stack!), so the suite never passes by skipping.
export PIPELINE_TESTS_REQUIRE_STACK=1
cargo nextest run --workspace --all-targets --no-fail-fast --failure-output final "$@"
# The API docs build without a warning and every intra-doc link resolves: a renamed item cannot
# leave a stale link behind (the first run checks the dependencies' metadata once, a few minutes).
say "checking the docs (cargo doc, broken links denied) ..."
RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" cargo doc --workspace --no-deps --quiet \
  || die "cargo doc found a broken link or a warning (above)"
say "test suite finished in $(($(now) - t0)) s"

# Source it (`source scripts/env.sh`) to run the services by hand against the local stack: exports
# config/local.env (endpoints, local credentials, topic names) and puts on PATH the project's
# release binaries (generator, enricher, detector, counter, ops; built by scripts/run.sh or
# `cargo build --release`) and the stack's Nisshi and SeaweedFS. Prints what it found.
# shellcheck shell=bash
_telemetry_env() {
  local lib
  lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
  # lib.sh exports config/local.env and CARGO_TARGET_DIR (its helpers stay defined).
  # shellcheck source=lib.sh
  source "$lib"
  local bin=$CARGO_TARGET_DIR/release
  [[ -x $bin/enricher ]] || say "note: no release build in $bin yet: run scripts/run.sh or 'cargo build --release' first"
  export PATH="$bin:$NISSHI_ROOT/bin:$VENV/bin:$PATH"
  say "PATH now has $bin (services, ops), $NISSHI_ROOT/bin (nisshi) and $VENV/bin (weed); config/local.env exported"
}
_telemetry_env
unset -f _telemetry_env

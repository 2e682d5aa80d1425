#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, duplicate versions, sources, and
# advisories against a snapshot of the RustSec database — offline, never fetched. The snapshot
# is $ADVISORY_DB, else ../shared/advisory-db beside the clone; it is copied (as the git
# repository cargo-deny wants) into the cache, and the cached copy serves later runs. Without
# any, the advisories are skipped with a line saying so; the other checks still run. cargo-deny
# and the copy live in $TELEMETRY_TOOLS_DIR (default: the cache), which CI points at the shared
# cache so that its scratch cache does not build cargo-deny again on every run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

TOOLS_DIR=${TELEMETRY_TOOLS_DIR:-$CACHE_DIR}
DENY_ROOT=$TOOLS_DIR/cargo-deny
export PATH=$DENY_ROOT/bin:$PATH
if ! cargo deny --version >/dev/null 2>&1; then
  log=$TOOLS_DIR/cargo-deny-install.log
  mkdir -p "$TOOLS_DIR"
  say "installing cargo-deny into $DENY_ROOT (about 5 min on 2 cores, once; log: $log) ..."
  cargo install --locked --root "$DENY_ROOT" cargo-deny >"$log" 2>&1 \
    || { tail -n 5 "$log" >&2; die "cargo could not install cargo-deny (last lines above, log: $log)"; }
fi

# cargo-deny looks for its default database in <db-path>/advisory-db-<hash of its URL>.
export CARGO_DENY_DB_PATH=$TOOLS_DIR/advisory-dbs
db=$CARGO_DENY_DB_PATH/advisory-db-3157b0e258782691
source_db=${ADVISORY_DB:-$ROOT/../shared/advisory-db}
if [[ -f $source_db/SNAPSHOT ]] && ! cmp -s "$source_db/SNAPSHOT" "$db/SNAPSHOT"; then
  say "copying the RustSec snapshot $source_db into $db ..."
  rm -rf "$db" && mkdir -p "$CARGO_DENY_DB_PATH" && cp -r "$source_db" "$db"
  (cd "$db" && git init -q && git add -A && git -c user.name=snapshot -c user.email=snapshot@localhost commit -qm snapshot)
fi
checks=(licenses bans sources)
if [[ -f $db/SNAPSHOT ]]; then
  checks+=(advisories)
  say "advisories: RustSec snapshot of $(grep -o '([0-9-]*)' "$db/SNAPSHOT" | head -n 1 | tr -d '()') ($db)"
else
  say "advisories: skipped (no RustSec snapshot: set ADVISORY_DB to one, or put it at ../shared/advisory-db)"
fi
# Our own metadata, for the platforms we build: cargo-deny's would download every other
# platform's crates, which an offline machine does not have.
metadata=$(mktemp "${TMPDIR:-/tmp}/deny-metadata.XXXXXX.json")
trap 'rm -f "$metadata"' EXIT
cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu >"$metadata"
# Errors only (the duplicate versions are warnings we live with; `cargo deny check` shows them),
# and without its line about fetching crate sources: offline it cannot, and needs none.
cargo deny --offline --log-level error --metadata-path "$metadata" check --show-stats "${checks[@]}" \
  2> >(grep -v -e 'failed to fetch crates' -e '^Caused by:' -e 'attempting to make an HTTP request' -e '^$' >&2)

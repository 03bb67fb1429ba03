#!/usr/bin/env bash
# The build's own checks (`make lint`; CI runs it after the tests):
#   - formatting of the workspace and of fuzz/;
#   - clippy on every target, warnings denied, with the bans in clippy.toml;
#   - rustdoc of every item (the docs are for whoever carries the code on),
#     warnings denied: a broken intra-doc link fails the build;
#   - cargo machete: no dependency a crate does not use;
#   - cargo deny (deny.toml): licenses, banned and duplicate crates, sources.
#     Its advisories check needs the RustSec database from GitHub, which
#     this machine cannot reach: it is skipped, and says so.
# cargo-machete and cargo-deny are installed from crates.io when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MACHETE_VERSION=0.9.2
DENY_VERSION=0.20.2

install() { # crate version binary
  if ! "$3" --version 2>/dev/null | grep -q "$2"; then
    echo "[lint] installing $1 $2 from crates.io"
    cargo install --quiet --locked "$1" --version "$2"
  fi
}
install cargo-machete "$MACHETE_VERSION" cargo-machete
install cargo-deny "$DENY_VERSION" cargo-deny

echo "[lint] fmt"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "[lint] clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[lint] rustdoc"
RUSTDOCFLAGS="-D warnings -A rustdoc::private-intra-doc-links" cargo doc --workspace --no-deps --document-private-items --quiet
echo "[lint] unused dependencies (cargo machete)"
cargo machete
echo "[lint] licenses, bans, duplicates, sources (cargo deny; advisories skipped: no access to the RustSec database)"
cargo deny --log-level error check licenses bans sources
echo "[lint] every check passed"

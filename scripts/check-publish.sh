#!/usr/bin/env bash
# Checks that the three published crates, bincrew, bincrew-build and cargo-bincrew, would publish:
# cargo packages each one from the files its `include` lists, unpacks it and builds it alone as
# crates.io users would, then stops before uploading. The workspace crates that cargo-bincrew
# depends on come from the packages made in the same run (cargo's multi-package publishing), so
# nothing needs to be on crates.io first. --locked keeps the dependencies those of Cargo.lock.
#
# Where the registry cannot be reached, `cargo package --offline --locked -p bincrew -p
# bincrew-build -p cargo-bincrew` makes and builds the same packages without its checks.
#
# Usage: scripts/check-publish.sh [more options for cargo publish, such as --allow-dirty]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo publish --dry-run --locked -p bincrew -p bincrew-build -p cargo-bincrew "$@"

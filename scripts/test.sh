#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests need when they
# are missing, then runs formatting, lints, every test, the docs build and the quickstart.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(pkg-config libtss2-dev softhsm2 swtpm swtpm-tools tpm2-tools opensc openssl
  gcc libssl-dev libengine-pkcs11-openssl)

step() { printf '\n==> %s\n' "$*"; }

install_missing() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages present: ${PACKAGES[*]}"
    return
  fi
  step "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if ! command -v apt-get >/dev/null; then
    echo "error: apt-get not found; install these packages by hand: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step "system packages"
install_missing
for tool in openssl softhsm2-util swtpm tpm2_createek pkcs11-tool pkg-config cc; do
  command -v "$tool" >/dev/null || { echo "error: $tool still missing after install" >&2; exit 1; }
done

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace --all-targets (unit, integration, conformance, examples, bench smoke)"
cargo test --workspace --all-targets --locked

step "official Azure IoT Node.js SDK against the dps-emulator"
scripts/node-sdk-test.sh

step "cargo test --workspace --doc"
cargo test --workspace --doc --locked

step "cargo doc --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "fuzz targets build (cargo check, outside the workspace)"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked

step "cargo run --example quickstart"
cargo run --example quickstart --locked

printf '\nall checks passed\n'

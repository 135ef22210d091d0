#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests need (and
# cargo-deny) when they are missing, then runs formatting, lints, the MSRV and supply-chain
# checks, every test, the docs build, packaging and the quickstart.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
PACKAGES=(pkg-config libtss2-dev softhsm2 swtpm swtpm-tools tpm2-tools opensc openssl tinyproxy
  gcc libssl-dev libengine-pkcs11-openssl
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools opencryptoki p11-kit p11-kit-modules
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon python3)

. scripts/lib/common.sh

step "system packages"
apt_install "${PACKAGES[@]}"
for tool in openssl softhsm2-util swtpm tpm2_createek pkcs11-tool pkg-config cc tinyproxy \
  tpm2_ptool tpm2-abrmd dbus-daemon pkcsslotd p11-kit unshare python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool still missing after install" >&2; exit 1; }
done

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental state only pays off when the same tree is rebuilt; a CI run builds once.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi
check_disk_space "${CARGO_TARGET_DIR:-target}" 6

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "MSRV: no locked dependency needs a newer Rust than our rust-version (clippy checks our code)"
cargo metadata --format-version 1 --locked | python3 scripts/lib/msrv-deps.py

step "cargo deny check licenses bans sources (deny.toml)"
# Installed from crates.io when missing, as the system packages are (a debug build: quicker to
# compile, and fast enough for a graph this size).
if ! cargo deny --version >/dev/null 2>&1; then
  step "installing cargo-deny $CARGO_DENY_VERSION from crates.io"
  cargo install --locked --debug --quiet cargo-deny --version "$CARGO_DENY_VERSION" \
    || fail "cannot install cargo-deny (cargo install --locked cargo-deny)"
fi
cargo deny check licenses bans sources

step "cargo test --workspace --all-targets (unit, integration, conformance, examples, bench smoke)"
cargo test --workspace --all-targets --locked

step "official Azure IoT Node.js SDK against the dps-emulator"
scripts/node-sdk-test.sh

step "one-transport builds: the device example with HTTPS only and with MQTT only, hsm-x509 on ring"
# Each selects its own features (only the named package is built), as a device build does.
cargo test --locked -p hsm-device-example
cargo test --locked -p hsm-device-example --no-default-features --features mqtt
cargo test --locked -p hsm-x509 --no-default-features --features ring
cargo check --locked -p provisioning --no-default-features --features websocket

step "cargo test --workspace --doc"
cargo test --workspace --doc --locked

step "cargo doc --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "fuzz targets: built, and each run for a few seconds (./scripts/fuzz.sh 600 for real runs)"
# A debug build without a sanitizer, quick to build: enough to catch a target that dies on its
# own (a panic in the target or in the code it fuzzes).
FUZZ_QUICK=1 scripts/fuzz.sh 5

step "cargo package --workspace: every publishable crate packaged, unpacked and built on its own"
# Our unpublished crates come from a local overlay of the workspace's own packages; the rest from
# crates.io, as for a user.
# (--allow-dirty: packages what is in the working tree, committed or not.)
# Cargo extracts the overlay's crates under $CARGO_HOME/registry/src/-<hash>/ and reuses an
# extraction of the same name and version even when the crate has changed since (our version
# stays 0.1.0 between releases): remove those local-registry extractions first (crates.io's
# folder is index.crates.io-*, untouched).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*
cargo package --workspace --exclude hsm-examples --exclude hsm-examples-tpm --exclude hsm-device-example --locked --quiet \
  --allow-dirty

step "cargo run --example quickstart"
cargo run --example quickstart --locked

step "the quickstart on a bare machine: no libtss2 or any other pkg-config library, own target dir"
# pkg-config finds nothing in an empty folder, as on a machine with only a Rust toolchain: a
# dependency on libtss2 (or OpenSSL, ...) sneaking into the quickstart's build fails here. Its
# own target directory, so nothing built with the system libraries is reused. The CLI without
# its default `tpm` feature builds the same way.
bare_pc=$(mktemp -d)
bare_target=${CARGO_TARGET_DIR:-target}/bare-machine
PKG_CONFIG_LIBDIR=$bare_pc PKG_CONFIG_PATH= CARGO_TARGET_DIR=$bare_target \
  cargo run --example quickstart --locked
PKG_CONFIG_LIBDIR=$bare_pc PKG_CONFIG_PATH= CARGO_TARGET_DIR=$bare_target \
  cargo build -p hsm-provision --no-default-features --locked
tpm_out=$("$bare_target/debug/hsm-provision" tpm info 2>&1) && fail "hsm-provision without the tpm feature ran 'tpm info'"
grep -q "built without TPM support" <<<"$tpm_out" || fail "unexpected answer from hsm-provision without TPM support: $tpm_out"
rmdir "$bare_pc"

printf '\nall checks passed\n'

#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the system packages the tests need when they
# are missing, then runs formatting, lints, every test, the docs build and the quickstart.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(pkg-config libtss2-dev softhsm2 swtpm swtpm-tools tpm2-tools opensc openssl tinyproxy
  gcc libssl-dev libengine-pkcs11-openssl
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools opencryptoki p11-kit p11-kit-modules
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon)

. scripts/lib/common.sh

step "system packages"
apt_install "${PACKAGES[@]}"
for tool in openssl softhsm2-util swtpm tpm2_createek pkcs11-tool pkg-config cc tinyproxy \
  tpm2_ptool tpm2-abrmd dbus-daemon pkcsslotd p11-kit unshare; do
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

step "fuzz targets: built, and each run for a few seconds (./scripts/fuzz.sh 600 for real runs)"
# A debug build without a sanitizer, quick to build: enough to catch a target that dies on its
# own (a panic in the target or in the code it fuzzes).
FUZZ_QUICK=1 scripts/fuzz.sh 5

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

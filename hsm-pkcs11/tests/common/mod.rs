//! Shared setup for the SoftHSM tests: tokens made and filled by the real tools.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use hsm_testkit::softhsm::SoftHsm;

/// The hsm-x509 fixtures (made by openssl, see their generate.sh).
pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hsm-x509/tests/fixtures")
        .join(name)
}

/// DER of a PEM certificate fixture, written next to the token store for pkcs11-tool.
pub(crate) fn der_file(softhsm: &SoftHsm, pem_name: &str) -> PathBuf {
    let pem = std::fs::read(fixture(pem_name)).unwrap();
    let der = hsm_x509::load_certificates(&pem).unwrap().remove(0);
    let path = softhsm.dir().join(format!("{pem_name}.der"));
    std::fs::write(&path, der.as_ref()).unwrap();
    path
}

/// A token `label` holding fixture key `name` (label "device", id 01) imported with
/// softhsm2-util, its certificate (id 01) and the fixture CA (id ca) written with pkcs11-tool.
pub(crate) fn token_with_fixture(softhsm: &SoftHsm, label: &str, name: &str) {
    softhsm.init_token(label);
    softhsm.import_key(label, &fixture(&format!("{name}.key.pem")), "device", "01");
    let leaf = der_file(softhsm, &format!("{name}.pem"));
    let ca = der_file(softhsm, "ca.pem");
    let token = format!("--token-label={label}");
    let pin = format!("--pin={}", hsm_testkit::softhsm::USER_PIN);
    for (file, id, object) in [(&leaf, "01", "device"), (&ca, "ca", "fixture-ca")] {
        softhsm.pkcs11_tool(&[
            &token,
            "--login",
            &pin,
            "--write-object",
            &file.to_string_lossy(),
            "--type",
            "cert",
            "--id",
            id,
            "--label",
            object,
        ]);
    }
}

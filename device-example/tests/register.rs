//! The device binary registers against an in-process dps-emulator over the transport it was
//! built with, and fails with a clear message on bad input.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_testkit::pki::TestCa;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_register_x509"))
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_with_its_certificate() {
    let ca = TestCa::new("device CA");
    let device = ca.issue_client("device-build-01", &rcgen::PKCS_ECDSA_P256_SHA256);
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["device-hub.azure-devices.net"])
        .enroll_group(EnrollmentGroup::x509_ca("device-group", ca.cert().clone()))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("chain.pem"), &device.chain_pem).unwrap();
    std::fs::write(path("key.pem"), &device.key_pem).unwrap();
    emulator
        .write_ca(dir.path().join("ca.pem").as_path())
        .unwrap();
    let args = [
        emulator.global_endpoint(),
        emulator.id_scope().to_owned(),
        path("chain.pem"),
        path("key.pem"),
        path("ca.pem"),
        emulator.mqtt_addr().unwrap().port().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || binary().args(args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "device-hub.azure-devices.net device-build-01"
    );
}

#[test]
fn a_missing_key_file_is_named() {
    let output = binary()
        .args([
            "localhost",
            "0ne00000001",
            "/nonexistent/chain.pem",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/chain.pem"),
        "{stderr}"
    );
}

#[test]
fn wrong_arguments_print_the_usage() {
    let output = binary().arg("localhost").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: register_x509"));
}

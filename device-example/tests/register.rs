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

/// The build has the one transport its feature names, and the client refuses the other with
/// a typed error naming the feature.
#[test]
fn only_the_chosen_transport_is_built() {
    use provisioning::{ProvisioningClient, Transport};
    let (built, left_out) = if cfg!(feature = "https") {
        (Transport::Https, Transport::Mqtt)
    } else {
        (Transport::Mqtt, Transport::Https)
    };
    assert!(built.is_built());
    // In a whole-workspace build the other members turn every transport back on (cargo unifies
    // features); built alone, as scripts/test.sh builds it once per transport, only one is in.
    if Transport::MqttWs.is_built() {
        eprintln!("a whole-workspace build: every transport is built; checked per package");
        return;
    }
    assert!(!left_out.is_built());
    let ca = TestCa::new("device CA");
    let device = ca.issue_client("device-build-02", &rcgen::PKCS_ECDSA_P256_SHA256);
    let identity = hsm_x509::X509IdentityBuilder::new()
        .certificates(device.chain_pem.as_bytes())
        .key(device.key_pem.as_bytes())
        .build()
        .unwrap();
    let error = ProvisioningClient::builder("localhost", "0ne00000001")
        .transport(left_out)
        .x509(std::sync::Arc::new(identity))
        .build()
        .unwrap_err();
    assert!(
        matches!(error, provisioning::Error::Config { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("`{}` feature is off", left_out.feature())),
        "{error}"
    );
}

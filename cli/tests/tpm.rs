//! `tpm` commands and `register --tpm` against swtpm: the registration id matches what hsm-tpm
//! reports, the TPM registers with its EK enrolled, the identity key can be cleared, and an
//! unreachable TPM is a device error in one line.
// The TPM commands need the `tpm` feature (the default); without it they only say how to get it,
// which scripts/test.sh checks on its bare-machine build.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use dps_emulator::{Emulator, Enrollment};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Tpm, TpmIdentity};

fn info(swtpm: &Swtpm) -> serde_json::Value {
    let run = run(["tpm", "info", "--tcti", &swtpm.tcti(), "--json"]);
    run.ok();
    run.json()
}

#[test]
fn info_shows_the_ek_certificate_from_nv() {
    let swtpm = Swtpm::start_manufactured();
    let run = run(["tpm", "info", "--tcti", &swtpm.tcti()]);
    run.ok();
    assert!(
        run.stdout.lines().any(|l| l
            .starts_with("EK certificate (0x01c00002, RSA 2048) issued by")
            && l.ends_with("certifies this EK")),
        "{run}"
    );
    let json = info(&swtpm);
    let listed = json["ekCertificates"].as_array().unwrap();
    let rsa = listed.iter().find(|c| c["index"] == "0x01c00002").unwrap();
    assert_eq!(rsa["certifiesEk"], true);
    assert!(
        !run.stdout.contains("ANOTHER key"),
        "the ECC EK certificate is not for another key: {run}"
    );
    // The bytes are the certificate in NV, as hsm-tpm reads it.
    let tpm = Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    let read = TpmIdentity::open(&tpm).unwrap().ek_certificates().unwrap();
    let der = BASE64.decode(rsa["der"].as_str().unwrap()).unwrap();
    assert_eq!(der, read[0].certificate.as_ref());
    // A TPM without one says so.
    let bare = Swtpm::start();
    let none = common::run(["tpm", "info", "--tcti", &bare.tcti()]);
    none.ok();
    assert!(
        none.stdout.contains("EK certificate   none in NV"),
        "{none}"
    );
}

#[test]
fn info_prints_the_registration_id_hsm_tpm_reports() {
    let swtpm = Swtpm::start();
    let run = run(["tpm", "info", "--tcti", &swtpm.tcti()]);
    run.ok();
    let id_line = run.stdout.lines().next().unwrap();
    let printed = id_line.strip_prefix("registration id  ").unwrap();
    assert!(run.stdout.contains("EK (0x81010001)"), "{run}");
    assert!(
        run.stdout.contains("identity key (0x81000100) absent"),
        "{run}"
    );
    let json = info(&swtpm);
    assert_eq!(json["registrationId"], printed);
    // The binary has exited; hsm-tpm opens the same TPM and agrees.
    let tpm = Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    let identity = TpmIdentity::open(&tpm).unwrap();
    assert_eq!(identity.registration_id().as_str(), printed);
    assert_eq!(
        BASE64
            .decode(json["endorsementKey"].as_str().unwrap())
            .unwrap(),
        identity.endorsement_key()
    );
    assert_eq!(
        BASE64
            .decode(json["storageRootKey"].as_str().unwrap())
            .unwrap(),
        identity.storage_root_key()
    );
    assert_eq!(
        hsm_core::tpm_registration_id(identity.endorsement_key()).as_str(),
        printed
    );
}

#[test]
fn register_with_the_ek_enrolled_then_clear_the_identity_key() {
    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let json = info(&swtpm);
    let id = json["registrationId"].as_str().unwrap().to_owned();
    let ek = BASE64
        .decode(json["endorsementKey"].as_str().unwrap())
        .unwrap();
    let emu = Emu::start(
        Emulator::builder().enroll(Enrollment::tpm(id.as_str(), ek).device_id("cli-tpm-device")),
    );
    let run = run(with(emu.register(), &["--tpm", &tcti, "--json"]));
    run.ok();
    let json = run.json();
    assert_eq!(json["deviceId"], "cli-tpm-device", "{run}");
    assert_eq!(json["registrationId"], id.as_str());
    assert_eq!(json["hubCredentials"], "sas");
    assert!(run.stderr.contains("TPM challenge"), "{run}");
    assert_eq!(info(&swtpm)["identityKeyPresent"], true);

    let run = common::run(["tpm", "clear-identity", "--tcti", &tcti]);
    run.ok();
    assert!(
        run.stdout.contains("removed the key at 0x81000100"),
        "{run}"
    );
    assert_eq!(info(&swtpm)["identityKeyPresent"], false);
    let run = common::run(["tpm", "clear-identity", "--tcti", &tcti]);
    run.ok();
    assert!(run.stdout.contains("nothing to do"), "{run}");
    common::run([
        "tpm",
        "clear-identity",
        "--tcti",
        &tcti,
        "--handle",
        "0x81010001",
    ])
    .fails(2, "refusing to evict");

    // DPS has no TPM attestation over MQTT: a usage error before any request.
    common::run(with(
        emu.register(),
        &["--tpm", &tcti, "--transport", "mqtt"],
    ))
    .fails(2, "over MQTT");
    // From a config file, with a registration id that is not this TPM's.
    let config = write(
        emu.dir.path(),
        "tpm.toml",
        format!(
            "[provisioning]\nglobal_endpoint = \"{}\"\nid_scope = \"{}\"\ntrust_ca = \"dps-ca.pem\"\n\n\
             [attestation]\nmethod = \"tpm\"\ntcti = \"{tcti}\"\nregistration_id = \"{id}\"\n",
            emu.emulator.global_endpoint(),
            emu.emulator.id_scope()
        ),
    );
    let run = common::run(["register", "--json", "--config", config.to_str().unwrap()]);
    run.ok();
    assert_eq!(run.json()["deviceId"], "cli-tpm-device", "{run}");
    let wrong = write(
        emu.dir.path(),
        "wrong.toml",
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&id, "someone-else"),
    );
    common::run(["register", "--config", wrong.to_str().unwrap()]).fails(2, "is not this TPM's");
}

#[test]
fn an_unreachable_tpm_is_a_device_error_in_one_line() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let run = run(["tpm", "info", "--tcti", &tcti]);
    run.fails(3, "cannot connect to the TPM");
    assert!(run.error_text().contains("unavailable"), "{run}");
    assert!(run.error_text().contains("not reachable"), "{run}");
    assert!(!run.error_text().contains("not recognized"), "{run}");
    run_tcti_errors();
}

fn run_tcti_errors() {
    run(["tpm", "info", "--tcti", "carrier-pigeon:fast"]).fails(2, "invalid TCTI");
    let mut no_env = bin();
    no_env.env_remove("TPM2TOOLS_TCTI").env_remove("TCTI");
    run_with(no_env, ["tpm", "info"]).fails(2, "no TPM given");
}

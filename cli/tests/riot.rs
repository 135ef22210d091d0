//! `riot` commands: certificates `openssl verify` accepts (root -> DeviceID -> Alias), the same
//! root from the same seed, verification certificates, and registration through the DICE
//! driver against the emulator with the root enrolled.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_testkit::tools::openssl;

const UDS: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const FWID: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// `riot device` for the test device, its certificates written to `out`.
fn run_device(out: &Path) -> Run {
    run([
        "riot",
        "device",
        "--uds-hex",
        UDS,
        "--fwid-hex",
        FWID,
        "--root-seed-hex",
        SEED,
        "--registration-id",
        "cli-dice-01",
        "--out-dir",
        out.to_str().unwrap(),
    ])
}

#[test]
fn device_certificates_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("device");
    let run = run_device(&out);
    run.ok();
    assert!(
        run.stdout.starts_with("registration id: cli-dice-01\n"),
        "{run}"
    );
    assert!(
        !run.stdout.contains(UDS) && !run.stderr.contains(UDS),
        "{run}"
    );
    for name in ["alias.pem", "deviceid.pem", "root.pem", "chain.pem"] {
        assert!(out.join(name).is_file(), "{name} missing: {run}");
    }
    let verify = openssl(
        dir.path(),
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            out.join("root.pem").to_str().unwrap(),
            "-untrusted",
            out.join("deviceid.pem").to_str().unwrap(),
            out.join("alias.pem").to_str().unwrap(),
        ],
    );
    assert!(text(&verify.stdout).contains(":OK"), "{verify:?}");
    assert!(subject(dir.path(), &out.join("alias.pem")).contains("CN=cli-dice-01"));
    assert!(subject(dir.path(), &out.join("deviceid.pem")).contains("CN=riot-signer-core"));
    assert!(subject(dir.path(), &out.join("root.pem")).contains("CN=riot-root"));
    assert_eq!(certificates(&out.join("chain.pem")).len(), 3);

    // `riot root` with the same seed gives the same root, byte for byte.
    let root = dir.path().join("root.pem");
    run_root(&["--seed-hex", SEED, "--out", root.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&root).unwrap(),
        std::fs::read(out.join("root.pem")).unwrap()
    );
    // The same inputs give the same device (DICE is deterministic).
    let again = dir.path().join("again");
    run_device(&again).ok();
    assert_eq!(
        std::fs::read(again.join("chain.pem")).unwrap(),
        std::fs::read(out.join("chain.pem")).unwrap()
    );
    // New firmware, new Alias key; the DeviceID certificate stays.
    let updated = dir.path().join("updated");
    common::run([
        "riot",
        "device",
        "--uds-hex",
        UDS,
        "--fwid-hex",
        &"33".repeat(32),
        "--root-seed-hex",
        SEED,
        "--registration-id",
        "cli-dice-01",
        "--out-dir",
        updated.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::read(updated.join("deviceid.pem")).unwrap(),
        std::fs::read(out.join("deviceid.pem")).unwrap()
    );
    assert_ne!(
        std::fs::read(updated.join("alias.pem")).unwrap(),
        std::fs::read(out.join("alias.pem")).unwrap()
    );
}

fn run_root(args: &[&str]) -> Run {
    let mut all = vec!["riot", "root"];
    all.extend_from_slice(args);
    let run = run(&all);
    run.ok();
    run
}

#[test]
fn a_new_seed_file_makes_a_reproducible_root_and_verification_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("root.seed");
    let root = dir.path().join("root.pem");
    run_root(&[
        "--new-seed",
        seed.to_str().unwrap(),
        "--cn",
        "cli test root",
        "--out",
        root.to_str().unwrap(),
    ]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&seed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the seed file is private");
    }
    assert_eq!(std::fs::read_to_string(&seed).unwrap().trim().len(), 64);
    // --new-seed never overwrites a seed.
    run([
        "riot",
        "root",
        "--new-seed",
        seed.to_str().unwrap(),
        "--out",
        root.to_str().unwrap(),
    ])
    .fails(1, "cannot write");
    let again = dir.path().join("again.pem");
    run_root(&[
        "--seed-file",
        seed.to_str().unwrap(),
        "--cn",
        "cli test root",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&root).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let proof = dir.path().join("verification.pem");
    let run = run([
        "riot",
        "verify-cert",
        "--root-seed-file",
        seed.to_str().unwrap(),
        "--root-cn",
        "cli test root",
        "--code",
        "5F8E2A0C9D1B",
        "--out",
        proof.to_str().unwrap(),
    ]);
    run.ok();
    let verify = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            proof.to_str().unwrap(),
        ],
    );
    assert!(text(&verify.stdout).contains(":OK"), "{verify:?}");
    assert!(subject(dir.path(), &proof).contains("CN=5F8E2A0C9D1B"));
}

#[test]
fn bad_riot_input_exits_2_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    run([
        "riot",
        "device",
        "--uds-hex",
        "abcd",
        "--fwid-hex",
        FWID,
        "--out-dir",
        out,
    ])
    .fails(2, "UDS must be 32 bytes");
    run([
        "riot",
        "device",
        "--uds-hex",
        UDS,
        "--fwid-hex",
        "xyz",
        "--out-dir",
        out,
    ])
    .fails(2, "FWID is not valid hex");
    run([
        "riot",
        "device",
        "--uds-hex",
        &"00".repeat(32),
        "--fwid-hex",
        FWID,
        "--out-dir",
        out,
    ])
    .fails(2, "all zeros");
    run([
        "riot",
        "root",
        "--seed-file",
        "/no/such/seed",
        "--out",
        "x.pem",
    ])
    .fails(2, "cannot read /no/such/seed");
    run([
        "riot",
        "verify-cert",
        "--root-seed-hex",
        SEED,
        "--code",
        &"x".repeat(65),
        "--out",
        "v.pem",
    ])
    .fails(2, "verification code");
}

#[test]
fn register_through_the_dice_driver_with_the_root_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    run_root(&["--seed-hex", SEED, "--out", root.to_str().unwrap()]);
    let emu = Emu::start(Emulator::builder().enroll_group(EnrollmentGroup::x509_ca(
        "cli-dice-group",
        certificates(&root).remove(0),
    )));
    let uds_file = write(dir.path(), "uds.hex", format!("{UDS}\n"));
    let device = [
        "--riot-uds-file",
        uds_file.to_str().unwrap(),
        "--riot-fwid",
        FWID,
        "--riot-root-seed",
        SEED,
        "--registration-id",
        "cli-dice-01",
    ];
    for transport in ["https", "mqtt"] {
        let run = run(with(
            with(emu.register(), &device),
            &["--transport", transport, "--json"],
        ));
        run.ok();
        let json = run.json();
        assert_eq!(json["deviceId"], "cli-dice-01", "{run}");
        assert_eq!(json["enrollmentGroupId"], "cli-dice-group");
        assert_eq!(json["hubCredentials"], "x509");
    }
    // A device whose DeviceID another root issued is refused.
    let other_root = "ff".repeat(32);
    run(with(
        emu.register(),
        &[
            "--riot-uds-hex",
            UDS,
            "--riot-fwid-hex",
            FWID,
            "--riot-root-seed-hex",
            &other_root,
        ],
    ))
    .fails(1, "DPS refused the device's credentials");
    // The same device from a config file.
    let config = write(
        dir.path(),
        "dice.toml",
        format!(
            r#"
[provisioning]
global_endpoint = "{endpoint}"
id_scope = "{scope}"
trust_ca = "{ca}"

[attestation]
method = "riot"
registration_id = "cli-dice-01"
uds = {{ file = "uds.hex" }}
fwid = "{FWID}"
root_seed = {{ value = "{SEED}" }}
"#,
            endpoint = emu.emulator.global_endpoint(),
            scope = emu.emulator.id_scope(),
            ca = emu.ca.display(),
        ),
    );
    let run = run(["register", "--json", "--config", config.to_str().unwrap()]);
    run.ok();
    assert_eq!(run.json()["deviceId"], "cli-dice-01", "{run}");
}

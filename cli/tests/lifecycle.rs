//! `connect --state-dir`, `renew` and `status` against an in-process emulator: two starts
//! and one registration, reprovisioning when the hub refuses, a certificate issued for a key
//! in a key folder and renewed with a new one, the cache shown; each mistake with its exit
//! code.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dps_emulator::{Emulator, Enrollment};

const HUB_1: &str = "life-hub-1.example.net";
const HUB_2: &str = "life-hub-2.example.net";

fn enrolled(id: &str, hub: &str) -> Enrollment {
    Enrollment::symmetric_key(id, key_pair(id, DEVICE_KEY)).iot_hubs([hub])
}

fn emulator() -> Emu {
    Emu::start(
        Emulator::builder()
            .iot_hubs([HUB_1, HUB_2])
            .enroll(enrolled("life-1", HUB_1))
            .enroll(enrolled("life-2", HUB_1))
            .enroll(enrolled("life-3", HUB_1)),
    )
}

fn device(id: &str) -> Vec<String> {
    ["--symmetric-key", DEVICE_KEY, "--registration-id", id]
        .map(String::from)
        .to_vec()
}

/// `connect` for `id` with `--state-dir` (and more flags).
fn connect(emu: &Emu, id: &str, state: &str, more: &[&str]) -> Run {
    let mut args = with(emu.connect(), &device(id));
    args.extend(["--state-dir".into(), emu.path(state).display().to_string()]);
    args.extend(more.iter().map(|s| s.to_string()));
    run(args)
}

fn status(emu: &Emu, state: &str, json: bool) -> Run {
    let mut args = vec![
        "status".to_owned(),
        "--state-dir".into(),
        emu.path(state).display().to_string(),
    ];
    if json {
        args.push("--json".into());
    }
    run(args)
}

fn registrations(emu: &Emu, id: &str) -> u32 {
    emu.emulator
        .registrations()
        .iter()
        .find(|r| r.registration_id == id)
        .map_or(0, |r| r.registrations)
}

#[test]
fn two_starts_one_registration_and_the_status() {
    let emu = emulator();
    let first = connect(&emu, "life-1", "state-1", &[]);
    first.ok();
    assert!(
        first.stdout.contains(
            "through           a DPS registration (no cached assignment; initialAssignment)"
        ),
        "{first}"
    );
    assert!(first.stdout.contains("cached in"), "{first}");
    let second = connect(&emu, "life-1", "state-1", &["--json", "--quiet"]);
    second.ok();
    let out = second.json();
    assert_eq!(out["via"]["source"], "cache");
    assert_eq!(out["registrations"], 0);
    assert_eq!(out["assignedHub"], HUB_1);
    assert_eq!(out["telemetry"], "acknowledged");
    assert_eq!(registrations(&emu, "life-1"), 1);

    let shown = status(&emu, "state-1", false);
    shown.ok();
    assert!(
        shown
            .stdout
            .contains(&format!("assigned: hub {HUB_1}, device id life-1")),
        "{shown}"
    );
    assert!(
        shown
            .stdout
            .contains("the attestation (no issued certificate)"),
        "{shown}"
    );
    let shown = status(&emu, "state-1", true);
    shown.ok();
    assert_eq!(shown.json()["credential"], "attestation");
    // No cache: exit 1; an unreadable one: exit 2, saying why.
    status(&emu, "nothing-here", false).fails(1, "no cached assignment");
    std::fs::write(emu.path("state-1").join("assignment.json"), "{trunc").unwrap();
    status(&emu, "state-1", false).fails(2, "cannot be used: it is not a valid cache");
    // ... and connect registers instead.
    let again = connect(&emu, "life-1", "state-1", &[]);
    again.ok();
    assert!(again.stdout.contains("the cache was unusable"), "{again}");
}

#[test]
fn a_refused_device_reprovisions_to_its_new_hub() {
    let emu = emulator();
    connect(&emu, "life-2", "state-2", &[]).ok();
    emu.emulator.disable_device("life-2").unwrap();
    emu.emulator
        .with_enrollments(|e| e.add(enrolled("life-2", HUB_2)));
    let run = connect(&emu, "life-2", "state-2", &[]);
    run.ok();
    assert!(
        run.stdout
            .contains(&format!("connected: hub {HUB_2}, device id life-2")),
        "{run}"
    );
    assert!(run.stdout.contains("reprovisioned: the hub"), "{run}");
    assert!(run.stdout.contains("deviceDataMigrated"), "{run}");
    assert_eq!(registrations(&emu, "life-2"), 2);
}

#[test]
fn an_issued_certificate_is_renewed_with_a_new_key() {
    let emu = emulator();
    let keys = emu.path("keys").display().to_string();
    let first = connect(
        &emu,
        "life-3",
        "state-3",
        &["--key-store", &keys, "--json", "--quiet"],
    );
    first.ok();
    let out = first.json();
    assert_eq!(out["hubCredentials"], "issued");
    assert_eq!(out["keyLabel"], "device-key-1");

    let mut args = with(emu.connect(), &device("life-3"));
    args[0] = "renew".into();
    args.extend([
        "--state-dir".into(),
        emu.path("state-3").display().to_string(),
        "--key-store".into(),
        keys.clone(),
    ]);
    let renewed = run(args.clone());
    renewed.ok();
    assert!(
        renewed
            .stdout
            .contains("renewed: key device-key-2 (replaces device-key-1, deleted)"),
        "{renewed}"
    );
    assert!(
        renewed
            .stdout
            .contains("issued by         the hub (certificate management)"),
        "{renewed}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["device-key-2.chain.pem", "device-key-2.key.pem"]);
    let shown = status(&emu, "state-3", false);
    shown.ok();
    assert!(
        shown
            .stdout
            .contains("hub credential    issued certificate, key device-key-2"),
        "{shown}"
    );
    assert!(shown.stdout.contains("valid until"), "{shown}");
    assert!(shown.stdout.contains("next renewal"), "{shown}");
    // --json of renew.
    args.extend(["--json".into(), "--quiet".into()]);
    let renewed = run(args);
    renewed.ok();
    assert_eq!(renewed.json()["label"], "device-key-3");
    assert_eq!(renewed.json()["via"], "hub");
    // The cache is used: one registration for all of it.
    assert_eq!(registrations(&emu, "life-3"), 1);
}

#[test]
fn renewal_mistakes_have_their_exit_codes() {
    let emu = emulator();
    // No state folder or key store.
    let mut args = with(emu.connect(), &device("life-1"));
    args[0] = "renew".into();
    run(args.clone()).fails(2, "renew needs --state-dir and --key-store");
    // No key store: the attestation cannot rotate.
    args.extend([
        "--state-dir".into(),
        emu.path("state-x").display().to_string(),
    ]);
    run(args).fails(2, "cannot renew the device certificate");
    // A DICE device: its keys follow its firmware.
    let mut args = emu.connect();
    args[0] = "renew".into();
    args.extend(
        [
            "--riot-uds-hex",
            &"11".repeat(32),
            "--state-dir",
            &emu.path("state-dice").display().to_string(),
        ]
        .map(String::from),
    );
    run(args).fails(2, "DICE");
    // --csr with a state folder needs a key store.
    let key = emu.path("csr.key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    connect(
        &emu,
        "life-1",
        "state-y",
        &["--csr-key", &key.display().to_string()],
    )
    .fails(2, "needs --key-store");
}

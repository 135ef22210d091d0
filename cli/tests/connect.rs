//! `hsm-provision connect` against an in-process emulator: register, connect to the assigned
//! hub with the provisioned credential, send telemetry, read the twin; the hub's refusal, an
//! unreachable hub and a bad message each with their exit code.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dps_emulator::{Emulator, Enrollment};

fn emulator() -> Emu {
    Emu::start(
        Emulator::builder()
            .enroll(
                Enrollment::symmetric_key("connect-1", key_pair("connect-1", DEVICE_KEY))
                    .device_id("connect-device"),
            )
            .enroll(Enrollment::symmetric_key(
                "connect-2",
                key_pair("connect-2", DEVICE_KEY),
            )),
    )
}

fn device(id: &str) -> [&str; 4] {
    ["--symmetric-key", DEVICE_KEY, "--registration-id", id]
}

#[test]
fn a_device_registers_connects_sends_telemetry_and_reads_its_twin() {
    let emu = emulator();
    let run = run(with(emu.connect(), &device("connect-1")));
    run.ok();
    assert!(
        run.stdout
            .contains(&format!("connected: hub {HUB}, device id connect-device")),
        "{run}"
    );
    assert!(
        run.stdout.contains("telemetry         acknowledged"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("twin version      desired 1, reported 1"),
        "{run}"
    );
    let sent = emu.emulator.telemetry().pop().unwrap();
    assert_eq!(sent.device_id, "connect-device");
    let status: serde_json::Value = serde_json::from_slice(&sent.payload).unwrap();
    assert_eq!(status["status"], "connected");
    assert_eq!(sent.property("$.ct"), Some("application/json"));

    // --json, and a message of the user's own (from a file).
    let message = write(emu.dir.path(), "message.json", r#"{"temperature": 21.5}"#);
    let run = common::run(with(
        emu.connect(),
        &[
            &device("connect-1")[..],
            &[
                "--json",
                "--quiet",
                "--message",
                &format!("@{}", message.display()),
            ],
        ]
        .concat(),
    ));
    run.ok();
    let out = run.json();
    assert_eq!(out["assignedHub"], HUB);
    assert_eq!(out["deviceId"], "connect-device");
    assert_eq!(out["telemetry"], "acknowledged");
    assert_eq!(out["twin"]["reportedVersion"], 1);
    assert_eq!(out["hubCredentials"], "sas");
    assert_eq!(
        emu.emulator.telemetry().pop().unwrap().payload,
        br#"{"temperature":21.5}"#
    );
}

#[test]
fn a_refusing_hub_is_exit_1_and_a_bad_message_exit_2_before_registering() {
    let emu = emulator();
    // Registered once, then disabled on its hub: registering again works, the hub refuses.
    run(with(emu.connect(), &device("connect-2"))).ok();
    emu.emulator.disable_device("connect-2").unwrap();
    let run = common::run(with(emu.connect(), &device("connect-2")));
    run.fails(1, "the hub leg failed");
    assert!(
        run.stderr.contains(&format!(
            "the hub {HUB} refused the device's credential (MQTT CONNACK 5"
        )),
        "{run}"
    );

    let requests = emu.emulator.requests();
    common::run(with(
        emu.connect(),
        &[&device("connect-1")[..], &["--message", "{not json"]].concat(),
    ))
    .fails(2, "--message is not valid JSON");
    assert_eq!(emu.emulator.requests(), requests, "nothing was sent to DPS");
}

#[test]
fn an_unreachable_hub_is_exit_4() {
    let emu = emulator();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut args = emu.connect();
    let at = args.iter().position(|a| a == "--connect-to").unwrap();
    args[at + 1] = address;
    let run = run(with(
        args,
        &[&device("connect-1")[..], &["--hub-timeout", "5s"]].concat(),
    ));
    run.fails(4, "the hub leg failed");
    assert!(run.stderr.contains("connect to the hub"), "{run}");
}

//! The example configuration and the binary, as a user runs them.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{API, Https, sas};
use dps_emulator::Config;
use serde_json::json;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/enrollments.example.toml");

#[tokio::test]
async fn example_config_registers_its_devices() {
    let config = Config::from_file(EXAMPLE.as_ref()).unwrap();
    let emu = config
        .into_builder()
        .unwrap()
        .https_listen("127.0.0.1:0".parse().unwrap())
        .mqtt_listen(None)
        .retry_after(0)
        .start()
        .await
        .unwrap();
    let scope = emu.id_scope().to_owned();
    assert_eq!(scope, "0ne00000EMU");
    let mut c = Https::connect(&emu, None).await;
    let key = b"0123456789abcdef0123456789abcdef";
    let r = c
        .register(
            "sensor-001",
            Some(&sas(&scope, "sensor-001", key)),
            json!({}),
            API,
        )
        .await;
    let state = &r.json()["registrationState"];
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["payload"], json!({"welcome": "sensor-001"}));
    let r = c
        .register(
            "retired-002",
            Some(&sas(&scope, "retired-002", key)),
            json!({}),
            API,
        )
        .await;
    assert_eq!(r.json()["status"], "disabled");
    // The group's published vector (DESIGN.md): derived key for this id.
    use base64::Engine as _;
    let derived = base64::engine::general_purpose::STANDARD
        .decode("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")
        .unwrap();
    let id = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
    let r = c
        .register(id, Some(&sas(&scope, id, &derived)), json!({}), API)
        .await;
    assert_eq!(
        r.json()["registrationState"]["assignedHub"],
        "hub-line-a.azure-devices.net"
    );
}

#[test]
fn bad_configs_are_typed_errors() {
    let cases = [
        ("id_scope = 5", "invalid configuration"),
        ("unknown_key = 1", "unknown field"),
        ("[[enrollment]]\nregistration_id = \"a\"", "exactly one of"),
        (
            "[[enrollment]]\nregistration_id = \"a\"\nsymmetric_key = { primary = \"***\" }",
            "not base64",
        ),
        (
            "[[group]]\nid = \"g\"\nx509_ca = \"/nonexistent/ca.pem\"",
            "read certificate",
        ),
    ];
    for (text, expected) in cases {
        let err = Config::from_toml(text)
            .and_then(Config::into_builder)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
    let err = Config::from_file("/nonexistent/enrollments.toml".as_ref()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/enrollments.toml"));
}

#[test]
fn binary_prints_endpoints_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
        .args([
            "--config",
            EXAMPLE,
            "--https",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .arg("--write-ca")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("press Ctrl-C");
        seen.push(line);
        if done {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(text.contains("id scope       0ne00000EMU"), "{text}");
    assert!(text.contains("https          https://127.0.0.1:"), "{text}");
    assert!(text.contains("mqtt           mqtts://127.0.0.1:"), "{text}");
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGINT: {exit:?}");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l == "stopping"), "{rest:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: read configuration /nonexistent.toml"),
        "{err}"
    );
}

//! Every example, run as a user runs it: the binary is spawned, must exit 0, and must print the
//! lines that show it did its job. The binaries are built by `common::example` (see there why
//! `cargo test` alone does not leave them behind).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::run_example;
use hmac::{KeyInit as _, Mac as _};

#[test]
fn quickstart_registers_a_dice_device_and_sends_telemetry_to_its_hub() {
    let run = run_example("quickstart", &[], &[]);
    run.success();
    let line = run.line("assigned:");
    assert!(
        line.contains("hub 'quickstart-hub.azure-devices.net'"),
        "{line}"
    );
    assert!(line.contains("device id 'quickstart-device-01'"), "{line}");
    let line = run.line("connected to hub");
    assert!(
        line.contains("'quickstart-hub.azure-devices.net' as 'quickstart-device-01'"),
        "{line}"
    );
    run.line("telemetry acknowledged by the hub");
    run.line("and 1 telemetry message(s)");
}

#[test]
fn tls_handshake_signs_through_the_handle() {
    let run = run_example("tls_handshake", &[], &[]);
    run.success();
    run.line("the server verified the device certificate");
}

#[test]
fn x509_files_registers_over_mqtt() {
    let run = run_example("x509_files", &[], &[]);
    run.success();
    run.line("wrote ca.pem, device-chain.pem and device.key.pem");
    let line = run.line("assigned:");
    assert!(
        line.contains(
            "hub 'x509-files-hub.azure-devices.net', device id 'x509-files-device-01' (group 'x509-files-group'"
        ),
        "{line}"
    );
}

#[test]
fn symmetric_key_group_registers_and_prints_a_valid_hub_sas_token() {
    let run = run_example("symmetric_key_group", &[], &[]);
    run.success();
    run.line("Debug shows [redacted]");
    let device = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
    let line = run.line("assigned:");
    assert!(
        line.contains(&format!(
            "hub 'symkey-hub.azure-devices.net', device id '{device}' (group 'symkey-group'"
        )),
        "{line}"
    );
    assert!(line.contains(r#"{"modelId":"dtmi:com:example:Thermostat;1"}"#));

    // The token verifies with the published derived key, computed here independently.
    let token = run.line("SharedAccessSignature ");
    let fields: Vec<(&str, &str)> = token
        .trim_start_matches("SharedAccessSignature ")
        .split('&')
        .map(|f| f.split_once('=').unwrap())
        .collect();
    let field = |name: &str| fields.iter().find(|(k, _)| *k == name).unwrap().1;
    let sr = field("sr");
    assert_eq!(
        sr,
        format!("symkey-hub.azure-devices.net%2fdevices%2f{device}")
    );
    let derived = base64::engine::general_purpose::STANDARD
        .decode("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&derived).unwrap();
    mac.update(format!("{sr}\n{}", field("se")).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let expected = expected
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(field("sig"), expected);
}

#[test]
fn custom_driver_registers_through_a_signer_in_another_process() {
    let run = run_example("custom_driver", &[], &[]);
    run.success();
    let started = run.line("signer process started: pid ");
    let pids: Vec<&str> = started
        .split("pid ")
        .skip(1)
        .map(|s| s.split(|c: char| !c.is_ascii_digit()).next().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{started}");
    assert_ne!(pids[0], pids[1], "the signer must be another process");
    let line = run.line("assigned:");
    assert!(
        line.contains(
            "hub 'custom-driver-hub.azure-devices.net', device id 'custom-driver-device-01'"
        ),
        "{line}"
    );
    run.line("signatures made by the signer process over the socket: 1");
    run.line("signing now fails with: remote sign failed: cannot connect to the signer");
}

#[test]
fn csr_issuance_prints_the_issued_chain() {
    let run = run_example("csr_issuance", &[], &[]);
    run.success();
    run.line("with API 2025-07-01-preview and a CSR (CN=csr-device-01)");
    run.line("assigned: hub 'csr-hub.azure-devices.net', device id 'csr-device-01'");
    run.line("[0] subject: CN=csr-device-01");
    run.line("issuer:  CN=dps-emulator CA");
    run.line("the issued leaf certifies the handle's public key");
}

#[test]
fn pkcs11_softhsm_registers_through_the_token_and_gets_a_certificate_for_a_token_key() {
    let run = run_example("pkcs11_softhsm", &[], &[]);
    run.success();
    run.line("registration id 'pkcs11-device-01', chain of 2 from the token");
    run.line("assigned: hub 'pkcs11-hub.azure-devices.net', device id 'pkcs11-device-01'");
    run.line("DPS issued subject 'CN=pkcs11-device-01', issuer 'CN=dps-emulator CA'");
    let objects: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.contains("token objects:"))
        .skip(1)
        .map(str::trim)
        .collect();
    for expected in [
        "private    device-key",
        "private    operational-key",
        "cert       device-key",
        "cert       device-ca",
        "cert       operational-key",
    ] {
        assert!(objects.contains(&expected), "{expected} in {objects:?}");
    }
}

/// The fleet example at a small count, over each transport: every device's line in its results
/// file says it was assigned (device id = registration id, one of the emulator's two hubs) and
/// its telemetry acknowledged.
#[test]
fn fleet_provisions_and_connects_every_device() {
    let dir = tempfile::tempdir().unwrap();
    for (transport, count) in [("https", 120), ("mqtt", 80)] {
        let results = dir.path().join(format!("{transport}.csv"));
        let prefix = format!("fleet-{transport}-");
        let run = run_example(
            "fleet",
            &[
                "--devices",
                &count.to_string(),
                "--in-flight",
                "32",
                "--transport",
                transport,
                "--prefix",
                &prefix,
                "--results",
                results.to_str().unwrap(),
                "--min-poll-ms",
                "0",
            ],
            &[],
        );
        run.success();
        let summary = run.line("devices provisioned and connected");
        assert!(
            summary.starts_with(&format!("{count} of {count} devices")),
            "{summary}"
        );
        run.line("peak RSS");
        let recorded = run.line("the in-process emulator recorded");
        assert!(
            recorded.contains(&format!(
                "recorded {count} registration(s) and {count} telemetry"
            )),
            "{recorded}"
        );
        let csv = std::fs::read_to_string(&results).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("registration_id,result,hub,device_id,register_ms,total_ms")
        );
        let mut seen = std::collections::BTreeSet::new();
        let mut hubs = std::collections::BTreeMap::<String, usize>::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 6, "{line}");
            assert_eq!(fields[1], "ok", "{line}");
            assert!(fields[0].starts_with(&prefix), "{line}");
            assert_eq!(
                fields[3], fields[0],
                "device id is the registration id: {line}"
            );
            assert!(
                [
                    "fleet-hub-1.azure-devices.net",
                    "fleet-hub-2.azure-devices.net"
                ]
                .contains(&fields[2]),
                "{line}"
            );
            let register: f64 = fields[4].parse().unwrap();
            let total: f64 = fields[5].parse().unwrap();
            assert!(register > 0.0 && total >= register, "{line}");
            assert!(seen.insert(fields[0].to_owned()), "twice: {line}");
            *hubs.entry(fields[2].to_owned()).or_default() += 1;
        }
        assert_eq!(seen.len(), count, "one line per device");
        assert_eq!(hubs.len(), 2, "the fleet spreads over both hubs: {hubs:?}");
    }
}

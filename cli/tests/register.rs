//! `register` against an in-process dps-emulator: symmetric keys (individual and group, HTTPS
//! and MQTT), X.509 from files, CSRs, the config file, refusals, unreachable endpoints, and
//! every kind of bad input, each with its exit code.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use dps_emulator::{Emulator, Enrollment, EnrollmentGroup};
use hsm_testkit::pki::TestCa;

fn symmetric_emulator() -> Emu {
    Emu::start(
        Emulator::builder()
            .enroll(
                Enrollment::symmetric_key("cli-sym-1", key_pair("cli-sym-1", DEVICE_KEY))
                    .device_id("cli-device-one"),
            )
            .enroll(
                Enrollment::symmetric_key("cli-retired", key_pair("cli-retired", DEVICE_KEY))
                    .disabled(),
            )
            .enroll_group(EnrollmentGroup::symmetric_key(
                "cli-group",
                key_pair("cli-group", GROUP_KEY),
            )),
    )
}

/// The flags of the enrolled symmetric-key device `cli-sym-1`.
const SYM_DEVICE: [&str; 4] = [
    "--symmetric-key",
    DEVICE_KEY,
    "--registration-id",
    "cli-sym-1",
];

#[test]
fn symmetric_key_registers_and_prints_json_with_the_hub() {
    let emu = symmetric_emulator();
    let run = run(with(
        with(emu.register(), &SYM_DEVICE),
        &["--payload", r#"{"model":"x1","n":[1,2]}"#, "--json"],
    ));
    run.ok();
    let json = run.json();
    assert_eq!(json["assignedHub"], HUB, "{run}");
    assert_eq!(json["deviceId"], "cli-device-one");
    assert_eq!(json["registrationId"], "cli-sym-1");
    assert_eq!(json["status"], "assigned");
    assert_eq!(json["substatus"], "initialAssignment");
    assert_eq!(
        json["payload"],
        serde_json::json!({"model": "x1", "n": [1, 2]})
    );
    assert_eq!(json["hubCredentials"], "sas");
    assert!(json["issuedCertificateChain"].is_null());
    assert_eq!(json["requests"], 2, "register and one poll");
    // The status line went to stderr, one line per step (stderr is not a terminal here).
    assert!(run.stderr.contains("registering... "), "{run}");
    assert!(run.stderr.contains("polling (1)"), "{run}");
    assert!(!run.stderr.contains(DEVICE_KEY), "{run}");
    assert_eq!(emu.emulator.registrations()[0].registration_id, "cli-sym-1");
}

#[test]
fn human_output_and_quiet() {
    let emu = symmetric_emulator();
    let run = run(with(with(emu.register(), &SYM_DEVICE), &["--quiet"]));
    run.ok();
    assert!(run.stderr.is_empty(), "--quiet: {run}");
    assert!(
        run.stdout
            .starts_with(&format!("assigned: hub {HUB}, device id cli-device-one\n")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("status            assigned (initialAssignment)"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("SAS tokens for {HUB}/devices/cli-device-one")),
        "{run}"
    );
}

#[test]
fn group_key_over_mqtt() {
    let emu = symmetric_emulator();
    let run = run(with(
        emu.register(),
        &[
            "--group-key",
            GROUP_KEY,
            "--registration-id",
            GROUP_DEVICE_ID,
            "--transport",
            "mqtt",
            "--json",
        ],
    ));
    run.ok();
    let json = run.json();
    assert_eq!(json["deviceId"], GROUP_DEVICE_ID, "{run}");
    assert_eq!(json["enrollmentGroupId"], "cli-group");
    // The derived key works as an individual device key too (what `symmkey derive` prints).
    let run = common::run(with(
        emu.register(),
        &[
            "--symmetric-key",
            GROUP_DERIVED_KEY,
            "--registration-id",
            GROUP_DEVICE_ID,
            "--json",
        ],
    ));
    run.ok();
    assert_eq!(run.json()["deviceId"], GROUP_DEVICE_ID);
}

#[test]
fn a_wrong_key_is_refused_with_exit_1_and_one_line() {
    let emu = symmetric_emulator();
    for transport in ["https", "mqtt"] {
        let run = run(with(
            emu.register(),
            &[
                "--symmetric-key",
                WRONG_KEY,
                "--registration-id",
                "cli-sym-1",
                "--transport",
                transport,
                "--json",
            ],
        ));
        run.fails(1, "DPS refused the device's credentials");
        assert!(run.stdout.is_empty(), "{run}");
        assert!(
            run.elapsed < Duration::from_secs(10),
            "refusals are not retried: {run}"
        );
    }
    let run = run(with(
        emu.register(),
        &[
            "--symmetric-key",
            WRONG_KEY,
            "--registration-id",
            "cli-sym-1",
        ],
    ));
    assert!(run.error_text().contains("caused by: status 401"), "{run}");
}

#[test]
fn a_disabled_enrollment_exits_1() {
    let emu = symmetric_emulator();
    run(with(
        emu.register(),
        &[
            "--symmetric-key",
            DEVICE_KEY,
            "--registration-id",
            "cli-retired",
        ],
    ))
    .fails(1, "registration disabled");
}

#[test]
fn config_file_registers_over_mqtt_with_a_key_file() {
    let emu = symmetric_emulator();
    write(emu.dir.path(), "device.key", format!("{DEVICE_KEY}\n"));
    let config = write(
        emu.dir.path(),
        "config.toml",
        format!(
            r#"
[provisioning]
global_endpoint = "{endpoint}"
id_scope = "{scope}"
transport = "mqtt"
mqtt_port = {mqtt}
trust_ca = "dps-ca.pem"
timeout_secs = 20
payload = {{ model = "from-config" }}

[attestation]
method = "symmetric_key"
registration_id = "cli-sym-1"
symmetric_key = {{ file = "device.key" }}
"#,
            endpoint = emu.emulator.global_endpoint(),
            scope = emu.emulator.id_scope(),
            mqtt = emu.emulator.mqtt_addr().unwrap().port(),
        ),
    );
    let run = run(["register", "--json", "--config", config.to_str().unwrap()]);
    run.ok();
    let json = run.json();
    assert_eq!(json["deviceId"], "cli-device-one", "{run}");
    assert_eq!(json["payload"], serde_json::json!({"model": "from-config"}));
    // --registration-id overrides the file's (this one's enrollment is disabled).
    common::run([
        "register",
        "--config",
        config.to_str().unwrap(),
        "--registration-id",
        "cli-retired",
    ])
    .fails(1, "registration disabled");
}

#[test]
fn aziot_style_config_and_flags_override_it() {
    let emu = symmetric_emulator();
    // The file points at a closed port, another scope and a wrong key: the flags win.
    let config = write(
        emu.dir.path(),
        "aziot.toml",
        format!(
            r#"
[provisioning]
source = "dps"
global_endpoint = "https://localhost:1"
id_scope = "0ne0000WRONG"
trust_ca = ["{ca}"]

[provisioning.attestation]
method = "symmetric_key"
registration_id = "cli-sym-1"
symmetric_key = {{ value = "{WRONG_KEY}" }}
"#,
            ca = emu.ca.display()
        ),
    );
    let config = config.to_str().unwrap();
    // As written, it cannot work: a closed port (network, 4) within the short timeout.
    run(["register", "--config", config, "--timeout", "2s"]).fails(4, "did not finish within 2s");
    let run = run([
        "register",
        "--config",
        config,
        "--global-endpoint",
        &emu.emulator.global_endpoint(),
        "--id-scope",
        emu.emulator.id_scope(),
        "--symmetric-key",
        DEVICE_KEY,
        "--registration-id",
        "cli-sym-1",
        "--json",
    ]);
    run.ok();
    assert_eq!(run.json()["deviceId"], "cli-device-one", "{run}");
}

#[test]
fn config_mistakes_exit_2_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    run(["register", "--config", missing.to_str().unwrap()]).fails(2, "cannot read");
    let bad = write(
        dir.path(),
        "bad.toml",
        "[provisioning]\nid_scope = \"x\"\n\n[attestation]\nmethod = \"x509\"\nidentity_pk = \"k.pem\"\ncolour = \"blue\"\n",
    );
    let run = run(["register", "--config", bad.to_str().unwrap()]);
    run.fails(2, "unknown field `colour`");
    assert!(run.error_text().contains("line 4"), "{run}");
    let not_toml = write(dir.path(), "not.toml", "[provisioning\n");
    common::run(["register", "--config", not_toml.to_str().unwrap()])
        .fails(2, "invalid configuration file");
    let no_attestation = write(
        dir.path(),
        "none.toml",
        "[provisioning]\nid_scope = \"x\"\n",
    );
    common::run(["register", "--config", no_attestation.to_str().unwrap()])
        .fails(2, "no attestation");
    let no_scope = write(
        dir.path(),
        "noscope.toml",
        "[provisioning]\n[attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"d\"\nsymmetric_key = { value = \"AAAA\" }\n",
    );
    common::run(["register", "--config", no_scope.to_str().unwrap()]).fails(2, "no ID scope");
}

#[test]
fn attestation_flags_are_checked() {
    let scope = ["--id-scope", "0ne00000EMU"];
    for (args, code, needle) in [
        (
            &["register", "--symmetric-key", DEVICE_KEY][..],
            2,
            "--symmetric-key needs --registration-id",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                DEVICE_KEY,
                "--tpm",
                "swtpm",
                "--registration-id",
                "d",
            ],
            2,
            "choose one attestation",
        ),
        (
            &["register", "--x509-cert", "chain.pem"],
            2,
            "both --x509-cert and --x509-key",
        ),
        (&["register", "--id-scope", "s"], 2, "no attestation"),
        (
            &["register", "--riot-root-cn", "r"],
            2,
            "DICE needs the UDS",
        ),
        (
            &[
                "register",
                "--x509-cert",
                "/no/chain.pem",
                "--x509-key",
                "/no/key.pem",
            ],
            2,
            "cannot read /no/chain.pem",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                "***",
                "--registration-id",
                "d",
                "--id-scope",
                "s",
            ],
            2,
            "not valid base64",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                DEVICE_KEY,
                "--registration-id",
                "d",
                "--id-scope",
                "s",
                "--payload",
                "{oops",
            ],
            2,
            "--payload is not valid JSON",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                DEVICE_KEY,
                "--registration-id",
                "d",
                "--id-scope",
                "s",
                "--csr",
            ],
            2,
            "needs --csr-key",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                DEVICE_KEY,
                "--registration-id",
                "d",
                "--id-scope",
                "bad scope!",
            ],
            2,
            "invalid ID scope",
        ),
        (
            &[
                "register",
                "--symmetric-key",
                DEVICE_KEY,
                "--registration-id",
                "d",
                "--issued-cert-out",
                "x.pem",
            ],
            2,
            "--issued-cert-out needs --csr",
        ),
    ] {
        let mut args = args.to_vec();
        if !args.contains(&"--id-scope") {
            args.extend(scope);
        }
        run(&args).fails(code, needle);
    }
}

#[test]
fn x509_from_files_and_a_certificate_from_a_csr() {
    let ca = TestCa::new("cli x509 group CA");
    let emu = Emu::start(Emulator::builder().enroll_group(EnrollmentGroup::x509_ca(
        "cli-x509-group",
        ca.cert().clone(),
    )));
    let device = ca.issue_client("cli-x509-dev", &rcgen::PKCS_ECDSA_P256_SHA256);
    let chain = write(emu.dir.path(), "chain.pem", &device.chain_pem);
    let key = write(emu.dir.path(), "key.pem", &device.key_pem);
    let files = [
        "--x509-cert",
        chain.to_str().unwrap(),
        "--x509-key",
        key.to_str().unwrap(),
    ];
    let run = run(with(with(emu.register(), &files), &["--json"]));
    run.ok();
    let json = run.json();
    assert_eq!(json["deviceId"], "cli-x509-dev", "{run}");
    assert_eq!(json["enrollmentGroupId"], "cli-x509-group");
    assert_eq!(json["hubCredentials"], "x509");

    // Over MQTT too, with a CSR: DPS issues a certificate for the same key.
    let issued = emu.path("issued.pem");
    let run = common::run(with(
        with(emu.register(), &files),
        &[
            "--transport",
            "mqtt",
            "--csr",
            "--issued-cert-out",
            issued.to_str().unwrap(),
            "--json",
        ],
    ));
    run.ok();
    let json = run.json();
    let pem = json["issuedCertificateChain"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{run}");
    assert_eq!(std::fs::read_to_string(&issued).unwrap(), pem);
    let out = hsm_testkit::tools::openssl(
        emu.dir.path(),
        &[
            "verify",
            "-CAfile",
            emu.ca.to_str().unwrap(),
            issued.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    assert!(subject(emu.dir.path(), &issued).contains("CN=cli-x509-dev"));
    // The issued certificate is for the device's key.
    let pubkey = |args: &[&str]| hsm_testkit::tools::openssl(emu.dir.path(), args).stdout;
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", issued.to_str().unwrap()]),
        pubkey(&["pkey", "-pubout", "-in", key.to_str().unwrap()])
    );
}

#[test]
fn symmetric_key_with_a_csr_key_gets_a_certificate() {
    let emu = symmetric_emulator();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key_path = write(emu.dir.path(), "csr.key.pem", key.serialize_pem());
    let issued = emu.path("issued.pem");
    let run = run(with(
        with(emu.register(), &SYM_DEVICE),
        &[
            "--csr-key",
            key_path.to_str().unwrap(),
            "--issued-cert-out",
            issued.to_str().unwrap(),
        ],
    ));
    run.ok();
    assert!(run.stdout.contains("issued chain"), "{run}");
    assert!(run.stdout.contains("TLS client certificate"), "{run}");
    assert!(subject(emu.dir.path(), &issued).contains("CN=cli-sym-1"));
}

#[test]
fn an_unreachable_endpoint_exits_4_within_the_timeout() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", TestCa::new("unused").pem());
    let run = run([
        "register",
        "--global-endpoint",
        &format!("127.0.0.1:{port}"),
        "--id-scope",
        "0ne00000EMU",
        "--trust-ca",
        ca.to_str().unwrap(),
        "--symmetric-key",
        DEVICE_KEY,
        "--registration-id",
        "cli-sym-1",
        "--timeout",
        "3s",
    ]);
    run.fails(4, "registration did not finish within 3s");
    assert!(
        run.error_text().contains("caused by: I/O: connect to DPS"),
        "{run}"
    );
    assert!(
        run.stderr.contains("retrying the register request"),
        "{run}"
    );
    assert!(run.elapsed < Duration::from_secs(10), "{run}");
}

#[test]
fn an_untrusted_server_exits_4() {
    let emu = symmetric_emulator();
    let other = write(
        emu.dir.path(),
        "other-ca.pem",
        TestCa::new("not the DPS CA").pem(),
    );
    let mut args = emu.register();
    let at = args.iter().position(|a| a == "--trust-ca").unwrap();
    args[at + 1] = other.display().to_string();
    run(with(
        args,
        &[
            "--symmetric-key",
            DEVICE_KEY,
            "--registration-id",
            "cli-sym-1",
        ],
    ))
    .fails(4, "TLS");
}

//! `pkcs11` commands and `register --pkcs11` against SoftHSM2: each test in its own token
//! store (the binary gets `SOFTHSM2_CONF`), checked with openssl and the emulator; a wrong PIN
//! is a device error in one line.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use dps_emulator::{Emulator, Enrollment, EnrollmentGroup};
use hsm_testkit::softhsm::{SoftHsm, USER_PIN};
use hsm_testkit::tools::openssl;

const TOKEN: &str = "cli-token";

/// The binary with this test's token store.
fn cli(softhsm: &SoftHsm) -> Command {
    let mut command = bin();
    command.env("SOFTHSM2_CONF", softhsm.dir().join("softhsm2.conf"));
    command.env_remove("PKCS11_PIN");
    command
}

fn module(softhsm: &SoftHsm) -> String {
    softhsm.module().display().to_string()
}

/// A URI for the device key (label and id) with the module and the PIN.
fn key_uri(softhsm: &SoftHsm) -> String {
    format!(
        "pkcs11:token={TOKEN};object=device-key;id=%01?module-path={}&pin-value={USER_PIN}",
        module(softhsm)
    )
}

/// An openssl CA (key and certificate) in `dir`, and the extension file for client
/// certificates.
fn openssl_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=cli pkcs11 CA",
            "-days",
            "30",
        ],
    );
    write(
        dir,
        "client.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
}

#[test]
fn tokens_generate_csr_import_and_register() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token(TOKEN);
        let dir = softhsm.dir();
        let uri = key_uri(softhsm);

        let run = run_with(
            cli(softhsm),
            ["pkcs11", "tokens", "--module", &module(softhsm)],
        );
        run.ok();
        assert!(run.stdout.contains(&format!("token '{TOKEN}'")), "{run}");
        assert!(run.stdout.contains("login required"), "{run}");

        let run = run_with(
            cli(softhsm),
            ["pkcs11", "generate", &uri, "--algorithm", "p256"],
        );
        run.ok();
        assert!(
            run.stdout.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{run}"
        );
        assert!(!run.stderr.contains(USER_PIN), "{run}");
        let public = write(dir, "public.pem", &run.stdout);
        let parsed = openssl(
            dir,
            &[
                "pkey",
                "-pubin",
                "-in",
                public.to_str().unwrap(),
                "-text",
                "-noout",
            ],
        );
        assert!(String::from_utf8_lossy(&parsed.stdout).contains("P-256"));
        // A second key with the same label and id is refused.
        run_with(cli(softhsm), ["pkcs11", "generate", &uri]).fails(3, "already holds an object");

        let token_uri = format!(
            "pkcs11:token={TOKEN}?module-path={}&pin-value={USER_PIN}",
            module(softhsm)
        );
        let run = run_with(cli(softhsm), ["pkcs11", "objects", &token_uri]);
        run.ok();
        for class in ["private", "public"] {
            assert!(
                run.stdout.lines().any(|l| l.starts_with(class)
                    && l.contains("label 'device-key'")
                    && l.contains("id 01")),
                "no {class} key in {run}"
            );
        }

        let csr = dir.join("device.csr.pem");
        run_with(
            cli(softhsm),
            [
                "pkcs11",
                "csr",
                &uri,
                "--cn",
                "cli-pkcs11-dev",
                "--out",
                csr.to_str().unwrap(),
            ],
        )
        .ok();
        openssl(
            dir,
            &["req", "-verify", "-noout", "-in", csr.to_str().unwrap()],
        );
        let subject = openssl(
            dir,
            &["req", "-noout", "-subject", "-in", csr.to_str().unwrap()],
        );
        assert!(text(&subject.stdout).contains("CN=cli-pkcs11-dev"));

        openssl_ca(dir);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "client.ext",
                "-out",
                "device.pem",
            ],
        );
        let run = run_with(
            cli(softhsm),
            [
                "pkcs11",
                "import-cert",
                &uri,
                "--cert",
                dir.join("device.pem").to_str().unwrap(),
            ],
        );
        run.ok();
        let run = run_with(cli(softhsm), ["pkcs11", "objects", &token_uri]);
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("cert") && l.contains("device-key")),
            "{run}"
        );

        // The key and its certificate on the token register with the CA enrolled.
        let emu = Emu::start(Emulator::builder().enroll_group(EnrollmentGroup::x509_ca(
            "cli-pkcs11-group",
            certificates(&dir.join("ca.pem")).remove(0),
        )));
        for transport in ["https", "mqtt"] {
            let run = run_with(
                cli(softhsm),
                with(
                    emu.register(),
                    &["--pkcs11", &uri, "--transport", transport, "--json"],
                ),
            );
            run.ok();
            let json = run.json();
            assert_eq!(json["deviceId"], "cli-pkcs11-dev", "{run}");
            assert_eq!(json["enrollmentGroupId"], "cli-pkcs11-group");
        }
        // A CSR signed on the token: DPS issues a certificate for the token's key.
        let issued = dir.join("issued.pem");
        run_with(
            cli(softhsm),
            with(
                emu.register(),
                &[
                    "--pkcs11",
                    &uri,
                    "--csr",
                    "--issued-cert-out",
                    issued.to_str().unwrap(),
                ],
            ),
        )
        .ok();
        let key_of = |args: &[&str]| openssl(dir, args).stdout;
        assert_eq!(
            key_of(&["x509", "-noout", "-pubkey", "-in", issued.to_str().unwrap()]),
            std::fs::read(&public).unwrap()
        );
    });
}

#[test]
fn a_wrong_pin_is_a_device_error_in_one_line() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token(TOKEN);
        let wrong = format!(
            "pkcs11:token={TOKEN};object=device-key?module-path={}&pin-value=0000",
            module(softhsm)
        );
        let run = run_with(cli(softhsm), ["pkcs11", "objects", &wrong]);
        run.fails(3, "wrong PIN for token 'cli-token' (CKR_PIN_INCORRECT)");
        assert!(!run.stderr.contains("0000"), "{run}");
        let run = run_with(
            cli(softhsm),
            ["register", "--id-scope", "0ne00000EMU", "--pkcs11", &wrong],
        );
        run.fails(3, "CKR_PIN_INCORRECT");

        // The PIN from a file works.
        let pin = write(softhsm.dir(), "pin.txt", format!("{USER_PIN}\n"));
        let no_pin = format!("pkcs11:token={TOKEN}?module-path={}", module(softhsm));
        run_with(cli(softhsm), ["pkcs11", "objects", &no_pin])
            .fails(3, "no PIN for token 'cli-token'");
        let run = run_with(
            cli(softhsm),
            [
                "pkcs11",
                "objects",
                &no_pin,
                "--pin-file",
                pin.to_str().unwrap(),
            ],
        );
        run.ok();
        assert!(
            run.stdout.contains("no objects on token 'cli-token'"),
            "{run}"
        );

        // Other mistakes, each with its code.
        let missing_token = format!(
            "pkcs11:token=nope?module-path={}&pin-value={USER_PIN}",
            module(softhsm)
        );
        run_with(cli(softhsm), ["pkcs11", "objects", &missing_token]).fails(3, "no token matches");
        run_with(
            cli(softhsm),
            ["pkcs11", "tokens", "--module", "/no/such/module.so"],
        )
        .fails(2, "no such file");
        run_with(cli(softhsm), ["pkcs11", "objects", "pkcs11:token=a;bogus"])
            .fails(2, "invalid PKCS#11 URI");
        run_with(
            cli(softhsm),
            ["pkcs11", "objects", &format!("pkcs11:token={TOKEN}")],
        )
        .fails(2, "no PKCS#11 module given");
    });
}

#[test]
fn an_hmac_key_on_the_token_registers_with_symmetric_key_attestation() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token(TOKEN);
        let uri_text = format!(
            "pkcs11:token={TOKEN};object=dps-key?module-path={}&pin-value={USER_PIN}",
            module(softhsm)
        );
        {
            // Put the device key on the token once, as a factory would.
            use base64::Engine as _;
            let uri: hsm_pkcs11::Pkcs11Uri = uri_text.parse().unwrap();
            let token = hsm_pkcs11::Token::open(&uri).unwrap();
            let key = base64::engine::general_purpose::STANDARD
                .decode(DEVICE_KEY)
                .unwrap();
            hsm_pkcs11::Pkcs11HmacKey::import(
                &token,
                &uri,
                hsm_core::RegistrationId::new("cli-hmac-1").unwrap(),
                &hsm_core::SecretBytes::new(key),
            )
            .unwrap();
        }
        let emu = Emu::start(Emulator::builder().enroll(Enrollment::symmetric_key(
            "cli-hmac-1",
            key_pair("cli-hmac-1", DEVICE_KEY),
        )));
        let run = run_with(
            cli(softhsm),
            with(
                emu.register(),
                &[
                    "--pkcs11-hmac",
                    &uri_text,
                    "--registration-id",
                    "cli-hmac-1",
                    "--json",
                ],
            ),
        );
        run.ok();
        assert_eq!(run.json()["deviceId"], "cli-hmac-1", "{run}");
        assert_eq!(run.json()["hubCredentials"], "sas");
        // From a config file, aziot style: symmetric_key = { uri = "pkcs11:..." }.
        let config = write(
            softhsm.dir(),
            "config.toml",
            format!(
                "[provisioning]\nglobal_endpoint = \"{}\"\nid_scope = \"{}\"\ntrust_ca = \"{}\"\n\n\
                 [provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"cli-hmac-1\"\n\
                 symmetric_key = {{ uri = \"{uri_text}\" }}\n",
                emu.emulator.global_endpoint(),
                emu.emulator.id_scope(),
                emu.ca.display()
            ),
        );
        let run = run_with(
            cli(softhsm),
            ["register", "--quiet", "--config", config.to_str().unwrap()],
        );
        run.ok();
        assert!(run.stdout.contains("device id cli-hmac-1"), "{run}");
    });
}

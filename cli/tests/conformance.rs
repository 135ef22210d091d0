//! `hsm-provision conformance`: the driver conformance suite run by the binary against keys a
//! vendor would name: a key on SoftHSM2 (read-only: the token is unchanged afterwards), keys the
//! runner makes itself (`--allow-writes`) on tpm2-pkcs11 and opencryptoki and in a swtpm, a key
//! file, the JSON report, and a broken token set-up (a public-key object that belongs to
//! another key), which fails with the failing checks named.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use hsm_testkit::softhsm::SoftHsm;
use hsm_testkit::tools::openssl;

/// Every check a key handle gets, by name.
fn check_names() -> Vec<&'static str> {
    hsm_testkit::checks::all().iter().map(|(n, _)| *n).collect()
}

/// Every key-store check, by name.
fn store_check_names() -> Vec<&'static str> {
    hsm_testkit::key_store::all()
        .iter()
        .map(|(n, _)| *n)
        .collect()
}

/// Fails unless the run passed every check in `names`, one `PASS` line each.
#[track_caller]
fn passed_all(run: &Run, names: &[&str]) {
    run.ok();
    for name in names {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("PASS  {name}  ("))),
            "no PASS line for {name}:\n{run}"
        );
    }
    assert!(!run.stdout.contains("FAIL"), "{run}");
    assert!(
        run.stdout
            .contains(&format!("\n{} passed, 0 failed: ", names.len())),
        "{run}"
    );
}

/// A P-256 key in PKCS#8 PEM, made by openssl in `dir`.
fn openssl_key(dir: &Path, name: &str) -> std::path::PathBuf {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
    dir.join(name)
}

/// The token's objects as `pkcs11-tool --list-objects` prints them.
fn objects(softhsm: &SoftHsm) -> String {
    let output = softhsm.pkcs11_tool(&[
        "--token-label",
        "vendor",
        "--login",
        "--pin",
        hsm_testkit::softhsm::USER_PIN,
        "--list-objects",
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_key_on_softhsm_passes_every_check_and_the_token_is_unchanged() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("vendor");
        let dir = tempfile::tempdir().unwrap();
        let key = openssl_key(dir.path(), "device.pem");
        softhsm.import_key("vendor", &key, "device", "01");
        let before = objects(softhsm);
        assert!(before.contains("device"), "{before}");
        let uri = softhsm.uri("vendor", "device");
        let run = run(["conformance", "--pkcs11", &uri]);
        passed_all(&run, &check_names());
        // Read-only: no key-store checks, and nothing added or removed.
        for name in store_check_names() {
            assert!(
                !run.stdout.contains(name),
                "{name} ran without --allow-writes"
            );
        }
        assert_eq!(objects(softhsm), before);
        // The PIN never shows.
        assert!(
            !run.stdout.contains(hsm_testkit::softhsm::USER_PIN),
            "{run}"
        );

        // The same as one JSON object.
        let json = common::run(["conformance", "--pkcs11", &uri, "--json"]);
        json.ok();
        let report = json.json();
        assert_eq!(report["failed"], 0, "{json}");
        assert_eq!(report["passed"], check_names().len());
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(checks.len(), check_names().len());
        assert!(
            checks
                .iter()
                .all(|c| c["passed"] == true && c["seconds"].is_f64())
        );
        assert!(
            report["subject"]
                .as_str()
                .unwrap()
                .contains("PKCS#11 token 'vendor'"),
            "{json}"
        );
    });
}

#[test]
fn a_broken_token_set_up_fails_with_the_checks_named() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("vendor");
        let dir = tempfile::tempdir().unwrap();
        // The private key of one pair next to the public key of another, under one label and
        // id: what a provisioning script that mixes up ids leaves behind.
        let private = openssl_key(dir.path(), "a.pem");
        let other = openssl_key(dir.path(), "b.pem");
        openssl(
            dir.path(),
            &["pkey", "-in", "b.pem", "-pubout", "-out", "b.pub.pem"],
        );
        let _ = other;
        let pin = hsm_testkit::softhsm::USER_PIN;
        for (file, kind) in [
            (private.display().to_string(), "privkey"),
            (dir.path().join("b.pub.pem").display().to_string(), "pubkey"),
        ] {
            softhsm.pkcs11_tool(&[
                "--token-label",
                "vendor",
                "--login",
                "--pin",
                pin,
                "--write-object",
                &file,
                "--type",
                kind,
                "--label",
                "device",
                "--id",
                "01",
            ]);
        }
        let uri = softhsm.uri("vendor", "device");
        let run = run(["conformance", "--pkcs11", &uri]);
        run.code(1);
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("FAIL  sign_round_trip_every_scheme: ")),
            "{run}"
        );
        assert!(
            run.stdout.contains(" failed: PKCS#11 token 'vendor'"),
            "{run}"
        );
        assert!(
            run.stderr.contains("conformance check(s) failed: ")
                && run.stderr.contains("sign_round_trip_every_scheme"),
            "{run}"
        );
        // The JSON report names it too.
        let json = common::run(["conformance", "--pkcs11", &uri, "--json"]);
        json.code(1);
        let report = json.json();
        let failed: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(failed.contains(&"sign_round_trip_every_scheme"), "{json}");
        assert_eq!(report["failed"], failed.len());
    });
}

#[test]
fn tpm2_pkcs11_with_keys_the_runner_makes_and_removes() {
    hsm_testkit::tpm2_pkcs11::Tpm2Pkcs11::isolated(|tpm2| {
        let uri = tpm2.uri("any").replace(";object=any", "");
        let run = run(["conformance", "--pkcs11", &uri, "--allow-writes"]);
        let mut all = check_names();
        all.extend(store_check_names());
        passed_all(&run, &all);
        // Nothing left behind.
        let token = hsm_pkcs11::Token::open(&uri.parse().unwrap()).unwrap();
        let left = token.list_objects().unwrap();
        assert!(left.is_empty(), "left on the token: {left:?}");
    });
}

#[test]
fn opencryptoki_rsa_with_keys_the_runner_makes() {
    hsm_testkit::opencryptoki::Opencryptoki::isolated(|ock| {
        let uri = ock.uri("any").replace(";object=any", "");
        let run = run(["conformance", "--pkcs11", &uri, "--allow-writes"]);
        let mut all = check_names();
        all.extend(store_check_names());
        passed_all(&run, &all);
        assert!(run.stdout.contains("'ock-soft'"), "{run}");
    });
}

#[test]
fn a_key_file_passes() {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), "device.pem");
    let run = run(["conformance", "--x509-key", key.to_str().unwrap()]);
    passed_all(&run, &check_names());
    // The key's PEM lines never show.
    let pem = std::fs::read_to_string(&key).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!run.stdout.contains(line), "{run}");
    }
}

#[cfg(feature = "tpm")]
#[test]
fn a_tpm_with_a_key_the_runner_makes_and_evicts() {
    let swtpm = hsm_testkit::swtpm::Swtpm::start();
    let run = run(["conformance", "--tpm", &swtpm.tcti(), "--allow-writes"]);
    // No secret of a TPM key is in the process: the redaction check does not apply.
    let mut all: Vec<_> = check_names()
        .into_iter()
        .filter(|n| *n != "debug_output_is_redacted")
        .collect();
    all.extend(store_check_names());
    assert!(
        run.stdout
            .contains("N/A   debug_output_is_redacted: no secret of this key is held"),
        "{run}"
    );
    assert!(
        run.stdout.contains(&format!(
            "\n{} passed (1 not applicable), 0 failed: ",
            all.len() + 1
        )),
        "{run}"
    );
    run.ok();
    for name in &all {
        assert!(
            run.stdout.contains(&format!("PASS  {name}  (")),
            "{name}:\n{run}"
        );
    }
    assert!(!run.stdout.contains("FAIL"), "{run}");
    let tpm = hsm_tpm::Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    let left: Vec<_> = tpm
        .persistent_handles()
        .unwrap()
        .into_iter()
        .filter(|h| (0x8100_0600..=0x8100_07FF).contains(&h.value()))
        .collect();
    assert!(left.is_empty(), "left in the TPM: {left:?}");
}

#[test]
fn naming_no_key_is_a_usage_error() {
    run(["conformance"]).fails(2, "name one key");
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("vendor");
        let uri = softhsm.uri("vendor", "x").replace(";object=x", "");
        run(["conformance", "--pkcs11", &uri]).fails(2, "--allow-writes");
    });
}

//! Ordinary mistakes and hostile input, as an operator makes them: secrets in a wrongly typed
//! config file, huge inputs, DICE seeds of the wrong size, a seed file that would be left
//! behind, and the messages and exit codes each must give (one sentence per cause, the
//! documented code).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SECRET: &str = "c2VjcmV0LWtleS1mb3ItdGVzdGluZy1vbmx5LTAxMjM=";

#[test]
fn config_errors_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    for (name, attestation) in [
        // A bare string where a table belongs.
        (
            "bare.toml",
            format!("method = \"symmetric_key\"\nregistration_id = \"d\"\nsymmetric_key = \"{SECRET}\"\n"),
        ),
        // The value of the wrong type, and an unknown field next to a secret.
        (
            "number.toml",
            "method = \"symmetric_key\"\nregistration_id = \"d\"\nsymmetric_key = { value = 1234567890123 }\n".to_owned(),
        ),
        (
            "unknown.toml",
            format!("method = \"riot\"\nfwid = \"00\"\nuds = {{ value = \"{SECRET}\", colour = \"x\" }}\n"),
        ),
    ] {
        let config = write(
            dir.path(),
            name,
            format!("[provisioning]\nid_scope = \"s\"\n[attestation]\n{attestation}"),
        );
        let run = run(["register", "--config", config.to_str().unwrap()]);
        run.fails(2, "invalid configuration file");
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(!text.contains(SECRET) && !text.contains("1234567890123"), "{run}");
        assert!(run.error_text().contains("(line 3)"), "the [attestation] section: {run}");
    }
}

#[test]
fn huge_inputs_are_refused_at_a_megabyte() {
    for args in [
        vec!["register", "--config", "/dev/zero"],
        vec![
            "register",
            "--id-scope",
            "s",
            "--symmetric-key",
            DEVICE_KEY,
            "--registration-id",
            "d",
            "--payload",
            "@/dev/zero",
        ],
    ] {
        let run = run(&args);
        run.fails(2, "/dev/zero: it is larger than 1024 KiB");
    }
    // A huge argument is not echoed whole.
    let scope = "s".repeat(100_000);
    let run = run([
        "register",
        "--id-scope",
        &scope,
        "--symmetric-key",
        DEVICE_KEY,
        "--registration-id",
        "d",
    ]);
    run.fails(2, "invalid ID scope");
    assert!(run.stderr.len() < 2_000, "{} bytes", run.stderr.len());
}

#[test]
fn dice_seeds_are_32_bytes_read_strictly_and_the_format_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("root.pem");
    let root = |seed_args: &[&str]| {
        let mut args = vec!["riot", "root", "--out", out.to_str().unwrap()];
        args.extend(seed_args);
        run(&args)
    };
    root(&["--seed-hex", "00"]).fails(
        2,
        "the root seed must be 32 bytes (64 hex digits), got 1 bytes",
    );
    for (name, contents, needle) in [
        ("x.seed", b"x".to_vec(), "holds 1 bytes that are not hex"),
        (
            "short.seed",
            "a".repeat(63).into_bytes(),
            "holds 63 hex digits",
        ),
        (
            "long.seed",
            vec![7u8; 33],
            "holds 33 bytes that are not hex",
        ),
    ] {
        let seed = write(dir.path(), name, contents);
        root(&["--seed-file", seed.to_str().unwrap()]).fails(2, needle);
    }
    let raw = write(dir.path(), "raw.seed", [7u8; 32]);
    let run = root(&["--seed-file", raw.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("(raw bytes)"), "{run}");
    let hex = write(dir.path(), "hex.seed", format!("{}\n", "07".repeat(32)));
    let run = root(&["--seed-file", hex.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("(hex text)"), "{run}");
}

#[test]
fn a_new_seed_is_written_only_when_the_root_can_be_too() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("new.seed");
    let unwritable = dir.path().join("no-such-folder").join("root.pem");
    let run = run([
        "riot",
        "root",
        "--new-seed",
        seed.to_str().unwrap(),
        "--out",
        unwritable.to_str().unwrap(),
    ]);
    run.fails(1, "cannot write");
    assert!(!seed.exists(), "the seed was left behind: {run}");
    // The rerun with a writable output works (no "File exists").
    let out = dir.path().join("root.pem");
    common::run([
        "riot",
        "root",
        "--new-seed",
        seed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&seed).unwrap().trim().len(), 64);
    assert!(out.is_file());
}

#[test]
fn one_sentence_per_cause_and_the_documented_exit_codes() {
    // Doubled prefixes.
    let run = run([
        "symmkey",
        "derive",
        "--group-key",
        GROUP_KEY,
        "--registration-id",
        "a b",
    ]);
    run.fails(2, "invalid registration id");
    assert_eq!(
        run.stderr.matches("invalid registration id").count(),
        1,
        "{run}"
    );
    let run = common::run(["sas", "--resource", "", "--key", DEVICE_KEY]);
    run.fails(2, "the resource is empty");
    assert_eq!(run.stderr.matches("SAS token").count(), 1, "{run}");
    let run = common::run(["pkcs11", "objects", "not-a-uri"]);
    run.fails(2, "invalid PKCS#11 URI");
    assert_eq!(
        run.stderr.matches("invalid PKCS#11 URI").count(),
        1,
        "{run}"
    );
    // A file that is not a PKCS#11 module is the user's mistake, like a missing one.
    common::run([
        "pkcs11",
        "objects",
        "pkcs11:token=t?module-path=/etc/passwd",
    ])
    .fails(2, "cannot load PKCS#11 module /etc/passwd");
    // TPM over MQTT is refused before the (unreachable) TPM is opened.
    common::run([
        "register",
        "--id-scope",
        "s",
        "--tpm",
        "swtpm:host=127.0.0.1,port=1",
        "--transport",
        "mqtt",
    ])
    .fails(2, "no TPM attestation over MQTT");
}

#[test]
fn verbose_output_to_a_file_has_no_colours() {
    let emu = Emu::start(dps_emulator::Emulator::builder().enroll(
        dps_emulator::Enrollment::symmetric_key("mistakes-1", key_pair("mistakes-1", DEVICE_KEY)),
    ));
    let run = run(with(
        emu.register(),
        &[
            "--symmetric-key",
            DEVICE_KEY,
            "--registration-id",
            "mistakes-1",
            "--verbose",
            "--quiet",
        ],
    ));
    run.ok();
    assert!(run.stderr.contains("dps request"), "{run}");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "ANSI escapes in: {:?}",
        run.stderr
    );
}

//! `--help` on every command, `--version`, and clap's usage errors (exit 2).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Every command path, and a phrase its help must contain.
const COMMANDS: &[(&[&str], &str)] = &[
    (&[], "Provision IoT devices"),
    (&["register"], "Choose one attestation"),
    (&["emulator"], "local Device Provisioning Service"),
    (&["riot"], "DICE"),
    (&["riot", "device"], "Alias"),
    (&["riot", "root"], "development root"),
    (&["riot", "verify-cert"], "verification code"),
    (&["pkcs11"], "PKCS#11"),
    (&["pkcs11", "tokens"], "--module"),
    (&["pkcs11", "objects"], "RFC 7512"),
    (&["pkcs11", "generate"], "CKA_SENSITIVE"),
    (&["pkcs11", "csr"], "PKCS#10"),
    (&["pkcs11", "import-cert"], "--chain"),
    (&["tpm"], "TPM"),
    (&["tpm", "info"], "registration id"),
    (&["tpm", "clear-identity"], "Evict"),
    (&["symmkey"], "derive"),
    (&["symmkey", "derive"], "HMAC-SHA256"),
    (&["sas"], "debugging aid"),
];

#[test]
fn every_command_has_help_with_exit_codes() {
    for (path, phrase) in COMMANDS {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let run = run(&args);
        run.ok();
        assert!(run.stderr.is_empty(), "{run}");
        let usage = format!("Usage: hsm-provision {}", path.join(" "));
        assert!(run.stdout.contains(usage.trim_end()), "{run}");
        assert!(run.stdout.contains(phrase), "no {phrase:?} in {run}");
        for code in [
            "Exit codes:",
            "2  usage or configuration error",
            "4  network or timeout",
        ] {
            assert!(run.stdout.contains(code), "no {code:?} in {run}");
        }
    }
}

#[test]
fn short_help_and_help_subcommand_work_too() {
    let run = run(["register", "-h"]);
    run.ok();
    assert!(run.stdout.contains("--symmetric-key"), "{run}");
    let run = common::run(["help", "pkcs11", "csr"]);
    run.ok();
    assert!(run.stdout.contains("--cn <NAME>"), "{run}");
}

#[test]
fn version() {
    let run = run(["--version"]);
    run.ok();
    assert_eq!(
        run.stdout.trim(),
        concat!("hsm-provision ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_arguments_are_clap_usage_errors() {
    for args in [
        &["--bogus"][..],
        &["register", "--no-such-flag"],
        &["frobnicate"],
        &["sas", "--resource", "r"],
        &["register", "--transport", "carrier-pigeon"],
        &["register", "--timeout", "soon"],
        &["riot", "device", "--fwid-hex", "00", "--out-dir", "x"],
        &[
            "pkcs11",
            "generate",
            "pkcs11:token=t;object=k",
            "--algorithm",
            "dsa",
        ],
        &["tpm", "clear-identity", "--handle", "zz"],
        &[
            "sas",
            "--resource",
            "r",
            "--key",
            "AA==",
            "--expiry-secs",
            "1",
            "--expiry-at",
            "2",
        ],
    ] {
        let run = run(args);
        run.code(2);
        assert!(run.stdout.is_empty(), "{run}");
        assert!(run.stderr.starts_with("error: "), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
}

#[test]
fn no_command_prints_help_and_exits_2() {
    let run = run::<[&str; 0], &str>([]);
    run.code(2);
    assert!(
        run.stderr.contains("Usage: hsm-provision <COMMAND>"),
        "{run}"
    );
}

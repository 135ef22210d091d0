//! `hsm-provision conformance`: the hsm-testkit conformance suite against a key the user names
//! (on a PKCS#11 token, in a TPM, in a file), without writing Rust: every check the driver
//! crates' own tests run, one line each and a summary, exit 0 only when all pass.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hsm_core::{KeyAlgorithm, KeyHandle, KeyLabel, KeyStore};
use hsm_testkit::Subject;
use hsm_testkit::key_store::StoreSubject;
use hsm_testkit::pki::TestCa;
use serde_json::json;

use crate::Error;
use crate::device::pkcs11::{Pkcs11Options, open_token, parse_uri};

pub(crate) const CONFORMANCE_ABOUT: &str = "\
Run the conformance suite every driver of this workspace passes against a key you name: a key
on a PKCS#11 token (--pkcs11 URI), a key in a TPM (--tpm TCTI with --tpm-key-handle), or a key
file (--x509-key). Signatures for every scheme the key offers are verified independently
(RustCrypto, webpki); a certificate and a CSR made through the key are checked with openssl;
mutual TLS 1.3 and 1.2 runs against rustls and a real `openssl s_server`; eight threads sign at
once; unsupported schemes must be typed errors; no secret (the PIN, the key file's lines) may
show in Debug output (not applicable to a TPM key: no secret of it is in the process).

The key is certified by a CA made for the run: nothing is written to the token or TPM. With
--allow-writes the runner also makes its own test objects (a key when none is named, and the
key-store checks: generate, find, store a chain, delete) and deletes them afterwards.

Prints one line per check and a summary (--json: one object); exits 0 only when every check
passed, 1 when one failed (it is named), 2 for bad arguments, 3 when the key cannot be opened.";

/// `conformance`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// A key on a PKCS#11 token: pkcs11:token=...;object=... (with --allow-writes the object may
    /// be left out: the runner makes one).
    #[arg(long, value_name = "URI", conflicts_with_all = ["tpm", "x509_key"])]
    pkcs11: Option<String>,
    #[command(flatten)]
    pkcs11_options: Pkcs11Options,
    /// A TPM, by TCTI (device:/dev/tpmrm0, tabrmd, swtpm:host=...,port=...).
    #[arg(long, value_name = "TCTI", conflicts_with = "x509_key")]
    tpm: Option<String>,
    /// The persistent handle of the TPM key to test (0x81...); without it, --allow-writes makes
    /// one.
    #[arg(long, value_name = "HANDLE", requires = "tpm")]
    tpm_key_handle: Option<String>,
    /// A private key file (PEM or DER; hsm-x509).
    #[arg(long, value_name = "FILE")]
    x509_key: Option<PathBuf>,
    /// Let the runner create (and then delete) its own test objects on the token or TPM.
    #[arg(long)]
    allow_writes: bool,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// A check's outcome.
struct Outcome {
    name: &'static str,
    passed: bool,
    /// Why it failed, or why it does not apply.
    message: Option<String>,
    /// It does not apply to this key (and counts as passed).
    not_applicable: bool,
    took: Duration,
}

/// A check that has nothing to test for this key, said so on its own line.
fn not_applicable(name: &'static str, reason: &str, quiet: bool) -> Outcome {
    if !quiet {
        println!("N/A   {name}: {reason}");
    }
    Outcome {
        name,
        passed: true,
        message: Some(reason.to_owned()),
        not_applicable: true,
        took: Duration::ZERO,
    }
}

/// Opens the key store again, as another process would.
type Reopen = Box<dyn Fn() -> Arc<dyn KeyStore> + Send + Sync>;
/// Removes what the run made.
type Cleanup = Box<dyn FnOnce()>;

/// What the run tests, and what it cleans up afterwards.
struct Target {
    description: String,
    key: Arc<dyn KeyHandle>,
    secrets: Vec<String>,
    debug_views: Vec<String>,
    store: Option<(Arc<dyn KeyStore>, Reopen)>,
    algorithms: Vec<KeyAlgorithm>,
    cleanup: Option<Cleanup>,
}

/// Runs `conformance`.
pub(crate) fn run(args: &ConformanceArgs) -> Result<(), Error> {
    let mut target = open(args)?;
    let ca = TestCa::new("hsm-provision conformance CA");
    let chain = ca.certify_handle(&target.key, "hsm-conformance");
    let subject = Subject {
        name: target.description.clone(),
        key: target.key.clone(),
        chain,
        trust_anchor: ca.cert().clone(),
        secrets: target.secrets.clone(),
        debug_views: target.debug_views.clone(),
    };
    let mut outcomes = Vec::new();
    for (name, check) in hsm_testkit::checks::all() {
        if name == "debug_output_is_redacted" && subject.secrets.is_empty() {
            outcomes.push(not_applicable(
                name,
                "no secret of this key is held in this process (it stays in the HSM)",
                args.json,
            ));
            continue;
        }
        outcomes.push(run_check(name, args.json, || check(&subject)));
    }
    if let Some((store, reopen)) = target.store.take() {
        let store_subject = StoreSubject {
            name: target.description.clone(),
            store,
            reopen,
            algorithms: target.algorithms.clone(),
            unsupported: Vec::new(),
        };
        for (name, check) in hsm_testkit::key_store::all() {
            outcomes.push(run_check(name, args.json, || check(&store_subject)));
        }
    }
    if let Some(cleanup) = target.cleanup {
        cleanup();
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if args.json {
        println!(
            "{}",
            json!({
                "subject": target.description,
                "passed": outcomes.len() - failed,
                "failed": failed,
                "checks": outcomes.iter().map(|o| json!({
                    "name": o.name,
                    "passed": o.passed,
                    "notApplicable": o.not_applicable,
                    "message": o.message,
                    "seconds": o.took.as_secs_f64(),
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        let not_applicable = outcomes.iter().filter(|o| o.not_applicable).count();
        println!(
            "\n{} passed{}, {failed} failed: {}",
            outcomes.len() - failed,
            if not_applicable > 0 {
                format!(" ({not_applicable} not applicable)")
            } else {
                String::new()
            },
            target.description
        );
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(Error::Conformance {
            failed: outcomes
                .iter()
                .filter(|o| !o.passed)
                .map(|o| o.name)
                .collect(),
        })
    }
}

/// Runs one check, catching its panic (the check's failure) and its message.
fn run_check(name: &'static str, quiet: bool, check: impl FnOnce()) -> Outcome {
    let message = Arc::new(Mutex::new(None::<String>));
    let captured = message.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_else(|| info.to_string());
        let mut slot = captured.lock().unwrap_or_else(|e| e.into_inner());
        // The first panic is the cause (a thread's, before the join that repeats it).
        slot.get_or_insert(text);
    }));
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(check));
    let took = started.elapsed();
    std::panic::set_hook(previous);
    let message = message.lock().unwrap_or_else(|e| e.into_inner()).take();
    let passed = result.is_ok();
    if !quiet {
        match (&message, passed) {
            (_, true) => println!("PASS  {name}  ({:.2} s)", took.as_secs_f64()),
            (Some(text), false) => println!(
                "FAIL  {name}: {}",
                hsm_core::untrusted::printable(text.lines().next().unwrap_or_default())
            ),
            (None, false) => println!("FAIL  {name}"),
        }
    }
    Outcome {
        name,
        passed,
        message: (!passed).then(|| message.unwrap_or_default()),
        not_applicable: false,
        took,
    }
}

/// Opens what the arguments name.
fn open(args: &ConformanceArgs) -> Result<Target, Error> {
    match (&args.pkcs11, &args.tpm, &args.x509_key) {
        (Some(uri), None, None) => open_pkcs11(args, uri),
        (None, Some(tcti), None) => open_tpm(args, tcti),
        (None, None, Some(file)) => {
            let description = format!("the key file {}", file.display());
            let bytes = zeroize::Zeroizing::new(crate::util::read(file)?);
            let key =
                hsm_x509::SoftwareKey::from_bytes(&bytes, None).map_err(|source| Error::X509 {
                    operation: "cannot load the key file",
                    source,
                })?;
            let secrets = String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned)
                .collect();
            let folder = tempfile::tempdir().map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
            let path = folder.path().to_owned();
            let store = (args.allow_writes).then(|| {
                let open = move || -> Arc<dyn KeyStore> {
                    Arc::new(
                        hsm_x509::KeyFolder::open(&path)
                            .unwrap_or_else(|e| panic!("cannot open the key folder: {e}")),
                    )
                };
                (open(), Box::new(open) as Reopen)
            });
            Ok(Target {
                description,
                key: Arc::new(key),
                secrets,
                debug_views: Vec::new(),
                store,
                algorithms: vec![KeyAlgorithm::EcdsaP256],
                cleanup: Some(Box::new(move || drop(folder))),
            })
        }
        _ => Err(Error::usage(
            "name one key: --pkcs11 URI, --tpm TCTI (with --tpm-key-handle or --allow-writes), or --x509-key FILE",
        )),
    }
}

fn open_pkcs11(args: &ConformanceArgs, text: &str) -> Result<Target, Error> {
    let uri = parse_uri(text)?;
    let token = open_token(&uri, &args.pkcs11_options)?;
    let pkcs11 = |operation, source| Error::Pkcs11 { operation, source };
    // What the runner makes: P-256 where the token generates EC keys, else RSA-2048
    // (opencryptoki's soft token).
    let algorithms = if token.offers(hsm_pkcs11::MechanismType::ECC_KEY_PAIR_GEN) {
        vec![KeyAlgorithm::EcdsaP256]
    } else {
        vec![KeyAlgorithm::Rsa { bits: 2048 }]
    };
    let made =
        KeyLabel::new(format!("hsm-conformance-{}", std::process::id())).map_err(|source| {
            Error::Core {
                operation: "the test key's label",
                source,
            }
        })?;
    let (key, cleanup): (Arc<dyn KeyHandle>, Option<Cleanup>) = if uri.object.is_some()
        || uri.id.is_some()
    {
        let key = hsm_pkcs11::Pkcs11Key::open(&token, &uri)
            .map_err(|e| pkcs11("cannot open the key", e))?;
        (Arc::new(key), None)
    } else if args.allow_writes {
        let key = token
            .generate(&made, algorithms[0])
            .map_err(|source| Error::Core {
                operation: "cannot make a test key on the token",
                source,
            })?;
        let (token, label) = (token.clone(), made.clone());
        (
            key,
            Some(Box::new(move || {
                let _ = token.delete(&label);
            })),
        )
    } else {
        return Err(Error::usage(
            "the URI names no key (object= or id=): name one, or give --allow-writes to let the runner make one",
        ));
    };
    let mut secrets = Vec::new();
    if let Some(pin) = &uri.pin_value {
        secrets.push(pin.expose().to_owned());
    }
    // Wherever the PIN came from, it must not show.
    let pin_files = [args.pkcs11_options.pin_file.clone(), uri.pin_source.clone()];
    for path in pin_files.iter().flatten() {
        if let Ok(text) = std::fs::read_to_string(path) {
            secrets.push(text.lines().next().unwrap_or_default().to_owned());
        }
    }
    if let Ok(pin) = std::env::var("PKCS11_PIN") {
        secrets.push(pin);
    }
    secrets.retain(|s| s.len() >= 4);
    let store = args.allow_writes.then(|| {
        let (text, options) = (text.to_owned(), args.pkcs11_options.clone());
        let reopen = move || -> Arc<dyn KeyStore> {
            let uri =
                parse_uri(&text).unwrap_or_else(|e| panic!("cannot parse the URI again: {e}"));
            Arc::new(
                open_token(&uri, &options)
                    .unwrap_or_else(|e| panic!("cannot open the token again: {e}")),
            )
        };
        (
            Arc::new(token.clone()) as Arc<dyn KeyStore>,
            Box::new(reopen) as Reopen,
        )
    });
    Ok(Target {
        description: format!(
            "PKCS#11 token '{}' ({})",
            token.label(),
            token.module().path().display()
        ),
        debug_views: vec![format!("{token:?}"), format!("{key:?}")],
        key,
        secrets,
        store,
        algorithms,
        cleanup,
    })
}

#[cfg(feature = "tpm")]
fn open_tpm(args: &ConformanceArgs, tcti: &str) -> Result<Target, Error> {
    use hsm_tpm::{KeySpec, PersistentHandle, TpmKey};
    let tpm = crate::device::tpm::open_tpm(Some(tcti))?;
    let tpm_error = |operation, source| Error::Tpm { operation, source };
    let (key, cleanup): (Arc<dyn KeyHandle>, Option<Cleanup>) = match &args.tpm_key_handle {
        Some(text) => {
            let handle: PersistentHandle = text
                .parse()
                .map_err(|e| tpm_error("invalid --tpm-key-handle", e))?;
            let key =
                TpmKey::open(&tpm, handle).map_err(|e| tpm_error("cannot open the key", e))?;
            (Arc::new(key), None)
        }
        None if args.allow_writes => {
            let in_use = tpm
                .persistent_handles()
                .map_err(|e| tpm_error("cannot list the persistent handles", e))?;
            let handle = (0x8100_0600..=0x8100_06FF)
                .filter_map(|h| PersistentHandle::new(h).ok())
                .find(|h| !in_use.contains(h))
                .ok_or_else(|| Error::usage("no free handle in 0x81000600..=0x810006FF"))?;
            let key = TpmKey::create(&tpm, KeySpec::EcdsaP256, handle)
                .map_err(|e| tpm_error("cannot make a test key in the TPM", e))?;
            let tpm2 = tpm.clone();
            (
                Arc::new(key),
                Some(Box::new(move || {
                    let _ = tpm2.evict(handle);
                })),
            )
        }
        None => {
            return Err(Error::usage(
                "give --tpm-key-handle, or --allow-writes to let the runner make a key",
            ));
        }
    };
    let store = if args.allow_writes {
        let folder = tempfile::tempdir().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let path = folder.keep();
        let tpm2 = tpm.clone();
        let open = move || -> Arc<dyn KeyStore> {
            Arc::new(
                hsm_tpm::TpmKeyStore::open(&tpm2, &path)
                    .and_then(|s| s.handles(0x8100_0700..=0x8100_070F))
                    .unwrap_or_else(|e| panic!("cannot open the TPM key store: {e}")),
            )
        };
        Some((open(), Box::new(open) as Reopen))
    } else {
        None
    };
    Ok(Target {
        description: format!("the TPM at {tcti}"),
        debug_views: vec![format!("{key:?}")],
        key,
        secrets: Vec::new(),
        store,
        algorithms: vec![KeyAlgorithm::EcdsaP256],
        cleanup,
    })
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(_args: &ConformanceArgs, _tcti: &str) -> Result<Target, Error> {
    Err(Error::usage(crate::device::tpm::NO_TPM_SUPPORT))
}

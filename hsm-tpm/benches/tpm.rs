//! hsm-tpm on swtpm, in one run, each figure a ratio against a baseline measured alongside it
//! (paired rounds, alternating order, median of the per-round ratios):
//!
//! 0. (for reading the others) what a call through a `Tpm` costs beyond its TPM command: taking
//!    the connection's lock and answering from a cached property;
//! 1. HMACs/s through `TpmIdentity::sign_with_identity` vs a bare tss-esapi `TPM2_HMAC` loop
//!    (goal >= 0.90);
//! 2. ECDSA P-256 signs/s through the `TpmKey` handle vs a bare tss-esapi `TPM2_Sign` loop over a
//!    precomputed digest (goal >= 0.90);
//! 3. TLS 1.3 mutual-auth handshakes/s with the client key in the TPM vs the same kind of key in
//!    memory (goal >= 0.55).
//!
//! swtpm serves one connection at a time, so the driver disconnects while the bare loop runs and
//! reconnects (untimed, in a warm-up call) afterwards.
//!
//! Run: `cargo bench -p hsm-tpm --bench tpm` (needs swtpm and tpm2-tools; `./scripts/test.sh`
//! installs them). Under `cargo test --benches` it does a short smoke run.
// A benchmark harness: an `expect` is a failed set-up, reported with what failed.
#![allow(clippy::expect_used)]

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_core::{KeyHandle, RcgenSigner, SignatureScheme};
use hsm_testkit::report::{self, Goal};
use hsm_testkit::swtpm::Swtpm;
use hsm_testkit::tls::{self, RustlsServer, Version};
use hsm_tpm::{KeySpec, PersistentHandle, Tpm, TpmIdentity, TpmKey};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::Resumption;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};
use sha2::Digest as _;
use tls_bridge::TlsIdentity;
use tss_esapi::Context;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle as EsysKey, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, HashScheme, MaxBuffer, SignatureScheme as TpmScheme};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

struct Settings {
    rounds: usize,
    hmacs: usize,
    signs: usize,
    handshakes: usize,
}

const SAS: &[u8] = b"0ne00000001%2fregistrations%2fdevice-1\n1700000000";
const MESSAGE: &[u8] = b"a TLS 1.3 CertificateVerify is about this long: 130 bytes of context string, padding and transcript hash .......";

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let settings = if quick {
        Settings {
            rounds: 1,
            hmacs: 20,
            signs: 10,
            handshakes: 3,
        }
    } else {
        Settings {
            rounds: 11,
            hmacs: 2000,
            signs: 500,
            handshakes: 60,
        }
    };

    let swtpm = Swtpm::start();
    let tcti = swtpm.tcti();
    let tpm = Tpm::open(tcti.parse().expect("TCTI")).expect("connect to swtpm");
    let identity = TpmIdentity::open(&tpm).expect("EK and SRK");
    let hmac_key = sha2::Sha256::digest(b"bench identity key").to_vec();
    let blob = tpm_wire::build_activation(
        identity.endorsement_key(),
        identity.storage_root_key(),
        &hmac_key,
    )
    .and_then(|b| b.to_bytes())
    .expect("activation blob");
    identity.activate_identity_key(&blob).expect("activate");
    let key_handle = PersistentHandle::new(0x8100_0010).expect("handle");
    let key = Arc::new(TpmKey::create(&tpm, KeySpec::EcdsaP256, key_handle).expect("ECC key"));

    println!("hsm-tpm on swtpm, {} rounds", settings.rounds);
    call_overhead(&settings, &tpm);
    hmac_ratio(&settings, &tpm, &identity, &tcti);
    let tpm_signs = sign_ratio(&settings, &tpm, &key, &tcti);
    handshake_ratio(&settings, &key, tpm_signs);
}

/// What a `Tpm` adds to every call: a call that sends no TPM command.
fn call_overhead(settings: &Settings, tpm: &Tpm) {
    let calls = settings.hmacs * 5;
    let mut micros = Vec::new();
    for _ in 0..settings.rounds {
        let start = Instant::now();
        for _ in 0..calls {
            tpm.input_buffer_size().expect("cached property");
        }
        micros.push(start.elapsed().as_secs_f64() * 1e6 / calls as f64);
    }
    println!(
        "0. a call without a TPM command: {:.2} us (median)",
        median(micros)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per-second rate of `count` operations taking `elapsed`.
fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Runs `rounds` pairs of (baseline, ours), alternating which goes first; returns the medians
/// of the baseline rates, our rates and the per-round ratios ours/baseline.
fn paired(
    rounds: usize,
    mut baseline: impl FnMut() -> f64,
    mut ours: impl FnMut() -> f64,
) -> (f64, f64, f64) {
    baseline();
    ours();
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = baseline();
            (x, ours())
        } else {
            let y = ours();
            (baseline(), y)
        };
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    (median(a), median(b), median(ratios))
}

/// A bare tss-esapi context on the swtpm and the ESYS handle of a persistent object.
fn bare(tcti: &str, handle: PersistentHandle) -> (Context, ObjectHandle) {
    let mut context =
        Context::new(TctiNameConf::from_str(tcti).expect("TCTI")).expect("bare context");
    let object = context
        .tr_from_tpm_public(TpmHandle::try_from(handle.value()).expect("handle"))
        .expect("persistent object");
    (context, object)
}

fn hmac_ratio(settings: &Settings, tpm: &Tpm, identity: &TpmIdentity, tcti: &str) {
    let bare_loop = || {
        tpm.disconnect().expect("disconnect");
        let (mut context, key) = bare(tcti, identity.identity_handle());
        let start = Instant::now();
        for _ in 0..settings.hmacs {
            let buffer = MaxBuffer::try_from(SAS).expect("buffer");
            context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.hmac(key, buffer, HashingAlgorithm::Sha256)
                })
                .expect("bare HMAC");
        }
        rate(settings.hmacs, start.elapsed())
    };
    let ours = || {
        identity.sign_with_identity(SAS).expect("warm-up HMAC");
        let start = Instant::now();
        for _ in 0..settings.hmacs {
            identity.sign_with_identity(SAS).expect("HMAC");
        }
        rate(settings.hmacs, start.elapsed())
    };
    let (bare, ours, ratio) = paired(settings.rounds, bare_loop, ours);
    println!(
        "1. HMAC-SHA256/s: sign_with_identity {ours:.0}, bare tss-esapi TPM2_HMAC {bare:.0}: ratio {ratio:.3} (goal >= 0.90)"
    );
    report::row(
        "hsm-tpm",
        "HMAC-SHA256/s on swtpm: sign_with_identity / bare tss-esapi",
        &format!("{ours:.0}/s"),
        &format!("{bare:.0}/s"),
        ratio,
        Goal::AtLeast(0.9),
    );
}

/// Returns the median rate of signs through the handle.
fn sign_ratio(settings: &Settings, tpm: &Tpm, key: &Arc<TpmKey>, tcti: &str) -> f64 {
    let digest = sha2::Sha256::digest(MESSAGE).to_vec();
    let bare_loop = || {
        tpm.disconnect().expect("disconnect");
        let (mut context, object) = bare(tcti, key.handle());
        let key = EsysKey::from(object);
        let scheme = TpmScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let start = Instant::now();
        for _ in 0..settings.signs {
            let ticket = TPMT_TK_HASHCHECK {
                tag: TPM2_ST_HASHCHECK,
                hierarchy: TPM2_RH_NULL,
                digest: Default::default(),
            };
            let digest = Digest::try_from(digest.as_slice()).expect("digest");
            context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.sign(key, digest, scheme, ticket.try_into().expect("ticket"))
                })
                .expect("bare sign");
        }
        rate(settings.signs, start.elapsed())
    };
    let ours = || {
        key.sign(SignatureScheme::EcdsaP256Sha256, MESSAGE)
            .expect("warm-up sign");
        let start = Instant::now();
        for _ in 0..settings.signs {
            key.sign(SignatureScheme::EcdsaP256Sha256, MESSAGE)
                .expect("sign");
        }
        rate(settings.signs, start.elapsed())
    };
    let (bare, ours, ratio) = paired(settings.rounds, bare_loop, ours);
    println!(
        "2. ECDSA P-256 signs/s: TpmKey handle {ours:.0}, bare tss-esapi TPM2_Sign {bare:.0}: ratio {ratio:.3} (goal >= 0.90)"
    );
    report::row(
        "hsm-tpm",
        "ECDSA P-256 signs/s on swtpm: handle / bare tss-esapi",
        &format!("{ours:.0}/s"),
        &format!("{bare:.0}/s"),
        ratio,
        Goal::AtLeast(0.9),
    );
    ours
}

/// `tpm_signs`: signs/s through the handle, for the ratio to expect from the sign's cost alone.
fn handshake_ratio(settings: &Settings, key: &Arc<TpmKey>, tpm_signs: f64) {
    // One CA certifies both clients: the TPM key, and a software key of the same kind.
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hsm-tpm bench root");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = || {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "bench-device");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params
    };
    let handle: Arc<dyn KeyHandle> = key.clone();
    let tpm_leaf = leaf_params()
        .signed_by(&RcgenSigner::new(handle.clone()).expect("signer"), &issuer)
        .expect("TPM leaf");
    let memory_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let memory_leaf = leaf_params()
        .signed_by(&memory_key, &issuer)
        .expect("memory leaf");

    let server = RustlsServer::start(ca_cert.der(), Version::Tls13);
    let mut roots = RootCertStore::empty();
    roots.add(server.server_root().clone()).expect("root");
    let mut memory = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            vec![memory_leaf.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(memory_key.serialize_der())),
        )
        .expect("client auth");
    memory.resumption = Resumption::disabled();
    let mut in_tpm = TlsIdentity::new(handle, vec![tpm_leaf.der().clone(), ca_cert.der().clone()])
        .expect("identity")
        .client_config_with(tls::provider(), &[&rustls::version::TLS13], roots)
        .expect("config");
    in_tpm.resumption = Resumption::disabled();
    let (memory, in_tpm) = (Arc::new(memory), Arc::new(in_tpm));
    let run = |config: &Arc<ClientConfig>| {
        let start = Instant::now();
        for _ in 0..settings.handshakes {
            let outcome = tls::connect(config.clone(), server.addr(), b"x").expect("handshake");
            assert!(outcome.reply.starts_with("verified "), "{}", outcome.reply);
        }
        rate(settings.handshakes, start.elapsed())
    };
    let (mem, ours, ratio) = paired(settings.rounds, || run(&memory), || run(&in_tpm));

    // What to expect: a handshake in memory with its sign swapped for the TPM's, nothing else.
    let memory_signer = tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            memory_key.serialize_der(),
        )))
        .expect("in-memory key")
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("ECDSA scheme");
    let signs = settings.signs * 4;
    let start = Instant::now();
    for _ in 0..signs {
        memory_signer.sign(MESSAGE).expect("in-memory sign");
    }
    let memory_sign = start.elapsed().as_secs_f64() / signs as f64;
    let expected = (1.0 / mem) / (1.0 / mem - memory_sign + 1.0 / tpm_signs);
    println!(
        "3. TLS 1.3 mutual-auth handshakes/s: key in the TPM {ours:.0}, key in memory {mem:.0}: ratio {ratio:.3} (goal >= 0.55; {expected:.3} expected if the sign were the only difference: {:.0} us in the TPM vs {:.0} us in memory)",
        1e6 / tpm_signs,
        memory_sign * 1e6
    );
    report::row(
        "hsm-tpm",
        "TLS 1.3 handshakes/s: key in swtpm / in memory",
        &format!("{ours:.0}/s"),
        &format!("{mem:.0}/s"),
        ratio,
        Goal::AtLeast(0.55),
    );
}

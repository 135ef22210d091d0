//! Test certificate authorities and identities made at run time with rcgen and software keys,
//! for the TLS servers the suite runs and for clients in examples and benchmarks.

use hsm_core::CertificateDer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority with a software key.
pub struct TestCa {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate chain and its software private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then the issuing CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain as PEM.
    pub chain_pem: String,
    /// The private key as PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The private key as PKCS#8 PEM.
    pub key_pem: String,
}

impl Identity {
    /// The private key in rustls's type.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl TestCa {
    /// A new root CA with a fresh P-256 key.
    ///
    /// # Panics
    /// If rcgen fails, which is a bug in the test setup.
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A TLS server identity for `localhost` and `127.0.0.1` with a P-256 key.
    ///
    /// # Panics
    /// If rcgen fails.
    pub fn issue_server(&self) -> Identity {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// A TLS client identity with a fresh software key of the given algorithm
    /// (`rcgen::PKCS_ECDSA_P256_SHA256`, `PKCS_ECDSA_P384_SHA384`, `PKCS_ED25519`, ...).
    ///
    /// # Panics
    /// If rcgen fails.
    pub fn issue_client(
        &self,
        common_name: &str,
        algorithm: &'static SignatureAlgorithm,
    ) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, algorithm)
    }

    /// A client certificate for the key behind `key` (a handle: the CA signs the handle's
    /// public key; nothing is signed by the handle). Returns the chain, leaf first.
    ///
    /// # Panics
    /// If rcgen fails.
    pub fn certify_handle(
        &self,
        key: &std::sync::Arc<dyn hsm_core::KeyHandle>,
        common_name: &str,
    ) -> Vec<CertificateDer<'static>> {
        let public = hsm_core::RcgenSigner::new(key.clone()).expect("the handle as rcgen's key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&public, &self.issuer)
            .expect("leaf certificate");
        vec![cert.der().clone(), self.cert.clone()]
    }

    fn issue(&self, params: CertificateParams, algorithm: &'static SignatureAlgorithm) -> Identity {
        let key = KeyPair::generate_for(algorithm).expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Identity {
            chain: vec![cert.der().clone(), self.cert.clone()],
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// PEM text of one certificate.
pub fn cert_pem(cert: &CertificateDer<'_>) -> String {
    let b64 = base64_encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Standard base64 with padding (a dependency-free encoder; test use only).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

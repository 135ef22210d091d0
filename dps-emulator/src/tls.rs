//! The emulator's CA, its TLS server certificate, certificate issuance from CSRs, and the
//! client-certificate policy (requested, optional, checked later against enrollments).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::OffsetDateTime;

use crate::Error;

/// The emulator's certificate authority: it signs the TLS server certificate and the device
/// certificates issued from CSRs. Clients trust its certificate.
pub(crate) struct Ca {
    certificate: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn cert_err(operation: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Certificate { operation, source }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing OS RNG leaves a zero serial: harmless for a test CA.
    let _ = getrandom::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl Ca {
    /// A fresh P-256 CA.
    pub(crate) fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(cert_err("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "dps-emulator CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        // Self-signed: the authority key identifier names its own key, as strict verifiers
        // (openssl verify -x509_strict) expect of every certificate in a chain.
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 3650);
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("self-sign the CA certificate"))?;
        Ok(Self {
            certificate: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from PEM files' contents (certificate and PKCS#8 key), so clients can keep trusting
    /// it across restarts.
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err("read the CA key"))?;
        let certificate = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Config {
                path: None,
                reason: format!("the CA certificate is not usable: {}", pem_problem(&e)),
            })?;
        let issuer = Issuer::from_ca_cert_der(&certificate, key)
            .map_err(cert_err("read the CA certificate"))?;
        Ok(Self {
            certificate,
            pem: cert_pem.to_owned(),
            issuer,
        })
    }

    pub(crate) fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate for these DNS names / IP addresses (each once, in the order first
    /// given), with its key.
    pub(crate) fn issue_server(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let key = KeyPair::generate().map_err(cert_err("generate the server key"))?;
        let mut unique: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            if !unique.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                unique.push(name.clone());
            }
        }
        let mut params =
            CertificateParams::new(unique).map_err(cert_err("use the server names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "dps-emulator");
        end_entity(&mut params, ExtendedKeyUsagePurpose::ServerAuth);
        validity(&mut params, 825);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err("sign the server certificate"))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.certificate.clone()], key_der))
    }

    /// Issues a device certificate from a PKCS#10 CSR whose CN must be `registration_id`.
    /// Returns the chain, leaf first.
    pub(crate) fn issue_from_csr(
        &self,
        csr_der: &[u8],
        registration_id: &str,
        valid_for: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, CsrError> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der);
        let mut csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CsrError::Signature,
            _ => CsrError::Malformed,
        })?;
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(dn_text);
        if cn.as_deref() != Some(registration_id) {
            return Err(CsrError::CommonName);
        }
        let params = &mut csr.params;
        end_entity(params, ExtendedKeyUsagePurpose::ClientAuth);
        params.subject_alt_names.clear();
        // Valid from a little before now (a device clock slightly behind still accepts it),
        // for exactly `valid_for` after now: seconds in tests, days in real use.
        let now = OffsetDateTime::now_utc();
        let seconds = i64::try_from(valid_for.as_secs())
            .unwrap_or(i64::MAX / 2)
            .max(1);
        params.not_before = now - time::Duration::seconds((seconds / 4).min(3600));
        params.not_after = now + time::Duration::seconds(seconds);
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|_| CsrError::Malformed)?;
        Ok(vec![cert.der().clone(), self.certificate.clone()])
    }
}

/// An end-entity certificate as strict verifiers want it: `CA:FALSE`, digital signature, the
/// one extended key usage, subject and authority key identifiers, a random serial.
fn end_entity(params: &mut CertificateParams, usage: ExtendedKeyUsagePurpose) {
    // ExplicitNoCa writes basic constraints CA:FALSE and the subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
}

/// What is wrong with a PEM file, in words (the parser's own messages name its variants:
/// `base64 decode error: InvalidCharacter(33)`).
pub(crate) fn pem_problem(error: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error as E;
    match error {
        E::MissingSectionEnd { .. } => "a PEM section has no END line",
        E::IllegalSectionStart { .. } => "a line that starts a PEM section is malformed",
        E::Base64Decode(_) => "the base64 inside a PEM section is invalid",
        E::NoItemsFound => "it holds no certificate",
        E::SectionTooLarge => "a PEM section is too large",
        _ => "it is not valid PEM",
    }
}

fn dn_text(value: &rcgen::DnValue) -> Option<String> {
    match value {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Why a CSR was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CsrError {
    Malformed,
    Signature,
    CommonName,
}

/// Builds the server TLS configuration: our chain, client certificates requested but optional.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, Error> {
    let verifier = Arc::new(OptionalClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Asks for a client certificate, accepts any chain whose holder proves possession of the leaf
/// key in the handshake, and leaves the chain's trust to the enrollment check (a device's CA is
/// known only once we know which enrollment it claims).
#[derive(Debug)]
struct OptionalClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

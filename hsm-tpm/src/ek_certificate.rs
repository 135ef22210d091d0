//! The EK certificate a TPM's manufacturer stored in NV (TCG EK Credential Profile 2.0,
//! section 2.2.1.5): what enrolment tooling uploads to vouch for the EK, read and checked to
//! certify the EK the TPM has.

use der::{Decode as _, Encode as _};
use hsm_core::CertificateDer;
use tss_esapi::abstraction::nv;
use tss_esapi::handles::NvIndexTpmHandle;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;

use crate::error::TssError;
use crate::{Error, TpmIdentity};

/// Where the profile puts EK certificates: the NV index and the key it certifies.
pub const EK_CERTIFICATE_INDICES: [(u32, &str); 3] = [
    (0x01c0_0002, "RSA 2048"),
    (0x01c0_000a, "ECC NIST P-256"),
    (0x01c0_0016, "ECC NIST P-384"),
];

/// An EK certificate read from NV.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EkCertificate {
    /// Its NV index (`0x01c00002`, `0x01c0000a`, ...).
    pub index: u32,
    /// The key the index is for (`"RSA 2048"`, ...).
    pub key: &'static str,
    /// The certificate, DER (NV areas are sized to the certificate; any padding is cut).
    pub certificate: CertificateDer<'static>,
    /// Whether it certifies the EK this identity uses (its public key is the EK's, byte for
    /// byte); `None` for a certificate of another key type (the ECC EK's, when the identity
    /// uses the RSA EK), which is not derived to compare.
    pub certifies_ek: Option<bool>,
    /// Its issuer (the manufacturer's CA), RFC 4514.
    pub issuer: String,
    /// Its subject, RFC 4514 (often empty: the profile puts the TPM's identity in the subject
    /// alternative name).
    pub subject: String,
    /// The end of its validity, seconds since the Unix epoch.
    pub not_after: u64,
}

impl TpmIdentity {
    /// The EK certificates in NV, each checked against this identity's EK. Empty when the
    /// manufacturer stored none (a bare swtpm; `swtpm_setup --create-ek-cert` makes them).
    ///
    /// # Errors
    /// [`Error::Tpm`] when an index exists but cannot be read (owner authorisation is not
    /// the empty password); [`Error::MalformedPublic`] for an index that holds no DER
    /// certificate; [`Error::Unavailable`].
    pub fn ek_certificates(&self) -> Result<Vec<EkCertificate>, Error> {
        // The EK's SPKI and its algorithm identifier (with the curve, for ECC).
        let ek = self.ek_spki()?.and_then(|spki| {
            let parsed = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spki).ok()?;
            let algorithm = parsed.algorithm.to_der().ok()?;
            Some((spki, algorithm))
        });
        self.tpm().run("read the EK certificates", move |conn| {
            let mut found = Vec::new();
            for (index, key) in EK_CERTIFICATE_INDICES {
                let handle = NvIndexTpmHandle::new(index)
                    .map_err(Error::tpm("read the EK certificates", "NV index"))?;
                let read = conn
                    .context()?
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        nv::read_full(ctx, NvAuth::Owner, handle)
                    });
                let bytes = match read {
                    Ok(bytes) => bytes,
                    Err(e) if TssError::from(e).tpm_rc().is_some_and(is_absent) => continue,
                    Err(e) => {
                        return Err(Error::tpm("read an EK certificate", "TPM2_NV_Read")(e));
                    }
                };
                let certificate =
                    x509_cert::Certificate::from_der(&der_prefix(&bytes)).map_err(|_| {
                        Error::MalformedPublic {
                            what: "the EK certificate in NV",
                        }
                    })?;
                let tbs = certificate.tbs_certificate();
                let algorithm = tbs
                    .subject_public_key_info()
                    .algorithm
                    .to_der()
                    .map_err(|_| Error::MalformedPublic {
                        what: "the EK certificate's public key",
                    })?;
                let spki =
                    tbs.subject_public_key_info()
                        .to_der()
                        .map_err(|_| Error::MalformedPublic {
                            what: "the EK certificate's public key",
                        })?;
                found.push(EkCertificate {
                    index,
                    key,
                    certificate: CertificateDer::from(der_prefix(&bytes)),
                    certifies_ek: ek
                        .as_ref()
                        .filter(|(_, ek_algorithm)| *ek_algorithm == algorithm)
                        .map(|(ek, _)| *ek == spki),
                    issuer: tbs.issuer().to_string(),
                    subject: tbs.subject().to_string(),
                    not_after: tbs.validity().not_after.to_unix_duration().as_secs(),
                });
            }
            Ok(found)
        })
    }
}

/// The DER object at the start of `bytes` (NV areas may be padded after it).
fn der_prefix(bytes: &[u8]) -> Vec<u8> {
    der::SliceReader::new(bytes)
        .ok()
        .and_then(|mut reader| {
            let header = der::Header::decode(&mut reader).ok()?;
            let total =
                usize::try_from(u32::from(header.encoded_len().ok()?) + u32::from(header.length()))
                    .ok()?;
            bytes.get(..total).map(<[u8]>::to_vec)
        })
        .unwrap_or_else(|| bytes.to_vec())
}

/// The index is not defined (`TPM_RC_HANDLE`, as normalised by `TssError::tpm_rc`) or was
/// never written (`TPM_RC_NV_UNINITIALIZED`).
fn is_absent(rc: u32) -> bool {
    matches!(rc, 0x08B | 0x14A)
}

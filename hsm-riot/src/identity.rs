//! A DICE device: DeviceID and Alias keys and certificates, as an X.509 attestation.

use std::sync::Arc;

use hsm_core::{CertificateDer, CertifiedKey, KeyHandle, RcgenSigner, RegistrationId, SecretBytes};
use rcgen::Issuer as RcgenIssuer;

use crate::cert::{Name, Validity, alias_params, ca_params, sign};
use crate::dice::{ALIAS_INFO, DEVICE_ID_INFO, Digest32, cdi, derive_p256, digest32, fold_layers};
use crate::key::DiceKey;
use crate::{Error, tcb_info};

/// The default Alias common name (and so registration id), as the C SDK uses.
pub const DEFAULT_ALIAS_CN: &str = "riot-device-cert";
/// The default DeviceID common name, as the C SDK uses.
pub const DEFAULT_DEVICE_ID_CN: &str = "riot-signer-core";

/// Who signs the DeviceID certificate.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Issuer {
    /// The DeviceID key itself (a self-signed DeviceID certificate, to enroll individually).
    #[default]
    SelfSigned,
    /// A root (or intermediate) CA: its key handle, which may live in any HSM, and its
    /// certificate.
    Root {
        /// The CA's key.
        key: Arc<dyn KeyHandle>,
        /// The CA's certificate.
        certificate: CertificateDer<'static>,
    },
}

/// Builds a DICE device identity of the standard profile: a [`CertifiedKey`] whose key is the
/// Alias key's handle and whose chain is Alias, DeviceID (and the root when one issued the
/// DeviceID certificate). The DeviceID key signs the Alias certificate and is never exposed; its
/// public key is in the DeviceID certificate (`chain()[1]`).
#[derive(Default)]
pub struct RiotIdentityBuilder {
    uds: Option<SecretBytes>,
    cdi: Option<SecretBytes>,
    measurement: Option<Vec<u8>>,
    fwid: Option<Vec<u8>>,
    layers: Vec<Vec<u8>>,
    alias_name: Option<Name>,
    device_id_name: Option<Name>,
    issuer: Issuer,
    validity: Validity,
    allow_zero_uds: bool,
    vendor: Option<String>,
    model: Option<String>,
}

impl std::fmt::Debug for RiotIdentityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiotIdentityBuilder")
            .field("uds", &self.uds)
            .field("cdi", &self.cdi)
            .field("alias_name", &self.alias_name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl RiotIdentityBuilder {
    /// A builder; a UDS (or a CDI), the RIoT Core measurement (with a UDS) and the FWID are
    /// required.
    pub fn new() -> Self {
        Self::default()
    }

    /// The unique device secret (32 bytes).
    pub fn uds(mut self, uds: SecretBytes) -> Self {
        self.uds = Some(uds);
        self
    }

    /// A CDI computed elsewhere (32 bytes), instead of a UDS and measurement.
    pub fn cdi(mut self, cdi: SecretBytes) -> Self {
        self.cdi = Some(cdi);
        self
    }

    /// The RIoT Core (layer 0) measurement, SHA-256 (32 bytes).
    pub fn measurement(mut self, digest: &[u8]) -> Self {
        self.measurement = Some(digest.to_vec());
        self
    }

    /// The firmware identity (FWID) of the layer the Alias key belongs to, SHA-256 (32 bytes).
    pub fn fwid(mut self, digest: &[u8]) -> Self {
        self.fwid = Some(digest.to_vec());
        self
    }

    /// Measurements of further layers (32 bytes each), folded into the CDI the Alias key is
    /// derived from: `CDI' = SHA-256(CDI || layer)`, in order.
    pub fn layer(mut self, digest: &[u8]) -> Self {
        self.layers.push(digest.to_vec());
        self
    }

    /// The Alias subject (default CN `riot-device-cert`); its CN is the registration id.
    pub fn alias_name(mut self, name: Name) -> Self {
        self.alias_name = Some(name);
        self
    }

    /// The DeviceID subject (default CN `riot-signer-core`).
    pub fn device_id_name(mut self, name: Name) -> Self {
        self.device_id_name = Some(name);
        self
    }

    /// Who signs the DeviceID certificate (default: self-signed).
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuer = issuer;
        self
    }

    /// Certificate validity (default: 2026-01-01 to 9999-12-31).
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// Vendor and model strings for the TcbInfo extension.
    pub fn tcb_vendor_model(mut self, vendor: Option<String>, model: Option<String>) -> Self {
        self.vendor = vendor;
        self.model = model;
        self
    }

    /// Accept an all-zero UDS (tests only: such a device has no secret).
    pub fn allow_zero_uds(mut self, allow: bool) -> Self {
        self.allow_zero_uds = allow;
        self
    }

    /// Derives the keys and issues the certificates.
    ///
    /// # Errors
    /// [`Error::WrongLength`] for a UDS, CDI, measurement, FWID or layer of the wrong length (or
    /// a missing one), [`Error::ZeroUds`], [`Error::InvalidCommonName`],
    /// [`Error::UnsupportedRootKey`], [`Error::RootCertificate`], [`Error::Certificate`].
    pub fn build(self) -> Result<CertifiedKey, Error> {
        let missing = |what| Error::WrongLength {
            what,
            expected: 32,
            got: 0,
        };
        let cdi = match (&self.uds, &self.cdi) {
            (Some(uds), _) => {
                if uds.len() != 32 {
                    return Err(Error::WrongLength {
                        what: "UDS",
                        expected: 32,
                        got: uds.len(),
                    });
                }
                if !self.allow_zero_uds && uds.expose().iter().all(|&b| b == 0) {
                    return Err(Error::ZeroUds);
                }
                let measurement = digest32(
                    "measurement",
                    self.measurement.as_deref().ok_or(missing("measurement"))?,
                )?;
                cdi(uds, &measurement)
            }
            (None, Some(given)) => zeroize::Zeroizing::new(digest32("CDI", given.expose())?),
            (None, None) => return Err(missing("UDS")),
        };
        let fwid = digest32("FWID", self.fwid.as_deref().ok_or(missing("FWID"))?)?;
        let layers = self
            .layers
            .iter()
            .map(|l| digest32("layer measurement", l))
            .collect::<Result<Vec<Digest32>, _>>()?;

        let alias_name = self
            .alias_name
            .unwrap_or_else(|| Name::cn(DEFAULT_ALIAS_CN));
        let device_id_name = self
            .device_id_name
            .unwrap_or_else(|| Name::cn(DEFAULT_DEVICE_ID_CN));
        let registration_id = check_names(&alias_name, &device_id_name)?;

        let device_id = Arc::new(DiceKey::new(derive_p256(
            cdi.as_slice(),
            None,
            DEVICE_ID_INFO,
        )?));
        let alias_cdi = fold_layers(&cdi, &layers);
        let alias = Arc::new(DiceKey::new(derive_p256(
            alias_cdi.as_slice(),
            Some(&fwid),
            ALIAS_INFO,
        )?));

        let device_id_signer =
            RcgenSigner::new(device_id.clone()).map_err(Error::UnsupportedRootKey)?;
        let device_id_params = ca_params(
            &device_id_name,
            device_id.public_key_der(),
            &self.validity,
            Some(1),
        );
        let mut chain_tail = Vec::new();
        let device_id_cert = match &self.issuer {
            Issuer::SelfSigned => device_id_params
                .self_signed(&device_id_signer)
                .map_err(|source| Error::Certificate {
                    what: "DeviceID",
                    source,
                })?
                .der()
                .clone(),
            Issuer::Root { key, certificate } => {
                let root_signer =
                    RcgenSigner::new(key.clone()).map_err(Error::UnsupportedRootKey)?;
                let root_spki = x509_spki(certificate).ok_or_else(|| {
                    Error::RootCertificate("it does not parse as an X.509 certificate".into())
                })?;
                if root_spki != key.public_key_der() {
                    return Err(Error::RootCertificate(
                        "the root key does not match the root certificate".into(),
                    ));
                }
                let issuer = RcgenIssuer::from_ca_cert_der(certificate, &root_signer)
                    .map_err(|e| Error::RootCertificate(e.to_string()))?;
                chain_tail.push(certificate.clone());
                sign("DeviceID", &device_id_params, device_id.as_ref(), &issuer)?
            }
        };
        let tcb = tcb_info::encode(
            self.vendor.as_deref(),
            self.model.as_deref(),
            1 + layers.len() as u32,
            &fwid,
        )
        .map_err(|e| Error::InvalidCommonName {
            name: self.vendor.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let alias_params = alias_params(&alias_name, alias.public_key_der(), &self.validity, tcb);
        let issuer = RcgenIssuer::new(device_id_params, &device_id_signer);
        let alias_cert = sign("Alias", &alias_params, alias.as_ref(), &issuer)?;

        let mut chain = vec![alias_cert, device_id_cert];
        chain.extend(chain_tail);
        CertifiedKey::with_registration_id(alias, chain, registration_id).map_err(Error::Identity)
    }
}

fn check_names(alias: &Name, device_id: &Name) -> Result<RegistrationId, Error> {
    let invalid = |name: &str, reason: String| Error::InvalidCommonName {
        name: name.to_owned(),
        reason,
    };
    let id = RegistrationId::new(alias.common_name.as_str())
        .map_err(|e| invalid(&alias.common_name, e.to_string()))?;
    if !id.fits_common_name() {
        return Err(invalid(
            &alias.common_name,
            "longer than 64 characters".into(),
        ));
    }
    let cn = &device_id.common_name;
    if cn.is_empty() || cn.len() > hsm_core::MAX_CN_LEN {
        return Err(invalid(cn, "a common name is 1 to 64 characters".into()));
    }
    Ok(id)
}

/// The SubjectPublicKeyInfo of a DER certificate.
fn x509_spki(certificate: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(certificate).ok()?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
}

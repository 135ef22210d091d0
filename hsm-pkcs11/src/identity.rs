//! X.509 attestation from a token: the private key plus its certificate chain, from the token
//! (`CKO_CERTIFICATE` objects) or from files.

use std::path::PathBuf;
use std::sync::Arc;

use cryptoki::object::{AttributeType, ObjectClass};
use der::{Decode as _, Encode as _};
use hsm_core::{CertificateDer, CertifiedKey, RegistrationId};
use x509_cert::Certificate;

use crate::objects::{Locator, bytes_attribute, find_all};
use crate::public_key::certificate_spki;
use crate::{Error, OpenOptions, Pkcs11Key, Pkcs11Uri, Token};

/// Builds an X.509 identity (a [`CertifiedKey`]) whose private key stays on a PKCS#11 token.
///
/// ```no_run
/// use hsm_pkcs11::Pkcs11IdentityBuilder;
///
/// let uri = "pkcs11:token=device;object=device-key\
///     ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/pin".parse()?;
/// let identity = Pkcs11IdentityBuilder::new(uri).build()?; // leaf and chain from the token
/// println!("{}", identity.registration_id());
/// # Ok::<(), hsm_pkcs11::Error>(())
/// ```
#[derive(Debug)]
pub struct Pkcs11IdentityBuilder {
    uri: Pkcs11Uri,
    options: OpenOptions,
    certificates: Option<PathBuf>,
    registration_id: Option<RegistrationId>,
}

impl Pkcs11IdentityBuilder {
    /// A builder for the key the URI names.
    pub fn new(uri: Pkcs11Uri) -> Self {
        Self {
            uri,
            options: OpenOptions::default(),
            certificates: None,
            registration_id: None,
        }
    }

    /// Module and PIN options.
    pub fn options(mut self, options: OpenOptions) -> Self {
        self.options = options;
        self
    }

    /// Take the chain (leaf first, PEM or DER) from this file instead of the token.
    pub fn certificates_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.certificates = Some(path.into());
        self
    }

    /// The registration id, instead of the leaf's common name.
    pub fn registration_id(mut self, id: RegistrationId) -> Self {
        self.registration_id = Some(id);
        self
    }

    /// Opens the token and the key, loads the chain and checks that key and leaf match.
    ///
    /// From the token, the leaf is the certificate with the key's id (or label); the rest of the
    /// chain is built from the other certificates on the token by issuer name.
    ///
    /// # Errors
    /// Any error of [`Token::open_with`] and [`Pkcs11Key::open`], [`Error::CertificateFile`],
    /// [`Error::ObjectNotFound`] for a missing certificate, [`Error::KeyMismatch`].
    pub fn build(self) -> Result<CertifiedKey, Error> {
        let token = Token::open_with(&self.uri, &self.options)?;
        let chain = match &self.certificates {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| {
                    Error::CertificateFile(hsm_x509::Error::Io {
                        path: path.clone(),
                        source,
                    })
                })?;
                hsm_x509::load_certificates(&bytes).map_err(Error::CertificateFile)?
            }
            None => chain_from_token(&token, &Locator::from_uri(&self.uri)?)?,
        };
        let leaf_spki = certificate_spki(&chain[0]).ok_or_else(|| Error::MalformedCertificate {
            what: "leaf".into(),
        })?;
        let key = match Pkcs11Key::open(&token, &self.uri) {
            Err(Error::PublicKeyNotFound { .. }) => {
                Pkcs11Key::open_with_spki(&token, &self.uri, Some(leaf_spki.clone()))?
            }
            other => other?,
        };
        let selector = Locator::from_uri(&self.uri)?.describe();
        CertifiedKey::with_optional_registration_id(Arc::new(key), chain, self.registration_id)
            .map_err(|e| {
                use hsm_core::CertificateProblem as P;
                let what = match e {
                    hsm_core::Error::Certificate {
                        problem: P::KeyMismatch,
                    } => return Error::KeyMismatch { selector },
                    hsm_core::Error::Certificate {
                        problem: P::NoCommonName,
                    } => "leaf has no common name; set a registration id",
                    hsm_core::Error::Certificate {
                        problem: P::InvalidCommonName { .. },
                    } => "leaf common name is not a valid registration id",
                    _ => "leaf",
                };
                Error::MalformedCertificate { what: what.into() }
            })
    }
}

/// The key's certificate and its issuers, from the token.
pub(crate) fn chain_from_token(
    token: &Token,
    locator: &Locator,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let inner = &token.inner;
    inner.with_session("read certificates", |session, _| {
        let pair = Locator {
            label: if locator.id.is_some() {
                None
            } else {
                locator.label.clone()
            },
            id: locator.id.clone(),
        };
        let leaf = find_all(session, ObjectClass::CERTIFICATE, &pair, &inner.label)?
            .into_iter()
            .find_map(|c| bytes_attribute(session, c, AttributeType::Value))
            .ok_or_else(|| Error::ObjectNotFound {
                class: "certificate",
                selector: pair.describe(),
                token: inner.label.clone(),
            })?;
        let all = Locator {
            label: None,
            id: None,
        };
        let others: Vec<Vec<u8>> = find_all(session, ObjectClass::CERTIFICATE, &all, &inner.label)?
            .into_iter()
            .filter_map(|c| bytes_attribute(session, c, AttributeType::Value))
            .collect();
        Ok(build_chain(leaf, &others))
    })
}

/// Follows issuer names from `leaf` through `pool` until a self-issued certificate or a gap.
fn build_chain(leaf: Vec<u8>, pool: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    let names = |der: &[u8]| -> Option<(Vec<u8>, Vec<u8>)> {
        let cert = Certificate::from_der(der).ok()?;
        let tbs = cert.tbs_certificate();
        Some((tbs.subject().to_der().ok()?, tbs.issuer().to_der().ok()?))
    };
    let mut chain = vec![leaf];
    while chain.len() < 8 {
        let Some((subject, issuer)) = chain.last().and_then(|c| names(c)) else {
            break;
        };
        if subject == issuer {
            break;
        }
        let next = pool.iter().find(|candidate| {
            !chain.contains(candidate) && names(candidate).is_some_and(|(s, _)| s == issuer)
        });
        match next {
            Some(cert) => chain.push(cert.clone()),
            None => break,
        }
    }
    chain.into_iter().map(CertificateDer::from).collect()
}

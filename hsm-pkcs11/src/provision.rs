//! Provisioning helpers: make a key pair on the token, certify it through the handle, store
//! certificates, list what the token holds.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
use der::{Decode as _, Encode as _};
use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle as _, RcgenSigner};

use crate::objects::{Locator, bytes_attribute, find_all};
use crate::public_key::{OID_P256, OID_P384};
use crate::{Error, Pkcs11Key, Pkcs11Uri, Token};

/// The key pairs [`Token::generate_key_pair`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySpec {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
}

/// One object on a token, as [`Token::list_objects`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// `private`, `public`, `cert`, `secret-key` or `data`.
    pub class: &'static str,
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// The URI that names it on this token.
    pub uri: String,
}

impl Token {
    /// Generates a key pair on the token with the URI's label and id: the private key
    /// `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, usable only to sign; the public key usable only to
    /// verify. Returns the new key's handle.
    ///
    /// # Errors
    /// [`Error::NoObjectSelector`], [`Error::AlreadyExists`] when a private key with that label
    /// or id exists, [`Error::Pkcs11`] when the token refuses.
    pub fn generate_key_pair(&self, uri: &Pkcs11Uri, spec: KeySpec) -> Result<Pkcs11Key, Error> {
        let locator = Locator::from_uri(uri)?;
        let inner = &self.inner;
        let (_, session) = inner.rw_session()?;
        if !find_all(&session, ObjectClass::PRIVATE_KEY, &locator, &inner.label)?.is_empty() {
            return Err(Error::AlreadyExists {
                selector: locator.describe(),
                token: inner.label.clone(),
            });
        }
        let mut common = vec![Attribute::Token(true)];
        if let Some(label) = &locator.label {
            common.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &locator.id {
            common.push(Attribute::Id(id.clone()));
        }
        let mut public = common.clone();
        // No CKA_VERIFY or CKA_ENCRYPT: the public key is only read, never used on the token,
        // and tpm2-pkcs11 refuses a template that sets what it derives from the TPM object.
        public.push(Attribute::Wrap(false));
        let mut private = common;
        private.extend(private_key_attributes());
        let mechanism = match spec {
            KeySpec::EcdsaP256 | KeySpec::EcdsaP384 => {
                let curve = if spec == KeySpec::EcdsaP256 {
                    OID_P256
                } else {
                    OID_P384
                };
                let params = curve
                    .to_der()
                    .map_err(|_| Error::MalformedPublicKey("curve OID"))?;
                public.push(Attribute::EcParams(params));
                Mechanism::EccKeyPairGen
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                let bits: u64 = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| Error::from_cryptoki(e, inner.context(&locator.describe())))?;
        drop(session);
        Pkcs11Key::open(self, uri)
    }

    /// Stores a DER certificate on the token with the URI's label and id (normally the key's).
    ///
    /// # Errors
    /// [`Error::MalformedCertificate`], [`Error::AlreadyExists`], [`Error::Pkcs11`].
    pub fn store_certificate(
        &self,
        uri: &Pkcs11Uri,
        certificate: &CertificateDer<'_>,
    ) -> Result<(), Error> {
        let locator = Locator::from_uri(uri)?;
        let cert = x509_cert::Certificate::from_der(certificate).map_err(|_| {
            Error::MalformedCertificate {
                what: "certificate to store".into(),
            }
        })?;
        let tbs = cert.tbs_certificate();
        let encode = |r: der::Result<Vec<u8>>| {
            r.map_err(|_| Error::MalformedCertificate {
                what: "certificate to store".into(),
            })
        };
        let subject = encode(tbs.subject().to_der())?;
        let issuer = encode(tbs.issuer().to_der())?;
        let serial = encode(tbs.serial_number().to_der())?;
        let inner = &self.inner;
        let (_, session) = inner.rw_session()?;
        if !find_all(&session, ObjectClass::CERTIFICATE, &locator, &inner.label)?.is_empty() {
            return Err(Error::AlreadyExists {
                selector: locator.describe(),
                token: inner.label.clone(),
            });
        }
        let mut template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Subject(subject),
            Attribute::Issuer(issuer),
            Attribute::SerialNumber(serial),
            Attribute::Value(certificate.to_vec()),
        ];
        if let Some(label) = &locator.label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &locator.id {
            template.push(Attribute::Id(id.clone()));
        }
        session
            .create_object(&template)
            .map_err(|e| Error::from_cryptoki(e, inner.context(&locator.describe())))?;
        Ok(())
    }

    /// Every object the logged-in user can see.
    ///
    /// # Errors
    /// [`Error::Pkcs11`].
    pub fn list_objects(&self) -> Result<Vec<ObjectInfo>, Error> {
        let inner = &self.inner;
        inner.with_session("list objects", |session, _| {
            let mut out = Vec::new();
            let classes = [
                (ObjectClass::PRIVATE_KEY, "private"),
                (ObjectClass::PUBLIC_KEY, "public"),
                (ObjectClass::CERTIFICATE, "cert"),
                (ObjectClass::SECRET_KEY, "secret-key"),
                (ObjectClass::DATA, "data"),
            ];
            let all = Locator {
                label: None,
                id: None,
            };
            for (class, name) in classes {
                for object in find_all(session, class, &all, &inner.label)? {
                    let label = bytes_attribute(session, object, AttributeType::Label)
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default();
                    let id =
                        bytes_attribute(session, object, AttributeType::Id).unwrap_or_default();
                    let uri = Pkcs11Uri {
                        token: Some(inner.label.clone()),
                        object: (!label.is_empty()).then(|| label.clone()),
                        id: (!id.is_empty()).then(|| id.clone()),
                        ..Pkcs11Uri::default()
                    };
                    let mut uri = uri.to_string();
                    uri.push_str(&format!(";type={name}"));
                    out.push(ObjectInfo {
                        class: name,
                        label,
                        id,
                        uri,
                    });
                }
            }
            Ok(out)
        })
    }
}

/// The attributes of every private key this crate creates.
pub(crate) fn private_key_attributes() -> [Attribute; 7] {
    [
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

/// A self-signed end-entity certificate for `key` with the given common name (client
/// authentication), signed on the token.
///
/// # Errors
/// [`Error::Certificate`] when rcgen or the token fails.
pub fn self_signed_certificate(
    key: &Arc<Pkcs11Key>,
    common_name: &str,
) -> Result<CertificateDer<'static>, Error> {
    let signer = signer(key)?;
    let certificate = |source| Error::Certificate {
        what: "certificate",
        source,
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(certificate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&signer).map_err(certificate)?;
    Ok(cert.der().clone())
}

fn signer(key: &Arc<Pkcs11Key>) -> Result<RcgenSigner, Error> {
    let handle: Arc<dyn hsm_core::KeyHandle> = key.clone();
    RcgenSigner::new(handle).map_err(|_| Error::UnsupportedKeyType(key.algorithm().to_string()))
}

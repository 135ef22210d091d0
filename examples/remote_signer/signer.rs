//! The signer side: the process that holds the key and answers requests on a Unix socket.
//!
//! Here the "device" is a software key generated when the signer starts, in the signer's own
//! process. A vendor replaces [`run_signer`]'s key with a call into the secure element or HSM
//! and keeps [`serve`] as it is.

use std::io::{self, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyHandle, signature};
use zeroize::Zeroizing;

use super::Error;
use super::process::READY;
use super::protocol::{self, Request, Status};

/// The keys a signer can generate for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The name used on the signer's command line: `p256`, `p384` or `ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "p256",
            Self::EcdsaP384 => "p384",
            Self::Ed25519 => "ed25519",
        }
    }

    /// The key type of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::EcdsaP256, Self::EcdsaP384, Self::Ed25519]
            .into_iter()
            .find(|t| t.name() == name)
    }

    fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// The signer's main: generates a key of `key_type` that never leaves this process, listens on
/// `socket`, prints the ready line on stdout and serves until stdin closes (the parent that
/// started it went away) or the listener fails.
///
/// # Errors
/// [`Error::Key`] when the key cannot be generated, [`Error::Process`] when the socket cannot be
/// bound, [`Error::Io`] when accepting fails.
pub fn run_signer(socket: &Path, key_type: KeyType) -> Result<(), Error> {
    let key = generate(key_type)?;
    let listener = UnixListener::bind(socket).map_err(|source| Error::Process {
        reason: format!("cannot listen on {}", socket.display()),
        source: Some(source),
    })?;
    // Whoever started us holds the other end of stdin: when it exits, so do we.
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    let mut stdout = io::stdout();
    writeln!(stdout, "{READY} pid {}", std::process::id())
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Io {
            operation: "announce readiness",
            source,
        })?;
    serve(listener, key)
}

/// Serves requests for `key` on every connection `listener` accepts, one thread per connection,
/// until accepting fails.
///
/// # Errors
/// [`Error::Io`] when `accept` fails.
pub fn serve(listener: UnixListener, key: Arc<dyn KeyHandle>) -> Result<(), Error> {
    for stream in listener.incoming() {
        let stream = stream.map_err(|source| Error::Io {
            operation: "accept a connection",
            source,
        })?;
        let key = key.clone();
        std::thread::spawn(move || {
            if let Err(e) = connection(stream, key.as_ref()) {
                eprintln!("remote signer: connection closed: {e}");
            }
        });
    }
    Ok(())
}

/// Answers requests on one connection until the client closes it.
fn connection(mut stream: UnixStream, key: &dyn KeyHandle) -> Result<(), Error> {
    while let Some(frame) = protocol::read_frame(&mut stream)? {
        protocol::write_frame(&mut stream, &answer(key, &frame))?;
    }
    Ok(())
}

/// The response frame for one request frame. Never fails: every problem becomes a status.
pub(crate) fn answer(key: &dyn KeyHandle, frame: &[u8]) -> Vec<u8> {
    match Request::parse(frame) {
        Err((status, reason)) => protocol::response(status, reason.as_bytes()),
        Ok(Request::PublicKey) => match protocol::algorithm_code(key.algorithm()) {
            Some(code) => {
                let mut body = vec![code];
                body.extend_from_slice(key.public_key_der());
                protocol::response(Status::Ok, &body)
            }
            None => protocol::response(Status::KeyFailure, b"the key type has no wire code"),
        },
        Ok(Request::Sign { scheme, message }) => match key.sign(scheme, message) {
            // Answer as secure elements do: ECDSA as raw r||s; the driver converts it back.
            Ok(sig) => match key.algorithm() {
                KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                    match signature::ecdsa_der_to_raw(key.algorithm(), &sig) {
                        Ok(raw) => protocol::response(Status::Ok, &raw),
                        Err(e) => protocol::response(Status::KeyFailure, e.to_string().as_bytes()),
                    }
                }
                _ => protocol::response(Status::Ok, &sig),
            },
            Err(e @ hsm_core::Error::UnsupportedScheme { .. }) => {
                protocol::response(Status::UnsupportedScheme, e.to_string().as_bytes())
            }
            Err(e) => protocol::response(Status::KeyFailure, e.to_string().as_bytes()),
        },
    }
}

/// A fresh software key, in this process only.
fn generate(key_type: KeyType) -> Result<Arc<dyn KeyHandle>, Error> {
    let pair = rcgen::KeyPair::generate_for(key_type.rcgen_algorithm())
        .map_err(|e| Error::Key(hsm_core::Error::device("generate the signer's key", e)))?;
    let pkcs8 = Zeroizing::new(pair.serialize_der());
    drop(pair);
    let key = hsm_x509::SoftwareKey::from_der(&pkcs8, None)
        .map_err(|e| Error::Key(hsm_core::Error::device("load the signer's key", e)))?;
    Ok(Arc::new(key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::remote_signer::protocol::{OP_PUBLIC_KEY, parse_response, sign_request};

    #[test]
    fn answers_public_key_sign_and_refusals() {
        let key = generate(KeyType::EcdsaP256).unwrap();
        let public = parse_response(answer(key.as_ref(), &[OP_PUBLIC_KEY])).unwrap();
        assert_eq!(public[0], 1);
        assert_eq!(&public[1..], key.public_key_der());

        let request = sign_request(hsm_core::SignatureScheme::EcdsaP256Sha256, b"m").unwrap();
        let raw = parse_response(answer(key.as_ref(), &request)).unwrap();
        assert_eq!(raw.len(), 64, "raw r||s");

        let request = sign_request(hsm_core::SignatureScheme::Ed25519, b"m").unwrap();
        assert!(matches!(
            parse_response(answer(key.as_ref(), &request)),
            Err(Error::Refused {
                status: Status::UnsupportedScheme,
                ..
            })
        ));
    }

    #[test]
    fn key_type_names_round_trip() {
        for t in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519] {
            assert_eq!(KeyType::from_name(t.name()), Some(t));
        }
        assert_eq!(KeyType::from_name("rsa"), None);
    }
}

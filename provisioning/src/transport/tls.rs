//! TLS failures in words: rustls (and webpki beneath it) describe many failures by their
//! variant names (`invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`, `received
//! fatal alert: CertificateRequired`); what the user reads says what happened instead.

use std::fmt;

use crate::Error;

/// A failed handshake, described; the error to show in place of rustls's own.
#[derive(Debug)]
pub(crate) struct TlsFailure(String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// The first rustls error in `error`'s cause chain (looking inside I/O errors too).
pub(crate) fn find_rustls<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_rustls(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// [`Error::Tls`] for a handshake that failed with `error` (which holds a rustls error).
pub(crate) fn failure(operation: &'static str, error: &(dyn std::error::Error + 'static)) -> Error {
    let description = match find_rustls(error) {
        Some(tls) => describe(tls),
        None => error.to_string(),
    };
    Error::Tls {
        operation,
        source: Box::new(TlsFailure(description)),
    }
}

/// What a rustls error means, for the device's operator.
pub(crate) fn describe(error: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match error {
        E::InvalidCertificate(certificate) => {
            let why = match certificate {
                C::UnknownIssuer => {
                    "it is not issued by a CA this client trusts (check the trust anchors)".into()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("it is not for this host name ({certificate})")
                }
                C::Expired | C::ExpiredContext { .. } => {
                    format!("it has expired, or this device's clock is wrong ({certificate})")
                }
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    format!("it is not valid yet, or this device's clock is wrong ({certificate})")
                }
                C::Revoked => "it is revoked".into(),
                C::BadSignature => "its signature does not verify".into(),
                C::BadEncoding => "it is not a valid certificate".into(),
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                    "it is not a TLS server certificate".into()
                }
                C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                    Some(webpki::Error::CaUsedAsEndEntity) => {
                        "it is a CA certificate, presented as the server's own".into()
                    }
                    Some(webpki::Error::EndEntityUsedAsCa) => {
                        "a server certificate in it is used as a CA".into()
                    }
                    Some(e) => words(&format!("{e:?}")),
                    None => words(&other.to_string()),
                },
                other => words(&format!("{other:?}")),
            };
            format!("the server's certificate was refused: {why}")
        }
        E::AlertReceived(alert) => format!(
            "the server ended the handshake with the TLS alert \"{}\" (for a client \
             certificate: the server did not accept it)",
            words(&format!("{alert:?}"))
        ),
        E::NoCertificatesPresented => "the server presented no certificate".into(),
        E::PeerIncompatible(why) => format!(
            "the server's TLS is incompatible with this client: {}",
            words(&format!("{why:?}"))
        ),
        E::PeerMisbehaved(why) => format!(
            "the server broke the TLS protocol: {}",
            words(&format!("{why:?}"))
        ),
        E::InvalidMessage(what) => format!(
            "the server sent a malformed TLS message: {}",
            words(&format!("{what:?}"))
        ),
        other => other.to_string(),
    }
}

/// A Rust variant name in words: `CaUsedAsEndEntity` -> `ca used as end entity`, fields and
/// all (`Foo(Bar)` -> `foo bar`).
fn words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_lower = true;
        } else if !out.ends_with(' ') && !out.is_empty() {
            out.push(' ');
            previous_lower = false;
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_become_words() {
        assert_eq!(words("CaUsedAsEndEntity"), "ca used as end entity");
        assert_eq!(words("CertificateRequired"), "certificate required");
        assert_eq!(
            words("Other(OtherError(BadDer))"),
            "other other error bad der"
        );
    }

    #[test]
    fn certificate_failures_are_said_in_words() {
        let ca_as_leaf = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity)),
        ));
        let text = describe(&ca_as_leaf);
        assert_eq!(
            text,
            "the server's certificate was refused: it is a CA certificate, presented as the \
             server's own"
        );
        let alert = describe(&rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(alert.contains("\"certificate required\""), "{alert}");
        for text in [text, alert] {
            assert!(
                !text.contains('('.to_string().as_str()) || text.contains("(for a client"),
                "{text}"
            );
        }
    }
}

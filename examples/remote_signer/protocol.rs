//! The wire format between the driver and its signer.
//!
//! Every message is a **frame**: a 4-byte big-endian length, then that many bytes (at most
//! [`MAX_FRAME`]). A request frame starts with an operation byte, a response frame with a
//! [`Status`] byte:
//!
//! | request | op | body | answer body when the status is OK |
//! |---|---|---|---|
//! | public key | `0x01` | empty | algorithm code (1 byte), then the DER `SubjectPublicKeyInfo` |
//! | sign | `0x02` | scheme (TLS `SignatureScheme` code, 2 bytes big-endian), then the unhashed message | the signature; for ECDSA raw `r\|\|s`, as secure elements return it |
//!
//! Any other status carries a UTF-8 explanation. One connection carries any number of requests,
//! one at a time.

use std::fmt;
use std::io::{self, Read, Write};

use hsm_core::{KeyAlgorithm, SignatureScheme};

use super::Error;

/// The largest frame either side accepts (messages signed in TLS handshakes and certificates
/// are a few kilobytes).
pub const MAX_FRAME: usize = 64 * 1024;

pub(crate) const OP_PUBLIC_KEY: u8 = 0x01;
pub(crate) const OP_SIGN: u8 = 0x02;

/// The status byte that starts every response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Done; the body is the answer.
    Ok,
    /// The key cannot sign with the requested scheme.
    UnsupportedScheme,
    /// The request was malformed (unknown operation or scheme, truncated body).
    BadRequest,
    /// The key (the device behind the signer) failed.
    KeyFailure,
    /// A status this version does not know.
    Unknown(u8),
}

impl Status {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::UnsupportedScheme => 1,
            Self::BadRequest => 2,
            Self::KeyFailure => 3,
            Self::Unknown(code) => code,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::UnsupportedScheme,
            2 => Self::BadRequest,
            3 => Self::KeyFailure,
            other => Self::Unknown(other),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::UnsupportedScheme => f.write_str("unsupported scheme"),
            Self::BadRequest => f.write_str("bad request"),
            Self::KeyFailure => f.write_str("key failure"),
            Self::Unknown(code) => write!(f, "unknown status {code}"),
        }
    }
}

/// A parsed request, on the signer side.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    PublicKey,
    Sign {
        scheme: SignatureScheme,
        message: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// Parses a request frame; a refusal is the status and the reason to send back.
    pub(crate) fn parse(frame: &'a [u8]) -> Result<Self, (Status, &'static str)> {
        match frame.split_first() {
            Some((&OP_PUBLIC_KEY, [])) => Ok(Self::PublicKey),
            Some((&OP_PUBLIC_KEY, _)) => Err((Status::BadRequest, "public key takes no body")),
            Some((&OP_SIGN, [hi, lo, message @ ..])) => {
                let scheme = scheme_from_code(u16::from_be_bytes([*hi, *lo]))
                    .ok_or((Status::UnsupportedScheme, "unknown signature scheme code"))?;
                Ok(Self::Sign { scheme, message })
            }
            Some((&OP_SIGN, _)) => Err((Status::BadRequest, "sign needs a 2-byte scheme")),
            Some(_) => Err((Status::BadRequest, "unknown operation")),
            None => Err((Status::BadRequest, "empty request")),
        }
    }
}

/// A sign request frame.
pub(crate) fn sign_request(scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
    let code = scheme_code(scheme).ok_or(Error::Protocol {
        what: "request",
        reason: "the scheme has no wire code",
    })?;
    let len = 3 + message.len();
    if len > MAX_FRAME {
        return Err(Error::FrameTooLarge { len });
    }
    let mut request = Vec::with_capacity(len);
    request.push(OP_SIGN);
    request.extend_from_slice(&code.to_be_bytes());
    request.extend_from_slice(message);
    Ok(request)
}

/// A response frame: the status byte, then the body.
pub(crate) fn response(status: Status, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + body.len());
    frame.push(status.code());
    frame.extend_from_slice(body);
    frame
}

/// The body of an OK response, or the signer's refusal as [`Error::Refused`].
pub(crate) fn parse_response(mut frame: Vec<u8>) -> Result<Vec<u8>, Error> {
    if frame.is_empty() {
        return Err(Error::Protocol {
            what: "response",
            reason: "empty frame",
        });
    }
    match Status::from_code(frame.remove(0)) {
        Status::Ok => Ok(frame),
        status => Err(Error::Refused {
            status,
            message: String::from_utf8_lossy(&frame).into_owned(),
        }),
    }
}

/// Writes one frame.
pub(crate) fn write_frame(writer: &mut impl Write, payload: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_FRAME)
        .ok_or(Error::FrameTooLarge { len: payload.len() })?;
    let io = |source| Error::Io {
        operation: "write a frame",
        source,
    };
    writer.write_all(&len.to_be_bytes()).map_err(io)?;
    writer.write_all(payload).map_err(io)?;
    writer.flush().map_err(io)
}

/// Reads one frame; `None` when the peer closed the connection before a new frame began.
pub(crate) fn read_frame(reader: &mut impl Read) -> Result<Option<Vec<u8>>, Error> {
    let io = |source| Error::Io {
        operation: "read a frame",
        source,
    };
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    // u32 always fits in usize on the platforms with Unix sockets this runs on (32/64-bit).
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(Error::FrameTooLarge { len });
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(io)?;
    Ok(Some(payload))
}

/// The wire code of a key algorithm, in the public key answer.
pub(crate) fn algorithm_code(algorithm: KeyAlgorithm) -> Option<u8> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => Some(1),
        KeyAlgorithm::EcdsaP384 => Some(2),
        KeyAlgorithm::Ed25519 => Some(3),
        KeyAlgorithm::Rsa { bits: 2048 } => Some(4),
        KeyAlgorithm::Rsa { bits: 3072 } => Some(5),
        KeyAlgorithm::Rsa { bits: 4096 } => Some(6),
        _ => None,
    }
}

/// The key algorithm of a wire code.
pub(crate) fn algorithm_from_code(code: u8) -> Option<KeyAlgorithm> {
    match code {
        1 => Some(KeyAlgorithm::EcdsaP256),
        2 => Some(KeyAlgorithm::EcdsaP384),
        3 => Some(KeyAlgorithm::Ed25519),
        4 => Some(KeyAlgorithm::Rsa { bits: 2048 }),
        5 => Some(KeyAlgorithm::Rsa { bits: 3072 }),
        6 => Some(KeyAlgorithm::Rsa { bits: 4096 }),
        _ => None,
    }
}

/// The IANA TLS `SignatureScheme` code of a scheme.
pub(crate) fn scheme_code(scheme: SignatureScheme) -> Option<u16> {
    Some(match scheme {
        SignatureScheme::RsaPkcs1Sha256 => 0x0401,
        SignatureScheme::EcdsaP256Sha256 => 0x0403,
        SignatureScheme::RsaPkcs1Sha384 => 0x0501,
        SignatureScheme::EcdsaP384Sha384 => 0x0503,
        SignatureScheme::RsaPkcs1Sha512 => 0x0601,
        SignatureScheme::RsaPssSha256 => 0x0804,
        SignatureScheme::RsaPssSha384 => 0x0805,
        SignatureScheme::RsaPssSha512 => 0x0806,
        SignatureScheme::Ed25519 => 0x0807,
        _ => return None,
    })
}

/// The scheme of an IANA TLS `SignatureScheme` code.
pub(crate) fn scheme_from_code(code: u16) -> Option<SignatureScheme> {
    SignatureScheme::ALL
        .into_iter()
        .find(|&scheme| scheme_code(scheme) == Some(code))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_scheme_round_trips_through_its_code() {
        for scheme in SignatureScheme::ALL {
            let code = scheme_code(scheme).unwrap();
            assert_eq!(scheme_from_code(code), Some(scheme));
        }
        assert_eq!(scheme_from_code(0x0000), None);
    }

    #[test]
    fn sign_request_parses_back() {
        let frame = sign_request(SignatureScheme::EcdsaP256Sha256, b"hello").unwrap();
        assert_eq!(
            Request::parse(&frame).unwrap(),
            Request::Sign {
                scheme: SignatureScheme::EcdsaP256Sha256,
                message: b"hello"
            }
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_status() {
        for (frame, status) in [
            (&[][..], Status::BadRequest),
            (&[0x09][..], Status::BadRequest),
            (&[OP_PUBLIC_KEY, 0][..], Status::BadRequest),
            (&[OP_SIGN, 0x04][..], Status::BadRequest),
            (&[OP_SIGN, 0xff, 0xff, 1][..], Status::UnsupportedScheme),
        ] {
            assert_eq!(Request::parse(frame).unwrap_err().0, status, "{frame:?}");
        }
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_before_reading() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abc").unwrap();
        let mut reader = &wire[..];
        assert_eq!(read_frame(&mut reader).unwrap().unwrap(), b"abc");
        assert!(read_frame(&mut reader).unwrap().is_none());

        let huge = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(Error::FrameTooLarge { .. })
        ));
        let truncated = [0, 0, 0, 5, 1, 2];
        assert!(matches!(
            read_frame(&mut &truncated[..]),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            sign_request(SignatureScheme::Ed25519, &vec![0; MAX_FRAME]),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn refusals_keep_status_and_message() {
        let frame = response(Status::KeyFailure, b"token removed");
        match parse_response(frame) {
            Err(Error::Refused { status, message }) => {
                assert_eq!(status, Status::KeyFailure);
                assert_eq!(message, "token removed");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_response(response(Status::Ok, b"sig")).unwrap(),
            b"sig"
        );
    }
}

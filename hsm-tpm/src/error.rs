use std::fmt;

use crate::{PersistentHandle, TctiError};

/// Everything that can go wrong with the TPM. Messages name the operation and the TPM command;
/// the TSS response code is the [`source`](std::error::Error::source). No message contains key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCTI string is malformed.
    #[error("invalid TCTI configuration")]
    Tcti(#[from] TctiError),

    /// The TPM cannot be reached (device missing, simulator not running, connection lost and
    /// every reconnect attempt failed). The next call tries again.
    #[error("the TPM at {tcti} is unavailable ({operation}, {attempts} attempt(s))")]
    Unavailable {
        /// The TCTI configuration, e.g. `swtpm:host=127.0.0.1,port=2321`.
        tcti: String,
        /// What the caller was doing.
        operation: &'static str,
        /// How many times the driver tried to connect or to run the command.
        attempts: u32,
        /// The TSS error of the last attempt.
        #[source]
        source: TssError,
    },

    /// A TPM command failed.
    #[error("{command} failed ({operation})")]
    Tpm {
        /// What the caller was doing, e.g. `"sign with the key at 0x81000002"`.
        operation: &'static str,
        /// The TPM command, e.g. `"TPM2_Sign"`.
        command: &'static str,
        /// The TSS error (a TPM response code or a TSS layer error).
        #[source]
        source: TssError,
    },

    /// The TPM refused an authorisation: a wrong password or policy for the object
    /// (`TPM_RC_AUTH_FAIL`, `TPM_RC_BAD_AUTH`). Failures on objects with dictionary-attack
    /// protection count toward the TPM's lockout.
    #[error(
        "the TPM refused the authorisation for {operation} ({command}): a wrong password or policy for the object"
    )]
    AuthFailed {
        /// What the caller was doing.
        operation: &'static str,
        /// The TPM command.
        command: &'static str,
        /// The TPM's response code.
        #[source]
        source: TssError,
    },

    /// The TPM is in dictionary-attack lockout after too many authorisation failures
    /// (`TPM_RC_LOCKOUT`): it refuses authorisations with a password until the lockout
    /// recovery time passes, or the lockout hierarchy clears it.
    #[error(
        "the TPM is in dictionary-attack lockout after too many authorisation failures ({operation}): wait for it to recover, or clear it with the lockout authorisation (tpm2_dictionarylockout --clear-lockout)"
    )]
    Lockout {
        /// What the caller was doing.
        operation: &'static str,
        /// The TPM's response code.
        #[source]
        source: TssError,
    },

    /// The activation blob is malformed (truncated, inconsistent sizes, trailing bytes).
    #[error("malformed activation blob")]
    MalformedBlob(#[source] tpm_wire::Error),

    /// The TPM refused the activation blob: it was made for another TPM's EK or SRK, or its
    /// integrity HMAC does not match. The previous key at the handle, if any, is untouched.
    #[error("the TPM rejected the activation blob at {command}")]
    BlobRejected {
        /// The command that rejected it (`TPM2_ActivateCredential`, `TPM2_Import`, `TPM2_Load`).
        command: &'static str,
        /// The TPM's response code.
        #[source]
        source: TssError,
    },

    /// No object is persisted at the handle.
    #[error("no {what} at persistent handle {handle}")]
    NotFound {
        /// The handle.
        handle: PersistentHandle,
        /// What was expected there, e.g. `"identity key"`.
        what: &'static str,
    },

    /// A handle outside the persistent range `0x81000000..=0x81FFFFFF`.
    #[error("{value:#010x} is not a persistent handle (0x81000000..=0x81FFFFFF)")]
    NotPersistent {
        /// The value given.
        value: u32,
    },

    /// An object already occupies the handle a new key was to be persisted at.
    #[error("persistent handle {handle} is already in use")]
    HandleInUse {
        /// The handle.
        handle: PersistentHandle,
    },

    /// Every handle of a key store's range holds an object already.
    #[error(
        "no free persistent handle in {first:#010x}..={last:#010x} for a new key (evict keys no longer used, or give the store a wider range)"
    )]
    NoFreeHandle {
        /// The range's first handle.
        first: u32,
        /// The range's last handle.
        last: u32,
    },

    /// A file of the key store's index could not be read or written.
    #[error("cannot {operation}: {path}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or folder.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The object at the handle cannot be used this way (not a signing key, a restricted key, an
    /// unsupported curve or key size).
    #[error("the object at {handle} is unsuitable: {reason}")]
    UnsuitableKey {
        /// The handle.
        handle: PersistentHandle,
        /// What is wrong.
        reason: String,
    },

    /// A public area from the TPM could not be turned into a `SubjectPublicKeyInfo` or a
    /// marshaled `TPM2B_PUBLIC`.
    #[error("malformed public area ({what})")]
    MalformedPublic {
        /// What could not be converted.
        what: &'static str,
    },

    /// The TPM returned something no correct TPM returns.
    #[error("the TPM returned {0}")]
    UnexpectedOutput(&'static str),

    /// A CSR could not be built through the key handle.
    #[error("cannot build the CSR")]
    Certificate(#[source] rcgen::Error),

    /// An operation on the TPM connection panicked (a bug in this crate); the connection was
    /// reset and the next call reconnects.
    #[error("a TPM operation failed unexpectedly (an internal error); the connection was reset")]
    Panicked,
}

/// TSS2 layer numbers (bits 16..24 of a TSS2_RC).
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR: u32 = 11;
const LAYER_RESMGR_TPM: u32 = 12;
/// TSS2 base response codes meaning the transport failed.
const BASE_RC_NO_CONNECTION: u32 = 8;
const BASE_RC_IO_ERROR: u32 = 10;
const BASE_RC_MALFORMED_RESPONSE: u32 = 17;
const BASE_RC_INSUFFICIENT_RESPONSE: u32 = 19;
const BASE_RC_BAD_SEQUENCE: u32 = 7;

impl Error {
    /// The raw TSS2 response code of the underlying TSS error, when there is one (e.g.
    /// `0x000001df` for `TPM_RC_INTEGRITY` on parameter 1, `0x000a000a` for a TCTI I/O error).
    pub fn response_code(&self) -> Option<u32> {
        match self {
            Self::Unavailable { source, .. }
            | Self::Tpm { source, .. }
            | Self::AuthFailed { source, .. }
            | Self::Lockout { source, .. }
            | Self::BlobRejected { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the TPM connection failed (rather than the TPM refusing a command): such calls
    /// are retried on a new connection.
    pub fn is_connection_error(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Tpm { source, .. } => source.is_transport(),
            _ => false,
        }
    }

    pub(crate) fn tpm(
        operation: &'static str,
        command: &'static str,
    ) -> impl FnOnce(tss_esapi::Error) -> Self {
        move |source| {
            let source = TssError::from(source);
            match source.tpm_rc() {
                // TPM_RC_LOCKOUT (a warning).
                Some(0x921) => Self::Lockout { operation, source },
                // TPM_RC_AUTH_FAIL, TPM_RC_BAD_AUTH (format 1, session bits dropped).
                Some(0x08E | 0x0A2) => Self::AuthFailed {
                    operation,
                    command,
                    source,
                },
                _ => Self::Tpm {
                    operation,
                    command,
                    source,
                },
            }
        }
    }
}

/// A TSS failure: an error from tss-esapi, or a TSS2 response code from a libtss2 call this
/// crate makes itself. [`code`](Self::code) gives the raw `TSS2_RC`.
#[derive(Debug)]
pub struct TssError(Repr);

#[derive(Debug)]
enum Repr {
    Esapi(tss_esapi::Error),
    Code(u32),
}

impl TssError {
    pub(crate) fn from_code(code: u32) -> Self {
        Self(Repr::Code(code))
    }

    /// The raw `TSS2_RC`: the layer in bits 16-23 (0 = the TPM itself, 7 = ESAPI, 10 = TCTI),
    /// the response code below. `None` for tss-esapi's own wrapper errors.
    pub fn code(&self) -> Option<u32> {
        match &self.0 {
            Repr::Esapi(e) => raw_code(e),
            Repr::Code(code) => Some(*code),
        }
    }

    /// The TPM response code without parameter, handle or session number (`TPM_RC_INTEGRITY` =
    /// `0x09f`, `TPM_RC_HANDLE` = `0x08b`, ...), when the TPM itself answered with an error.
    pub fn tpm_rc(&self) -> Option<u32> {
        let rc = self.code()?;
        if rc >> 16 != 0 {
            return None;
        }
        Some(if rc & 0x80 != 0 { rc & 0xbf } else { rc })
    }

    /// Whether the transport to the TPM failed (TCTI and resource-manager layers, or ESAPI
    /// reporting a lost or broken connection), rather than the TPM refusing the command.
    pub fn is_transport(&self) -> bool {
        self.code().is_some_and(code_is_transport)
    }
}

impl From<tss_esapi::Error> for TssError {
    fn from(error: tss_esapi::Error) -> Self {
        Self(Repr::Esapi(error))
    }
}

impl fmt::Display for TssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tss-esapi decodes the TPM's own codes well, but prints "response code not recognized"
        // for most software-layer ones (a refused connection is TCTI / I/O error): name those.
        if let Some(code) = self.code()
            && let Some((layer, what)) = describe_layered(code)
        {
            return write!(f, "TSS2_RC {code:#010x}: {layer} layer: {what}");
        }
        match (&self.0, self.code()) {
            (Repr::Esapi(e), Some(code)) => write!(f, "TSS2_RC {code:#010x}: {e}"),
            (Repr::Esapi(e), None) => write!(f, "tss-esapi: {e}"),
            (Repr::Code(_), Some(code)) => write!(f, "TSS2_RC {code:#010x}"),
            (Repr::Code(code), None) => write!(f, "TSS2_RC {code:#010x}"),
        }
    }
}

impl std::error::Error for TssError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            // Display already says all tss-esapi would ("response code not recognized").
            Repr::Esapi(_) if self.code().and_then(describe_layered).is_some() => None,
            Repr::Esapi(e) => Some(e),
            Repr::Code(_) => None,
        }
    }
}

/// The TSS2_RC inside a tss-esapi error (tss-esapi 7 shows it only through `Display`).
fn raw_code(error: &tss_esapi::Error) -> Option<u32> {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let text = match error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return None,
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// The layer and meaning of a TSS2_RC from a software layer of the TSS (not the TPM itself),
/// when both are known.
fn describe_layered(rc: u32) -> Option<(&'static str, &'static str)> {
    let layer = match (rc >> 16) & 0xff {
        6 => "FAPI",
        7 => "ESAPI",
        8 => "SAPI",
        9 => "marshaling",
        LAYER_TCTI => "TCTI (connection to the TPM)",
        LAYER_RESMGR => "resource manager",
        LAYER_RESMGR_TPM => "resource manager (from the TPM)",
        _ => return None,
    };
    let what = match rc & 0xffff {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        4 => "ABI mismatch",
        5 => "bad reference",
        6 => "insufficient buffer",
        BASE_RC_BAD_SEQUENCE => "bad sequence (a command was interrupted)",
        BASE_RC_NO_CONNECTION => "no connection to the TPM",
        9 => "try again",
        BASE_RC_IO_ERROR => "I/O error (the TPM or simulator is not reachable)",
        11 => "bad value",
        12 => "not permitted",
        13 => "invalid sessions",
        16 => "bad size",
        BASE_RC_MALFORMED_RESPONSE => "malformed response",
        18 => "insufficient context",
        BASE_RC_INSUFFICIENT_RESPONSE => "insufficient response (the connection closed)",
        20 => "incompatible TCTI",
        21 => "not supported",
        22 => "bad TCTI structure",
        23 => "out of memory",
        24 => "bad ESYS handle",
        27 => "response authorisation failed",
        _ => return None,
    };
    Some((layer, what))
}

fn code_is_transport(rc: u32) -> bool {
    let layer = (rc >> 16) & 0xff;
    let base = rc & 0xffff;
    match layer {
        LAYER_TCTI | LAYER_RESMGR | LAYER_RESMGR_TPM => true,
        0 => false,
        _ => matches!(
            base,
            BASE_RC_NO_CONNECTION
                | BASE_RC_IO_ERROR
                | BASE_RC_MALFORMED_RESPONSE
                | BASE_RC_INSUFFICIENT_RESPONSE
                | BASE_RC_BAD_SEQUENCE
        ),
    }
}

#[cfg(test)]
mod tests {
    use tss_esapi::traits::UnMarshall as _;

    use super::*;

    #[test]
    fn codes_come_out_of_real_tss_errors() {
        // The MU layer (9) reports an insufficient buffer (6).
        let mu = TssError::from(tss_esapi::structures::Public::unmarshall(&[]).unwrap_err());
        assert_eq!(mu.code(), Some(0x0009_0006));
        assert!(!mu.is_transport());
        assert_eq!(mu.tpm_rc(), None);
        assert_eq!(
            mu.to_string(),
            "TSS2_RC 0x00090006: marshaling layer: insufficient buffer"
        );
        let wrapper = TssError::from(tss_esapi::Error::WrapperError(
            tss_esapi::WrapperErrorKind::InternalError,
        ));
        assert_eq!(wrapper.code(), None);
        assert!(!wrapper.is_transport());
        // TPM_RC_INTEGRITY on parameter 1, and TPM_RC_HANDLE on handle 1.
        assert_eq!(TssError::from_code(0x1df).tpm_rc(), Some(0x09f));
        assert_eq!(TssError::from_code(0x18b).tpm_rc(), Some(0x08b));
        assert!(TssError::from_code(0x000a_000a).is_transport());
        assert!(TssError::from_code(0x0007_0013).is_transport());
        assert!(!TssError::from_code(0x0007_000b).is_transport());
    }

    #[test]
    fn a_refused_connection_is_a_transport_error() {
        // Nothing listens on port 1; the swtpm TCTI fails to connect.
        let tcti: crate::Tcti = "swtpm:host=127.0.0.1,port=1".parse().unwrap();
        let err = TssError::from(tss_esapi::Context::new(tcti.name_conf().unwrap()).unwrap_err());
        let rc = err.code().unwrap();
        assert_eq!(rc >> 16, LAYER_TCTI, "{rc:#x}");
        assert!(err.is_transport());
        let text = err.to_string();
        assert!(
            text.contains("TCTI (connection to the TPM) layer: "),
            "{text}"
        );
        assert!(!text.contains("not recognized"), "{text}");
        let ours = Error::Tpm {
            operation: "connect",
            command: "Esys_Initialize",
            source: err,
        };
        assert!(ours.is_connection_error());
        assert_eq!(ours.response_code(), Some(rc));
    }
}

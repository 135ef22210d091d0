use std::path::PathBuf;

use cryptoki::context::Function;
use cryptoki::error::RvError;

use crate::UriError;

/// Everything that can go wrong with a PKCS#11 token. Messages name the token, object and
/// PKCS#11 function, and never contain a PIN or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PKCS#11 URI is malformed.
    #[error("invalid PKCS#11 URI")]
    Uri(#[from] UriError),

    /// Neither the URI (`module-path`, `module-name`) nor the options name a module.
    #[error(
        "no PKCS#11 module given: add ?module-path=/path/to/module.so to the URI (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
    )]
    NoModule,

    /// `module-name` was not found in the usual module directories.
    #[error("PKCS#11 module \"{name}\" not found in {searched}")]
    ModuleNotFound {
        /// The name asked for.
        name: String,
        /// The directories searched.
        searched: String,
    },

    /// The module file could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}")]
    LoadModule {
        /// The module path.
        path: PathBuf,
        /// cryptoki's error.
        #[source]
        source: cryptoki::error::Error,
    },

    /// The module file is missing or its function list cannot be read.
    #[error("cannot use PKCS#11 module {path}: {reason}")]
    ModuleFile {
        /// The module path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A PKCS#11 function failed.
    #[error("PKCS#11 {} failed: {} ({context})", c_name(.function), ckr_name(.rv))]
    Pkcs11 {
        /// The function.
        function: Function,
        /// The return value.
        rv: RvError,
        /// What it was doing it for: the token and object.
        context: String,
    },

    /// Any other cryptoki failure (buffer size conversions, unexpected attribute types).
    #[error("cryptoki: {context}")]
    Cryptoki {
        /// What it was doing.
        context: String,
        /// cryptoki's error.
        #[source]
        source: cryptoki::error::Error,
    },

    /// No token matches the URI.
    #[error("no token matches {selector}; tokens present: [{available}]")]
    TokenNotFound {
        /// The token attributes asked for.
        selector: String,
        /// Labels of the tokens present.
        available: String,
    },

    /// More than one token matches the URI.
    #[error("{count} tokens match {selector}: add serial= or token= to the URI")]
    AmbiguousToken {
        /// The token attributes asked for.
        selector: String,
        /// How many matched.
        count: usize,
    },

    /// No PIN: not in the URI, no pin-source, no `PKCS11_PIN`, no callback.
    #[error(
        "no PIN for token '{token}': give pin-value or pin-source in the URI, set PKCS11_PIN, or pass a PIN"
    )]
    PinRequired {
        /// The token label.
        token: String,
    },

    /// The pin-source file could not be read.
    #[error("cannot read the PIN file {path}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The PIN callback failed.
    #[error("the PIN callback failed")]
    PinCallback(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The token refused the PIN (`CKR_PIN_INCORRECT`). `tries` says how close the token is
    /// to locking the PIN, when it tells (`CKF_USER_PIN_COUNT_LOW`, `CKF_USER_PIN_FINAL_TRY`).
    #[error("wrong PIN for token '{token}' (CKR_PIN_INCORRECT){}", tries.warning())]
    WrongPin {
        /// The token label.
        token: String,
        /// What the token says of the tries left.
        tries: PinTries,
    },

    /// The user PIN has expired or must be changed before use (`CKR_PIN_EXPIRED`, or the token
    /// flags `CKF_USER_PIN_TO_BE_CHANGED` on a PIN it has).
    #[error(
        "the user PIN of token '{token}' must be changed before use (CKR_PIN_EXPIRED): set a new one with `pkcs11-tool --change-pin` or the token's own tool"
    )]
    PinExpired {
        /// The token label.
        token: String,
    },

    /// The token has no user PIN yet (`CKR_USER_PIN_NOT_INITIALIZED`: initialised, as
    /// opencryptoki's `C_InitToken` leaves it, but `C_InitPIN` never ran).
    #[error(
        "token '{token}' has no user PIN yet (CKR_USER_PIN_NOT_INITIALIZED): the security officer sets one with `pkcs11-tool --login --login-type so --init-pin` or the token's own tool"
    )]
    PinNotInitialized {
        /// The token label.
        token: String,
    },

    /// Every session the token allows (its `ulMaxSessionCount`, or
    /// [`OpenOptions::max_sessions`](crate::OpenOptions::max_sessions)) stayed in use for the
    /// whole wait.
    #[error(
        "token '{token}' allows {limit} sessions and all stayed busy for {waited:?}: sign from fewer threads, or raise the limit"
    )]
    SessionLimit {
        /// The token label.
        token: String,
        /// The limit.
        limit: usize,
        /// How long the call waited.
        waited: std::time::Duration,
    },

    /// The token is locked after too many wrong PINs (`CKR_PIN_LOCKED`).
    #[error("the PIN of token '{token}' is locked (CKR_PIN_LOCKED): unlock it with the SO PIN")]
    PinLocked {
        /// The token label.
        token: String,
    },

    /// No object matches.
    #[error("no {class} matches {selector} on token '{token}'")]
    ObjectNotFound {
        /// `"private key"`, `"certificate"`, `"secret key"`, `"public key"`.
        class: &'static str,
        /// The object attributes asked for.
        selector: String,
        /// The token label.
        token: String,
    },

    /// More than one object matches.
    #[error(
        "{count} objects of class {class} match {selector} on token '{token}': add id= or object= to the URI"
    )]
    AmbiguousObject {
        /// The class.
        class: &'static str,
        /// The object attributes asked for.
        selector: String,
        /// The token label.
        token: String,
        /// How many matched.
        count: usize,
    },

    /// The URI names no object (`object=` or `id=`).
    #[error("the URI names no object: add object=<label> or id=<bytes>")]
    NoObjectSelector,

    /// An object with that label or id already exists.
    #[error("token '{token}' already holds an object with {selector}")]
    AlreadyExists {
        /// The label/id.
        selector: String,
        /// The token label.
        token: String,
    },

    /// A key type this driver does not use (only EC, RSA and EdDSA keys sign).
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),

    /// An EC key on a curve other than P-256 or P-384.
    #[error("unsupported elliptic curve {0}")]
    UnsupportedCurve(String),

    /// The token lacks a mechanism this key needs.
    #[error("token '{token}' does not offer {mechanism}")]
    UnsupportedMechanism {
        /// The mechanism.
        mechanism: String,
        /// The token label.
        token: String,
    },

    /// The key's public half could not be found (no public-key object, no certificate).
    #[error(
        "cannot find the public key of {selector}: import the public key or the certificate onto the token, or give a certificate file"
    )]
    PublicKeyNotFound {
        /// The object attributes.
        selector: String,
    },

    /// A certificate (on the token or in a file) did not parse.
    #[error("malformed certificate ({what})")]
    MalformedCertificate {
        /// Where it came from.
        what: String,
    },

    /// The private key does not match the leaf certificate.
    #[error("the private key {selector} does not match the leaf certificate")]
    KeyMismatch {
        /// The key's attributes.
        selector: String,
    },

    /// A certificate file could not be loaded.
    #[error("cannot load certificates")]
    CertificateFile(#[source] hsm_x509::Error),

    /// A CSR or certificate could not be built through the handle.
    #[error("cannot build the {what}")]
    Certificate {
        /// `"CSR"` or `"certificate"`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },

    /// The token returned something no correct token returns.
    #[error("the token returned {0}")]
    UnexpectedOutput(&'static str),

    /// A public key attribute could not be turned into a SubjectPublicKeyInfo.
    #[error("malformed public key attribute {0}")]
    MalformedPublicKey(&'static str),
}

impl Error {
    /// Maps a cryptoki error, keeping the function and return value.
    pub(crate) fn from_cryptoki(
        source: cryptoki::error::Error,
        context: impl Into<String>,
    ) -> Self {
        match source {
            cryptoki::error::Error::Pkcs11(rv, function) => Self::Pkcs11 {
                function,
                rv,
                context: context.into(),
            },
            source => Self::Cryptoki {
                context: context.into(),
                source,
            },
        }
    }

    /// The PKCS#11 return value, when the error is one.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::Pkcs11 { rv, .. } => Some(*rv),
            _ => None,
        }
    }
}

/// `C_SignInit` for `Function::SignInit`.
pub(crate) fn c_name(function: &Function) -> String {
    format!("C_{function:?}")
}

/// `CKR_KEY_TYPE_INCONSISTENT` for `RvError::KeyTypeInconsistent`.
pub(crate) fn ckr_name(rv: &RvError) -> String {
    let mut name = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs11_errors_read_like_the_spec() {
        let err = Error::Pkcs11 {
            function: Function::Login,
            rv: RvError::PinIncorrect,
            context: "token 'dev'".into(),
        };
        assert_eq!(
            err.to_string(),
            "PKCS#11 C_Login failed: CKR_PIN_INCORRECT (token 'dev')"
        );
        assert_eq!(
            ckr_name(&RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}

/// How close a token is to locking its user PIN, as its flags say after a wrong PIN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinTries {
    /// The token says nothing (many tokens, SoftHSM2 among them).
    #[default]
    Unknown,
    /// Some wrong PINs have been entered (`CKF_USER_PIN_COUNT_LOW`).
    Low,
    /// The next wrong PIN locks it (`CKF_USER_PIN_FINAL_TRY`).
    FinalTry,
}

impl PinTries {
    fn warning(self) -> &'static str {
        match self {
            Self::Unknown => "",
            Self::Low => {
                "; the token reports few tries left (CKF_USER_PIN_COUNT_LOW): check the PIN before trying again"
            }
            Self::FinalTry => "; one more wrong PIN locks the token",
        }
    }
}

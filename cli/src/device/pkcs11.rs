//! PKCS#11 (hsm-pkcs11): an X.509 key (`--pkcs11 URI`, its chain from the token or
//! `--x509-cert`) or an HMAC key for symmetric-key attestation (`--pkcs11-hmac URI`), and the
//! module and PIN options every command that opens a token takes.

use std::path::PathBuf;

use clap::Args;
use hsm_pkcs11::{OpenOptions, Pin, Pkcs11Uri, Token};

use crate::Error;

/// The PKCS#11 attestation flags.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct Pkcs11Args {
    /// PKCS#11: the X.509 private key's URI; the chain comes from the token (or --x509-cert).
    #[arg(long = "pkcs11", value_name = "URI", help_heading = "PKCS#11")]
    pub(crate) x509: Option<String>,
    /// PKCS#11: an HMAC (generic secret) key's URI, for symmetric-key attestation.
    #[arg(long = "pkcs11-hmac", value_name = "URI", help_heading = "PKCS#11")]
    pub(crate) hmac: Option<String>,
    #[command(flatten)]
    pub(crate) options: Pkcs11Options,
}

/// Module and PIN options for PKCS#11 URIs (`register`'s `--pkcs11-module`, the `pkcs11`
/// commands' `--module`).
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct Pkcs11Options {
    /// PKCS#11: the module to load when the URI names none (no module-path or module-name).
    #[arg(
        long = "pkcs11-module",
        visible_alias = "module",
        value_name = "PATH",
        help_heading = "PKCS#11"
    )]
    pub(crate) module: Option<PathBuf>,
    /// PKCS#11: a file holding the user PIN (else the URI's pin-value/pin-source, else
    /// $PKCS11_PIN).
    #[arg(
        long = "pkcs11-pin-file",
        visible_alias = "pin-file",
        value_name = "FILE",
        help_heading = "PKCS#11"
    )]
    pub(crate) pin_file: Option<PathBuf>,
}

impl Pkcs11Options {
    fn open_options(&self) -> OpenOptions {
        let options = OpenOptions::with_module(self.module.clone());
        match &self.pin_file {
            Some(path) => options.pin(Pin::File(path.clone())),
            None => options,
        }
    }
}

/// Parses a PKCS#11 URI.
pub(crate) fn parse_uri(text: &str) -> Result<Pkcs11Uri, Error> {
    Pkcs11Uri::parse(text).map_err(|e| Error::Pkcs11 {
        operation: "invalid PKCS#11 URI",
        source: e.into(),
    })
}

/// Opens and logs in to the token a URI names.
pub(crate) fn open_token(uri: &Pkcs11Uri, options: &Pkcs11Options) -> Result<Token, Error> {
    Token::open_with(uri, &options.open_options()).map_err(|source| Error::Pkcs11 {
        operation: "cannot open the PKCS#11 token",
        source,
    })
}

/// The X.509 identity of a key on a token, its chain from the token or from `certificates`.
pub(crate) fn open_x509(
    uri: &str,
    certificates: Option<&std::path::Path>,
    registration_id: Option<hsm_core::RegistrationId>,
    options: &Pkcs11Options,
) -> Result<hsm_core::CertifiedKey, Error> {
    let mut builder =
        hsm_pkcs11::Pkcs11IdentityBuilder::new(parse_uri(uri)?).options(options.open_options());
    if let Some(path) = certificates {
        builder = builder.certificates_file(path);
    }
    if let Some(id) = registration_id {
        builder = builder.registration_id(id);
    }
    builder.build().map_err(|source| Error::Pkcs11 {
        operation: "cannot open the X.509 identity on the PKCS#11 token",
        source,
    })
}

/// An HMAC key on a token, for symmetric-key attestation.
pub(crate) fn open_hmac(
    uri: &str,
    registration_id: hsm_core::RegistrationId,
    options: &Pkcs11Options,
) -> Result<hsm_pkcs11::Pkcs11HmacKey, Error> {
    let uri = parse_uri(uri)?;
    let token = open_token(&uri, options)?;
    hsm_pkcs11::Pkcs11HmacKey::open(&token, &uri, registration_id).map_err(|source| Error::Pkcs11 {
        operation: "cannot open the HMAC key on the PKCS#11 token",
        source,
    })
}

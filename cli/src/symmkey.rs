//! `hsm-provision symmkey derive` and `hsm-provision sas`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand, ValueEnum};
use hmac::{Hmac, KeyInit as _, Mac as _};
use hsm_core::{Expiry, RegistrationId, ResourceEncoding, SasTokenBuilder};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::util::Secret;
use crate::{EXIT_CODES, Error};

/// `symmkey`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SymmkeyCommand {
    /// Derive a device key from an enrollment group's key.
    #[command(
        long_about = "Derive the device key of a symmetric-key enrollment group member: \
base64(HMAC-SHA256(base64decode(group key), registration id)). Prints the device key (base64). \
Give the device only its derived key, never the group key.",
        after_help = EXIT_CODES
    )]
    Derive(DeriveArgs),
}

/// `symmkey derive`.
#[derive(Debug, Args)]
pub(crate) struct DeriveArgs {
    /// The group's key (base64).
    #[arg(long, value_name = "BASE64")]
    group_key: Secret,
    /// The device's registration id.
    #[arg(long, value_name = "ID")]
    registration_id: String,
}

/// How the resource is written into the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum EncodingArg {
    /// URL-encoded with lowercase hex, as the C SDK writes it.
    #[default]
    Lower,
    /// As given.
    Plain,
}

/// `sas`'s long help.
pub(crate) const SAS_ABOUT: &str = "Print a shared access signature token for a resource, for debugging: \
SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={key name}], where the \
signature is base64(HMAC-SHA256(key, \"{sr}\\n{se}\")). A DPS registration's resource is \
{idScope}/registrations/{registrationId} with key name 'registration'; an IoT Hub device's is \
{hub}/devices/{deviceId}.\n\nA debugging aid: the token is a bearer credential until it expires, \
and a key on the command line is visible to other local users.";

/// `sas`.
#[derive(Debug, Args)]
pub(crate) struct SasArgs {
    /// The resource URI, unencoded (e.g. 0ne00000000/registrations/my-device).
    #[arg(long, value_name = "RESOURCE")]
    resource: String,
    /// The key (base64).
    #[arg(long, value_name = "BASE64")]
    key: Secret,
    /// The key name (skn), e.g. `registration` for DPS.
    #[arg(long, value_name = "NAME")]
    key_name: Option<String>,
    /// Expire this many seconds from now [default: 3600].
    #[arg(long, value_name = "SECS", conflicts_with = "expiry_at")]
    expiry_secs: Option<u64>,
    /// Expire at this Unix time (seconds).
    #[arg(long, value_name = "UNIX")]
    expiry_at: Option<u64>,
    /// How the resource is encoded in the token.
    #[arg(long, value_enum, default_value = "lower")]
    encoding: EncodingArg,
}

/// Runs `symmkey`.
pub(crate) fn run(command: &SymmkeyCommand) -> Result<(), Error> {
    match command {
        SymmkeyCommand::Derive(args) => {
            let id = RegistrationId::new(args.registration_id.as_str()).map_err(|source| {
                Error::Core {
                    operation: "invalid registration id",
                    source,
                }
            })?;
            let key = hsm_symmkey::derive_device_key(&args.group_key.to_secret_string(), &id)
                .map_err(|source| Error::SymmetricKey {
                    operation: "cannot derive the device key",
                    source,
                })?;
            println!("{}", key.expose());
            Ok(())
        }
    }
}

/// Runs `sas`.
pub(crate) fn sas(args: &SasArgs) -> Result<(), Error> {
    let mut key = Zeroizing::new(Vec::new());
    BASE64
        .decode_vec(args.key.expose().trim(), &mut key)
        .map_err(|_| Error::usage("--key is not valid base64"))?;
    if key.is_empty() {
        return Err(Error::usage("--key is empty"));
    }
    let expiry = match (args.expiry_at, args.expiry_secs) {
        (Some(at), _) => Expiry::At(at),
        (None, Some(secs)) => Expiry::In(Duration::from_secs(secs)),
        (None, None) => Expiry::default(),
    };
    let mut builder = SasTokenBuilder::new(args.resource.as_str())
        .expiry(expiry)
        .encoding(match args.encoding {
            EncodingArg::Lower => ResourceEncoding::LowercasePercent,
            EncodingArg::Plain => ResourceEncoding::Plain,
        });
    if let Some(name) = &args.key_name {
        builder = builder.key_name(name.as_str());
    }
    let token = builder
        .sign(|data| {
            let mut mac = match Hmac::<Sha256>::new_from_slice(&key) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(data);
            Ok(mac.finalize().into_bytes().into())
        })
        .map_err(|source| Error::Core {
            operation: "cannot build the SAS token",
            source,
        })?;
    eprintln!(
        "debugging aid: this token grants access to {} until {} (Unix time)",
        token.resource(),
        token.expiry()
    );
    println!("{}", token.expose());
    Ok(())
}

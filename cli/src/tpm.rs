//! `hsm-provision tpm`: the EK, SRK and registration id; clearing the DPS identity key.

use clap::{Args, Subcommand};

use crate::device::tpm::TpmArgs;
use crate::{EXIT_CODES, Error};

const TCTI_HELP: &str = "The TPM is named by a TCTI string as tpm2-tools writes it \
(device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, tabrmd); without --tcti, \
$TPM2TOOLS_TCTI or $TCTI.";

/// `tpm`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TpmCommand {
    /// Print the EK and SRK (base64 TPM2B_PUBLIC) and the DPS registration id.
    #[command(long_about = format!("Print what a DPS TPM enrollment needs: the endorsement key and the storage root key (marshaled TPM2B_PUBLIC, base64) and the registration id (lowercase base32 of SHA-256 of the EK). Creates and persists the EK (0x81010001) and SRK (0x81000001) when the TPM has none, as registration would.\n\n{TCTI_HELP}"), after_help = EXIT_CODES)]
    Info(InfoArgs),
    /// Remove the DPS identity key (or the hub key that replaced it) from the TPM.
    #[command(name = "clear-identity", long_about = format!("Evict the HMAC key DPS imported (the identity key, replaced by the IoT Hub device key after registration) from its persistent handle, so the next registration starts from the TPM challenge. The EK and SRK stay.\n\n{TCTI_HELP}"), after_help = EXIT_CODES)]
    ClearIdentity(ClearArgs),
}

/// `tpm info`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    tpm: TpmArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `tpm clear-identity`.
#[derive(Debug, Args)]
pub(crate) struct ClearArgs {
    #[command(flatten)]
    tpm: TpmArgs,
    /// The identity key's persistent handle.
    #[arg(long, value_name = "HANDLE", default_value = "0x81000100", value_parser = parse_handle)]
    handle: u32,
}

fn parse_handle(text: &str) -> Result<u32, String> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(hex, 16)
        .map_err(|_| format!("{text:?} is not a hex handle like 0x81000100"))
}

/// Runs a `tpm` subcommand.
#[cfg(feature = "tpm")]
pub(crate) fn run(command: &TpmCommand) -> Result<(), Error> {
    match command {
        TpmCommand::Info(args) => with_tpm::info(args),
        TpmCommand::ClearIdentity(args) => with_tpm::clear(args),
    }
}

/// Without TPM support, every `tpm` subcommand says how to get it.
#[cfg(not(feature = "tpm"))]
pub(crate) fn run(_command: &TpmCommand) -> Result<(), Error> {
    Err(Error::usage(crate::device::tpm::NO_TPM_SUPPORT))
}

#[cfg(feature = "tpm")]
mod with_tpm {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use hsm_tpm::{PersistentHandle, TpmIdentity};
    use serde_json::json;

    use super::{ClearArgs, InfoArgs};
    use crate::Error;
    use crate::device::tpm::open_tpm;

    pub(super) fn info(args: &InfoArgs) -> Result<(), Error> {
        let tpm = open_tpm(args.tpm.tcti.as_deref())?;
        let identity = TpmIdentity::builder(&tpm)
            .ek_template(args.tpm.ek_template.unwrap_or_default().into())
            .build()
            .map_err(|source| Error::Tpm {
                operation: "cannot read the EK and SRK",
                source,
            })?;
        let has_identity =
            tpm.contains(identity.identity_handle())
                .map_err(|source| Error::Tpm {
                    operation: "cannot list the persistent handles",
                    source,
                })?;
        let ek_certificates = identity.ek_certificates().map_err(|source| Error::Tpm {
            operation: "cannot read the EK certificates",
            source,
        })?;
        let ek = BASE64.encode(identity.endorsement_key());
        let srk = BASE64.encode(identity.storage_root_key());
        if args.json {
            println!(
                "{}",
                json!({
                    "registrationId": identity.registration_id().as_str(),
                    "endorsementKey": ek,
                    "storageRootKey": srk,
                    "ekHandle": identity.ek_handle().to_string(),
                    "srkHandle": identity.srk_handle().to_string(),
                    "identityHandle": identity.identity_handle().to_string(),
                    "identityKeyPresent": has_identity,
                    "ekCertificates": ek_certificates.iter().map(|c| json!({
                        "index": format!("{:#010x}", c.index),
                        "key": c.key,
                        "certifiesEk": c.certifies_ek,
                        "issuer": c.issuer,
                        "subject": c.subject,
                        "notAfter": c.not_after,
                        "der": BASE64.encode(&c.certificate),
                    })).collect::<Vec<_>>(),
                })
            );
        } else {
            println!("registration id  {}", identity.registration_id());
            println!("EK ({})  {ek}", identity.ek_handle());
            println!("SRK ({}) {srk}", identity.srk_handle());
            println!(
                "identity key ({}) {}",
                identity.identity_handle(),
                if has_identity { "present" } else { "absent" }
            );
            if ek_certificates.is_empty() {
                println!("EK certificate   none in NV (0x01c00002, 0x01c0000a, 0x01c00016)");
            }
            for c in &ek_certificates {
                println!(
                    "EK certificate ({:#010x}, {}) issued by {}{}",
                    c.index,
                    c.key,
                    hsm_core::untrusted::printable(&c.issuer),
                    match c.certifies_ek {
                        Some(true) => ", certifies this EK",
                        Some(false) => ", for ANOTHER key than this EK",
                        None => " (another key type than this EK: not compared)",
                    }
                );
            }
        }
        Ok(())
    }

    pub(super) fn clear(args: &ClearArgs) -> Result<(), Error> {
        let handle = PersistentHandle::new(args.handle).map_err(|source| Error::Tpm {
            operation: "invalid handle",
            source,
        })?;
        if handle == PersistentHandle::EK || handle == PersistentHandle::SRK {
            return Err(Error::usage(format!(
                "{handle} holds the EK or SRK, not an identity key: refusing to evict it"
            )));
        }
        let tpm = open_tpm(args.tpm.tcti.as_deref())?;
        let removed = tpm.evict(handle).map_err(|source| Error::Tpm {
            operation: "cannot evict the identity key",
            source,
        })?;
        if removed {
            println!("removed the key at {handle}");
        } else {
            println!("no key at {handle}; nothing to do");
        }
        Ok(())
    }
}

//! DICE (hsm-riot): a device derived from its UDS, RIoT Core measurement and firmware id, its
//! DeviceID certificate issued by a development root (from a seed), a CA from files, or
//! itself. The flags are `register`'s `--riot-*` and `riot device`'s unprefixed aliases; a
//! config file says `method = "riot"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use hsm_core::{CertifiedKey, SecretBytes};
use hsm_riot::{DevRoot, Issuer, Name, RiotIdentityBuilder, Validity};
use serde::Deserialize;

use super::rebase;
use super::secret::SecretSource;
use crate::Error;
use crate::util::{self, SecretFormat};

/// The development root's default common name, as the C SDK names it.
pub(crate) const DEFAULT_ROOT_CN: &str = "riot-root";

/// The DICE flags (and `method = "riot"` of the config file).
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RiotArgs {
    /// DICE: the unique device secret, 32 bytes in hex.
    #[arg(long = "riot-uds-hex", visible_alias = "uds-hex", value_name = "HEX", value_parser = SecretSource::value, conflicts_with = "uds_file", help_heading = "DICE (hsm-riot)")]
    #[serde(default)]
    pub(crate) uds: Option<SecretSource>,
    /// DICE: a file holding the UDS (hex text or 32 raw bytes).
    #[arg(long = "riot-uds-file", visible_alias = "uds-file", value_name = "FILE", value_parser = SecretSource::file, help_heading = "DICE (hsm-riot)")]
    #[serde(skip)]
    pub(crate) uds_file: Option<SecretSource>,
    /// DICE: the RIoT Core measurement, 32 bytes in hex [default: 32 zero bytes].
    #[arg(
        long = "riot-measurement-hex",
        visible_alias = "measurement-hex",
        value_name = "HEX",
        help_heading = "DICE (hsm-riot)"
    )]
    #[serde(default)]
    pub(crate) measurement: Option<String>,
    /// DICE: the firmware id (FWID), SHA-256 in hex.
    #[arg(long = "riot-fwid-hex", visible_aliases = ["riot-fwid", "fwid-hex"], value_name = "HEX", help_heading = "DICE (hsm-riot)")]
    #[serde(default)]
    pub(crate) fwid: Option<String>,
    /// DICE: the development root's seed in hex (the same seed gives the same root).
    #[arg(long = "riot-root-seed-hex", visible_aliases = ["riot-root-seed", "root-seed-hex"], value_name = "HEX", value_parser = SecretSource::value, conflicts_with_all = ["root_seed_file", "root_cert"], help_heading = "DICE (hsm-riot)")]
    #[serde(default)]
    pub(crate) root_seed: Option<SecretSource>,
    /// DICE: a file holding the root seed (hex text or raw bytes).
    #[arg(long = "riot-root-seed-file", visible_alias = "root-seed-file", value_name = "FILE", value_parser = SecretSource::file, conflicts_with = "root_cert", help_heading = "DICE (hsm-riot)")]
    #[serde(skip)]
    pub(crate) root_seed_file: Option<SecretSource>,
    /// DICE: the root's common name (must match the enrolled root) [default: riot-root].
    #[arg(
        long = "riot-root-cn",
        visible_alias = "root-cn",
        value_name = "CN",
        help_heading = "DICE (hsm-riot)"
    )]
    #[serde(default)]
    pub(crate) root_cn: Option<String>,
    /// DICE: a CA certificate (PEM) to issue the DeviceID certificate, with --riot-root-key.
    #[arg(
        long = "riot-root-cert",
        visible_alias = "root-cert",
        value_name = "FILE",
        requires = "root_key",
        help_heading = "DICE (hsm-riot)"
    )]
    #[serde(default)]
    pub(crate) root_cert: Option<PathBuf>,
    /// DICE: the CA's private key (PEM or DER).
    #[arg(
        long = "riot-root-key",
        visible_alias = "root-key",
        value_name = "FILE",
        requires = "root_cert",
        help_heading = "DICE (hsm-riot)"
    )]
    #[serde(default)]
    pub(crate) root_key: Option<PathBuf>,
    /// The registration id, the Alias CN (config file; the flag is --registration-id).
    #[arg(skip)]
    #[serde(default)]
    pub(crate) registration_id: Option<String>,
}

impl RiotArgs {
    /// Whether any DICE flag was given.
    pub(crate) fn given(&self) -> bool {
        self.uds.is_some()
            || self.uds_file.is_some()
            || self.fwid.is_some()
            || self.measurement.is_some()
            || self.root_seed.is_some()
            || self.root_seed_file.is_some()
            || self.root_cert.is_some()
            || self.root_cn.is_some()
    }

    /// Resolves the config file's relative paths against its folder.
    pub(crate) fn rebase(&mut self, base: &Path) {
        for source in [&mut self.uds, &mut self.root_seed].into_iter().flatten() {
            source.rebase(base);
        }
        for path in [&mut self.root_cert, &mut self.root_key]
            .into_iter()
            .flatten()
        {
            rebase(path, base);
        }
    }

    /// Derives the device; `registration_id` (the Alias CN) overrides the default.
    pub(crate) fn build(&self, registration_id: Option<&str>) -> Result<CertifiedKey, Error> {
        self.build_noting(registration_id, &mut |_| {})
    }

    /// [`build`](Self::build), telling `note` how each secret file was read ("read the UDS
    /// from uds.bin (raw bytes)").
    pub(crate) fn build_noting(
        &self,
        registration_id: Option<&str>,
        note: &mut dyn FnMut(String),
    ) -> Result<CertifiedKey, Error> {
        let uds = self
            .uds
            .as_ref()
            .or(self.uds_file.as_ref())
            .ok_or_else(|| Error::usage("DICE needs the UDS: --riot-uds-hex or --riot-uds-file"))?;
        let fwid = self
            .fwid
            .as_deref()
            .ok_or_else(|| Error::usage("DICE needs --riot-fwid-hex"))?;
        let (uds_bytes, format) = secret_bytes("UDS", uds)?;
        if let SecretSource::File(path) = uds {
            note(format!("read the UDS from {} ({format})", path.display()));
        }
        let uds = uds_bytes;
        let measurement = match &self.measurement {
            Some(hex) => util::hex_exact("measurement", hex, 32)?,
            None => zeroize::Zeroizing::new(vec![0; 32]),
        };
        let fwid = util::hex_exact("FWID", fwid, 32)?;
        let mut builder = RiotIdentityBuilder::new()
            .uds(uds)
            .measurement(&measurement)
            .fwid(&fwid)
            .issuer(self.issuer(note)?);
        if let Some(id) = registration_id {
            builder = builder.alias_name(Name::cn(id));
        }
        builder.build().map_err(|source| Error::Riot {
            operation: "cannot derive the DICE device",
            source,
        })
    }

    /// Who signs the DeviceID certificate: a seed's development root, a CA from files, or
    /// nobody (self-signed).
    fn issuer(&self, note: &mut dyn FnMut(String)) -> Result<Issuer, Error> {
        let seed = self.root_seed.as_ref().or(self.root_seed_file.as_ref());
        match (seed, &self.root_cert, &self.root_key) {
            (Some(seed), None, None) => {
                let (bytes, format) = secret_bytes("root seed", seed)?;
                if let SecretSource::File(path) = seed {
                    note(format!(
                        "read the root seed from {} ({format})",
                        path.display()
                    ));
                }
                Ok(dev_root_from(&bytes, self.root_cn.as_deref())?.issuer())
            }
            (None, Some(cert), Some(key)) => {
                let certificate = util::load_certificates(cert)?.swap_remove(0);
                let key = hsm_x509::SoftwareKey::from_bytes(&util::read(key)?, None).map_err(
                    |source| Error::X509 {
                        operation: "cannot load the root key",
                        source,
                    },
                )?;
                Ok(Issuer::Root {
                    key: Arc::new(key),
                    certificate,
                })
            }
            (None, None, None) => Ok(Issuer::SelfSigned),
            _ => Err(Error::usage(
                "DICE: give a root seed, or a root certificate with its key, or neither (a \
                 self-signed DeviceID certificate)",
            )),
        }
    }
}

/// The development root a seed gives, with this common name (default [`DEFAULT_ROOT_CN`]).
pub(crate) fn dev_root(seed: &SecretSource, common_name: Option<&str>) -> Result<DevRoot, Error> {
    let (seed, _) = secret_bytes("root seed", seed)?;
    dev_root_from(&seed, common_name)
}

/// The development root of these seed bytes.
pub(crate) fn dev_root_from(
    seed: &SecretBytes,
    common_name: Option<&str>,
) -> Result<DevRoot, Error> {
    let common_name = common_name.unwrap_or(DEFAULT_ROOT_CN);
    DevRoot::from_seed(seed, Name::cn(common_name), Validity::default()).map_err(|source| {
        Error::Riot {
            operation: "cannot make the development root",
            source,
        }
    })
}

/// The length of every DICE secret: the UDS and a development root's seed.
pub(crate) const SECRET_LEN: usize = 32;

/// A DICE secret's 32 bytes, and how they were read: 64 hex digits, or a file holding 64 hex
/// digits or 32 raw bytes.
pub(crate) fn secret_bytes(
    what: &str,
    source: &SecretSource,
) -> Result<(SecretBytes, SecretFormat), Error> {
    match source {
        SecretSource::Value(hex) => Ok((
            SecretBytes::copy_from(&util::hex_exact(what, hex.expose(), SECRET_LEN)?),
            SecretFormat::Hex,
        )),
        SecretSource::File(path) => util::read_secret(what, path, SECRET_LEN),
        SecretSource::Pkcs11(_) => Err(Error::usage(format!("the {what} cannot be a pkcs11: URI"))),
    }
}

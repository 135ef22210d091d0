//! TPM (hsm-tpm): a TPM by its TCTI (`--tpm device:/dev/tpmrm0`, `tpm info --tcti ...`, or
//! `method = "tpm"` with `tcti` in a config file). Without the `tpm` feature (which needs the
//! system's libtss2), the flags are still understood and opening a TPM says how to get support.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use hsm_core::{RegistrationId, TpmAttestation};
use serde::Deserialize;

use crate::Error;

/// The TPM flags (and `method = "tpm"` of the config file).
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TpmArgs {
    /// TPM: the TCTI, as tpm2-tools writes it (device:/dev/tpmrm0, swtpm:host=H,port=P,
    /// tabrmd); without it, $TPM2TOOLS_TCTI or $TCTI.
    #[arg(
        long = "tpm",
        visible_alias = "tcti",
        value_name = "TCTI",
        help_heading = "TPM"
    )]
    #[serde(default)]
    pub(crate) tcti: Option<String>,
    /// TPM: the EK template used when no EK is persisted [default: tcg-l1].
    #[arg(
        long = "tpm-ek-template",
        visible_alias = "ek-template",
        value_enum,
        value_name = "TEMPLATE",
        help_heading = "TPM"
    )]
    #[serde(default)]
    pub(crate) ek_template: Option<EkTemplateArg>,
    /// The registration id the configuration expects, checked against the EK's (config file;
    /// the flag is --registration-id).
    #[arg(skip)]
    #[serde(default)]
    pub(crate) registration_id: Option<String>,
}

/// Which EK template to create the EK from when the TPM has none persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EkTemplateArg {
    /// The TCG L-1 template (what tpm2_createek makes).
    #[default]
    TcgL1,
    /// The Azure IoT C SDK's template (for devices enrolled with their C SDK registration id).
    Legacy,
}

/// An opened TPM attestation and its registration id (derived from the EK).
pub(crate) struct OpenedTpm {
    pub(crate) attestation: Arc<dyn TpmAttestation>,
    pub(crate) registration_id: RegistrationId,
}

/// The message when this build has no TPM support.
#[cfg(not(feature = "tpm"))]
pub(crate) const NO_TPM_SUPPORT: &str = "this hsm-provision was built without TPM support: \
    rebuild it with the default features (`cargo install --path cli`), which needs libtss2 \
    (Debian: apt install libtss2-dev pkg-config)";

impl TpmArgs {
    /// Opens the TPM and its EK and SRK; checks the configured registration id, if any.
    #[cfg(feature = "tpm")]
    pub(crate) fn open(&self, expected_id: Option<&str>) -> Result<OpenedTpm, Error> {
        let tpm = open_tpm(self.tcti.as_deref())?;
        let identity = hsm_tpm::TpmIdentity::builder(&tpm)
            .ek_template(self.ek_template.unwrap_or_default().into())
            .build()
            .map_err(|source| Error::Tpm {
                operation: "cannot read the TPM's EK and SRK",
                source,
            })?;
        if let Some(expected) = expected_id
            && expected != identity.registration_id().as_str()
        {
            return Err(Error::usage(format!(
                "the configured registration_id {expected:?} is not this TPM's, which is \
                 derived from its EK: {}",
                identity.registration_id()
            )));
        }
        Ok(OpenedTpm {
            registration_id: identity.registration_id().clone(),
            attestation: Arc::new(identity),
        })
    }

    /// Without TPM support: says how to get it.
    #[cfg(not(feature = "tpm"))]
    pub(crate) fn open(&self, _expected_id: Option<&str>) -> Result<OpenedTpm, Error> {
        Err(Error::usage(NO_TPM_SUPPORT))
    }
}

#[cfg(feature = "tpm")]
impl From<EkTemplateArg> for hsm_tpm::EkTemplate {
    fn from(t: EkTemplateArg) -> Self {
        match t {
            EkTemplateArg::TcgL1 => Self::TcgL1,
            EkTemplateArg::Legacy => Self::Legacy,
        }
    }
}

/// Connects to the TPM a TCTI string names, else the one `TPM2TOOLS_TCTI`/`TCTI` names.
#[cfg(feature = "tpm")]
pub(crate) fn open_tpm(tcti: Option<&str>) -> Result<hsm_tpm::Tpm, Error> {
    let tcti: hsm_tpm::Tcti = match tcti {
        Some(text) => text.parse().map_err(|e| Error::Tpm {
            operation: "invalid TCTI",
            source: hsm_tpm::Error::Tcti(e),
        })?,
        None => hsm_tpm::Tcti::from_env().map_err(|e| {
            Error::usage(format!(
                "no TPM given: name its TCTI (e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321) or set TPM2TOOLS_TCTI ({e})"
            ))
        })?,
    };
    hsm_tpm::Tpm::open(tcti).map_err(|source| Error::Tpm {
        operation: "cannot connect to the TPM",
        source,
    })
}

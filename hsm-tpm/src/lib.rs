#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod ek_certificate;
mod error;
mod handle;
mod identity;
mod key;
mod public;
mod sequence;
mod store;
mod tcti;
mod templates;
mod tpm;

pub use ek_certificate::{EK_CERTIFICATE_INDICES, EkCertificate};
pub use error::{Error, TssError};
pub use handle::PersistentHandle;
pub use identity::{TpmHmacKey, TpmIdentity, TpmIdentityBuilder};
pub use key::TpmKey;
pub use store::{DEFAULT_KEY_HANDLES, TpmKeyStore};
pub use tcti::{
    BusType, DEFAULT_DEVICE, DEFAULT_SIMULATOR_HOST, DEFAULT_SIMULATOR_PORT,
    DEFAULT_TABRMD_BUS_NAME, TCTI_ENV, Tcti, TctiError,
};
pub use templates::{EkTemplate, KeySpec};
pub use tpm::{Tpm, TpmOptions};

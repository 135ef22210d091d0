#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod cert;
pub mod compat;
mod dice;
mod error;
mod identity;
mod key;
mod root;
pub mod tcb_info;

pub use cert::{Name, Validity};
pub use dice::{ALIAS_INFO, DEVICE_ID_INFO};
pub use error::Error;
pub use identity::{DEFAULT_ALIAS_CN, DEFAULT_DEVICE_ID_CN, Issuer, RiotIdentityBuilder};
pub use key::DiceKey;
pub use root::DevRoot;

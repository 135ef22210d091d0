#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod error;
mod signing;

pub use config::TlsIdentity;
pub use error::Error;
pub use signing::{HsmSigningKey, choose_scheme, to_rustls_scheme};

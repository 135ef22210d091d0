#![doc = include_str!("../README.md")]
// docs.rs builds with `--cfg docsrs`: items behind a feature say which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod config;
mod error;
mod signing;

pub use config::TlsIdentity;
pub use error::Error;
pub use signing::{HsmSigningKey, choose_scheme, to_rustls_scheme};

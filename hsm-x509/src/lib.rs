#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod backend;
mod certificate;
mod error;
mod identity;
mod key;
mod pem;
mod store;

pub use certificate::load_certificates;
pub use error::Error;
pub use identity::{X509IdentityBuilder, from_files};
pub use key::SoftwareKey;
pub use store::KeyFolder;

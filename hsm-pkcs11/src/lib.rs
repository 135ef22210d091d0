#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod error;
#[allow(unsafe_code)]
mod ffi;
mod hmac;
mod identity;
mod key;
mod module;
mod objects;
mod provision;
mod public_key;
mod store;
mod token;
mod uri;

pub use cryptoki::mechanism::MechanismType;
pub use error::{Error, PinTries};
pub use hmac::Pkcs11HmacKey;
pub use identity::Pkcs11IdentityBuilder;
pub use key::Pkcs11Key;
pub use module::{MODULE_DIRS, Module, TokenInfo};
pub use provision::{KeySpec, ObjectInfo, self_signed_certificate};
pub use token::{OpenOptions, PIN_ENV, Pin, PinCallback, Token};
pub use uri::{ObjectType, Pkcs11Uri, UriError};

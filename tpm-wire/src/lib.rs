#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod activation;
mod alg;
mod blob;
mod error;
mod kdf;
mod marshal;
mod public;

pub use activation::{
    Activation, HMAC_KEY_ATTRIBUTES, INNER_KEY_BYTES, MAX_HMAC_KEY_BYTES, build_activation,
    build_activation_with,
};
pub use alg::{AlgId, ObjectAttributes};
pub use blob::{ActivationBlob, MAX_ENCRYPTED_SECRET, MAX_ID_OBJECT, MAX_PRIVATE};
pub use error::Error;
pub use public::{
    EccDetails, KeyedHashDetails, MAX_PUBLIC, Public, PublicDetails, RsaDetails, Scheme,
    SymCipherDetails, SymDef,
};
/// The `rand_core` (0.10) whose `TryCryptoRng` [`build_activation_with`] takes.
pub use rsa::rand_core;

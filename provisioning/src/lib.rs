#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod error;
mod https;
mod mqtt;
mod registration;
mod retry;
mod wire;

pub use client::{
    CSR_API_VERSION, DEFAULT_API_VERSION, DEFAULT_MQTT_PORT, DEFAULT_TIMEOUT, ProvisioningClient,
    ProvisioningClientBuilder, Transport,
};
pub use error::{BoxError, Error, ServiceError};
pub use registration::{HubCredentials, HubSasSigner, Registration};
pub use retry::RetryPolicy;
pub use wire::{RegistrationStatus, fuzz_response};

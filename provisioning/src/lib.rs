#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod attestation;
mod builder;
mod client;
mod clock;
pub mod device;
mod endpoint;
mod error;
pub mod hub;
mod mqtt;
mod net;
mod proxy;
mod registration;
mod retry;
mod run;
mod transport;
mod wire;

pub use builder::ProvisioningClientBuilder;
pub use client::{
    CSR_API_VERSION, DEFAULT_API_VERSION, DEFAULT_MQTT_PORT, DEFAULT_TIMEOUT, ProvisioningClient,
};
pub use clock::{CLOCK_TOLERANCE, Clock};
pub use error::{BoxError, Error, ServiceError};
pub use proxy::{DEFAULT_PROXY_PORT, Proxy, ProxySetting};
pub use registration::{HubCredentials, HubSasSigner, Registration};
pub use retry::RetryPolicy;
pub use transport::Transport;
pub use wire::{RegistrationStatus, fuzz_response};

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// A build with some transports left out (cargo features) leaves some shared helpers unused;
// the full build, which clippy and the tests check, has none.
#![cfg_attr(
    not(all(
        feature = "https",
        feature = "mqtt",
        feature = "websocket",
        feature = "amqp"
    )),
    allow(dead_code, unused_imports)
)]

mod attestation;
mod builder;
mod client;
mod clock;
#[cfg(feature = "mqtt")]
pub mod device;
mod endpoint;
mod error;
#[cfg(feature = "mqtt")]
pub mod hub;
#[cfg(feature = "mqtt")]
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
    CSR_API_VERSION, DEFAULT_AMQP_PORT, DEFAULT_API_VERSION, DEFAULT_MQTT_PORT, DEFAULT_TIMEOUT,
    ProvisioningClient,
};
pub use clock::{CLOCK_TOLERANCE, Clock};
pub use error::{BoxError, Error, ServiceError};
pub use proxy::{DEFAULT_PROXY_PORT, Proxy, ProxySetting};
pub use registration::{HubCredentials, HubSasSigner, Registration};
pub use retry::RetryPolicy;
pub use transport::Transport;
#[cfg(feature = "amqp")]
pub use transport::amqp::fuzz_amqp_reply;
pub use wire::{RegistrationStatus, fuzz_response};

use std::io;
use std::path::PathBuf;

/// What can go wrong starting or configuring the emulator. Requests from devices never produce an
/// `Error`: they get a DPS status code and a JSON error body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{operation} {}: {source}", path.display())]
    File {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TOML configuration is not valid.
    #[error("invalid configuration{}: {reason}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Config {
        /// The configuration file, if it came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// An enrollment is not valid (bad key, certificate or EK).
    #[error("invalid enrollment '{id}': {reason}")]
    Enrollment {
        /// The registration id or group id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Binding a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Making the emulator's CA or server certificate failed.
    #[error("cannot {operation}: {source}")]
    Certificate {
        /// What was being done.
        operation: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// Building the TLS server configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// No registration made a device with this id (an admin call named an unknown device).
    #[error("no device '{device_id}' is registered")]
    UnknownDevice {
        /// The device id asked for (control characters escaped).
        device_id: String,
    },
    /// A twin patch breaks IoT Hub's rules (not an object, `$` names, too deep or large).
    #[error("invalid twin patch: {reason}")]
    InvalidPatch {
        /// What is wrong.
        reason: String,
    },
    /// The registration store file is not valid.
    #[error("registration store {}: {source}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

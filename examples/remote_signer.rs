//! A complete, minimal `hsm-core` driver, written to be copied: the private key lives in
//! **another process** (the "signer", standing in for a secure element, an HSM daemon or a TEE)
//! and the client reaches it over a Unix socket, so the key never enters the client's address
//! space.
//!
//! | file | what it holds |
//! |---|---|
//! | `remote_signer/protocol.rs` | the wire format: length-prefixed frames, TLS scheme codes |
//! | `remote_signer/client.rs` | [`RemoteKey`] (`KeyHandle`): the driver; with its certificate chain it becomes an `hsm_core::CertifiedKey` (`X509Attestation`) |
//! | `remote_signer/signer.rs` | the signer side: [`run_signer`] and [`serve`] |
//! | `remote_signer/process.rs` | [`SignerProcess`]: starts a signer as a child process |
//!
//! The driver in a few lines:
//! - [`RemoteKey::connect`] asks the signer for the key's algorithm and `SubjectPublicKeyInfo`
//!   once; [`KeyHandle::sign`](hsm_core::KeyHandle::sign) sends the *unhashed* message and the
//!   TLS scheme code, and turns the signer's raw ECDSA `r||s` into DER with
//!   `hsm_core::signature::ecdsa_raw_to_der` (the signature contract);
//! - connections are pooled, so any number of threads sign at once, and a connection the signer
//!   closed is replaced once, transparently;
//! - every failure is a typed [`Error`] (connect, I/O, oversized frame, malformed answer, the
//!   signer's refusal with its status), handed to callers as `hsm_core::Error::Device` with the
//!   [`Error`] as its source.
//!
//! The `custom_driver` example registers a device through it against the `dps-emulator`, and
//! `tests/custom_driver.rs` runs the `hsm-testkit` conformance suite on it.

mod client;
mod process;
mod protocol;
mod signer;

use std::io;
use std::path::PathBuf;

pub use client::RemoteKey;
pub use process::SignerProcess;
pub use protocol::{MAX_FRAME, Status};
pub use signer::{KeyType, SignerKey, run_signer, serve};

/// Everything that can go wrong between the driver and its signer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The signer's socket does not answer.
    #[error("cannot connect to the signer at {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Reading or writing the socket failed (the signer died, closed the connection, timed out).
    #[error("{operation} on the signer socket failed")]
    Io {
        /// `"send a request"`, `"read a response"`, ...
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A frame announced more than [`MAX_FRAME`] bytes: refused before allocating.
    #[error("a frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
    },

    /// The peer sent something the protocol does not allow.
    #[error("malformed {what}: {reason}")]
    Protocol {
        /// `"response"`, `"request"`, `"public key answer"`, ...
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The signer answered with an error status.
    #[error("the signer refused ({status}): {message}")]
    Refused {
        /// The status code it sent.
        status: Status,
        /// Its explanation.
        message: String,
    },

    /// The signer process could not be started or did not become ready.
    #[error("the signer process {reason}")]
    Process {
        /// What went wrong.
        reason: String,
        /// The operating system's error, if there was one.
        #[source]
        source: Option<io::Error>,
    },

    /// The signer's own key failed (signer side only).
    #[error("the signer's key failed")]
    Key(#[source] hsm_core::Error),
}

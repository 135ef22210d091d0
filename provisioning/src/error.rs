use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::RegistrationStatus;

/// A boxed cause from a library the client uses (hyper, rumqttc, rustls, rcgen), so that their
/// types stay out of this crate's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error body DPS sends with a non-2xx status: `{errorCode, trackingId, message,
/// timestampUtc}`. Every field is optional because a proxy or a broken service may send anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceError {
    /// The HTTP status (over MQTT, the status in the response topic).
    pub status: u16,
    /// DPS's error code, e.g. `401002`.
    pub error_code: Option<u64>,
    /// The tracking id to quote to Azure support.
    pub tracking_id: Option<String>,
    /// DPS's message.
    pub message: Option<String>,
    /// When DPS says the error happened (RFC 3339).
    pub timestamp_utc: Option<String>,
}

impl fmt::Display for ServiceError {
    /// What the server sent, its control characters escaped (a hostile server cannot send
    /// escape sequences to a terminal through this).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.status)?;
        if let Some(code) = self.error_code {
            write!(f, ", error code {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {}", hsm_core::untrusted::printable(message))?;
        }
        if let Some(tracking) = &self.tracking_id {
            write!(
                f,
                " (tracking id {})",
                hsm_core::untrusted::printable(tracking)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

/// Everything that can go wrong building a client or registering a device.
///
/// Retried (with backoff, within the retry policy and the overall deadline) before they are
/// returned: [`Throttled`](Self::Throttled), [`Transient`](Self::Transient),
/// [`Io`](Self::Io) and [`Mqtt`](Self::Mqtt). Returned at once: everything else, in
/// particular [`Unauthorized`](Self::Unauthorized), [`Rejected`](Self::Rejected),
/// [`Failed`](Self::Failed), [`Tls`](Self::Tls), [`Driver`](Self::Driver) and the protocol
/// errors [`MalformedResponse`](Self::MalformedResponse), [`ResponseTooLarge`](Self::ResponseTooLarge)
/// [`NotMqtt`](Self::NotMqtt) and [`NotAmqp`](Self::NotAmqp): a server that answers nonsense
/// answers it again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (no attestation, a bad endpoint or ID scope, no
    /// trusted roots, ...).
    #[error("invalid provisioning client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// DPS has no TPM attestation over MQTT; use HTTPS or AMQP.
    #[error("DPS does not support {attestation} attestation over MQTT; use HTTPS or AMQP")]
    UnsupportedOverMqtt {
        /// The attestation mechanism, `"TPM"`.
        attestation: &'static str,
    },

    /// DPS refused the device's credentials (HTTP 401, or MQTT CONNACK "not authorized"): a
    /// wrong key, a certificate no enrollment accepts, an expired SAS token. Never retried.
    #[error("DPS refused the device's credentials")]
    Unauthorized {
        /// What DPS said.
        #[source]
        error: ServiceError,
    },

    /// DPS refused the request for another reason (400 bad request, 404 unknown scope or
    /// operation, ...). Never retried.
    #[error("DPS rejected the request")]
    Rejected {
        /// What DPS said.
        #[source]
        error: ServiceError,
    },

    /// DPS kept throttling (429) after every retry the policy allows.
    #[error("DPS throttled the device {attempts} times in a row")]
    Throttled {
        /// Requests made for this step.
        attempts: u32,
        /// DPS's last answer.
        #[source]
        error: ServiceError,
    },

    /// DPS kept failing (5xx, 408) after every retry the policy allows.
    #[error("DPS failed {attempts} times in a row")]
    Transient {
        /// Requests made for this step.
        attempts: u32,
        /// DPS's last answer.
        #[source]
        error: ServiceError,
    },

    /// The registration ended with status `failed` or `disabled`.
    #[error("registration {status}{}", describe_failure(*error_code, message.as_deref()))]
    Failed {
        /// [`RegistrationStatus::Failed`] or [`RegistrationStatus::Disabled`].
        status: RegistrationStatus,
        /// DPS's `errorCode`.
        error_code: Option<u64>,
        /// DPS's `errorMessage`.
        message: Option<String>,
    },

    /// The overall deadline passed.
    #[error("registration did not finish within {after:?}")]
    Timeout {
        /// The deadline that was configured.
        after: Duration,
        /// The last retried failure before the deadline, if any.
        #[source]
        last: Option<Box<Error>>,
    },

    /// DPS asked (with `Retry-After`) to wait longer than the rest of the deadline allows.
    #[error(
        "DPS asked to wait {asked:?} before the next request, longer than the {left:?} left of \
         the {deadline:?} deadline (give a longer timeout, or register later)"
    )]
    WaitBeyondDeadline {
        /// The wait DPS asked for (after [`RetryPolicy`](crate::RetryPolicy)'s bounds).
        asked: Duration,
        /// What was left of the deadline.
        left: Duration,
        /// The configured deadline.
        deadline: Duration,
        /// The answer that asked for the wait, when it was an error (a 429 or 5xx).
        #[source]
        last: Option<Box<Error>>,
    },

    /// The server on the MQTT port does not speak MQTT (its first answer to CONNECT was
    /// something else).
    #[error("the server at the MQTT port does not speak MQTT: {reason}")]
    NotMqtt {
        /// What it answered.
        reason: String,
    },

    /// The server on the AMQP port (or behind the AMQP WebSocket) does not speak AMQP 1.0 as
    /// DPS does: another protocol header, a SASL exchange without the mechanism the
    /// attestation needs or with malformed challenges, a link it refused, a frame the AMQP
    /// library could not decode. Never retried.
    #[error("the server does not speak AMQP as DPS does: {reason}")]
    NotAmqp {
        /// What it did.
        reason: String,
    },

    /// A response could not be understood: invalid JSON, a missing or contradictory field
    /// (another operation id or registration id, an unknown status, bad base64).
    #[error("malformed DPS response to {operation}: {reason}")]
    MalformedResponse {
        /// The request it answered: `"register"` or `"poll"`.
        operation: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A response body was larger than the client accepts.
    #[error("DPS response to {operation} exceeds {limit} bytes")]
    ResponseTooLarge {
        /// The request it answered.
        operation: &'static str,
        /// The limit in bytes.
        limit: usize,
    },

    /// A TLS failure that retrying cannot fix: the server's certificate is not trusted, the
    /// server refused the client certificate, or a TLS configuration could not be built.
    #[error("TLS: {operation}")]
    Tls {
        /// What was being done, e.g. `"handshake with DPS"`.
        operation: &'static str,
        /// The TLS library's error.
        #[source]
        source: BoxError,
    },

    /// A network failure (connect, reset, closed, per-request timeout) that persisted through
    /// the retries.
    #[error("I/O: {operation}")]
    Io {
        /// What was being done, e.g. `"connect to DPS"`.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// An MQTT protocol failure that persisted through the retries.
    #[error("MQTT: {operation}")]
    Mqtt {
        /// What was being done.
        operation: &'static str,
        /// rumqttc's error.
        #[source]
        source: BoxError,
    },

    /// The HSM driver failed (signing a CSR, an HMAC for a SAS token, reading the TPM's keys,
    /// activating the TPM identity key).
    #[error("HSM driver: {operation}")]
    Driver {
        /// What was being done, e.g. `"HMAC the SAS token"`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: hsm_core::Error,
    },

    /// A CSR could not be built.
    #[error("cannot build the certificate signing request")]
    Csr {
        /// rcgen's error (the driver's own cause is logged by `hsm_core::RcgenSigner`).
        #[source]
        source: BoxError,
    },

    /// The hub refused the device's credential: MQTT CONNACK 5 (not authorized: a wrong or
    /// expired SAS token, a certificate that is not the device's, a device the hub does not
    /// know, has disabled or has moved to another hub), 4 (bad user name or password), 2
    /// or 1. Never retried: the credential or the assignment is wrong, and registering
    /// again is the remedy ([`Error::is_hub_refusal`]).
    #[error("the hub {hub} refused the device's credential (MQTT CONNACK {code}: {meaning})")]
    HubRefused {
        /// The hub.
        hub: String,
        /// The CONNACK return code.
        code: u8,
        /// What the code means.
        meaning: &'static str,
    },

    /// The hub answered CONNACK 3 (server unavailable) at every attempt.
    #[error("the hub {hub} is unavailable (MQTT CONNACK 3)")]
    HubUnavailable {
        /// The hub.
        hub: String,
    },

    /// The hub did not answer in time: the TCP connection, the TLS handshake, CONNACK, a
    /// telemetry acknowledgement, a twin answer, a ping.
    #[error("the hub did not answer the {operation} within {after:?}")]
    HubTimeout {
        /// What was waited for.
        operation: &'static str,
        /// The timeout.
        after: Duration,
    },

    /// The hub answered a request (a twin GET or PATCH, a certificate request) with an
    /// error status.
    #[error("the hub refused the {operation}")]
    HubRequest {
        /// The request.
        operation: &'static str,
        /// What the hub said (boxed: it is large, and rare).
        #[source]
        error: Box<ServiceError>,
        /// How long the hub asked to wait before asking again (its body's `retryAfter`).
        retry_after: Option<Duration>,
    },

    /// The hub's answer cannot be understood.
    #[error("malformed hub answer to the {operation}: {reason}")]
    Hub {
        /// The request it answered.
        operation: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The hub refused a subscription the client needs (SUBACK failure).
    #[error("the hub refused the subscription to {filter}")]
    HubSubscription {
        /// The topic filter.
        filter: &'static str,
    },

    /// The connection to the hub dropped and could not be made again: `cause` says why (a
    /// refusal, the network). Requests waiting on the connection fail with this; the next
    /// request tries to connect again.
    #[error("the connection to the hub {hub} was lost and could not be made again")]
    HubConnectionLost {
        /// The hub.
        hub: String,
        /// Why the last attempt failed.
        #[source]
        cause: Arc<Error>,
    },

    /// The assignment cache cannot be used (unreadable, truncated, corrupt, another format)
    /// or written. Reading it is never fatal: the device registers instead and logs this.
    #[error("the assignment cache {} cannot be used: {reason}", path.display())]
    Cache {
        /// The cache file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The device's certificate cannot be renewed: it was not issued for a key in a key
    /// store (a DICE device's keys follow its firmware and cannot rotate), or no key store
    /// was given.
    #[error("cannot renew the device certificate: {reason}")]
    CannotRenew {
        /// Why.
        reason: String,
    },

    /// A certificate the service issued cannot be used: it does not certify the key it was
    /// asked for, names another device, does not chain, or is not valid now.
    #[error("the issued certificate cannot be used: {reason}")]
    IssuedCertificate {
        /// What is wrong with it.
        reason: String,
    },

    /// A renewal stopped at a step on purpose (the crash-simulation hook of the tests); what
    /// it left behind is what a crash at that step leaves.
    #[error("the renewal was stopped after the step '{step}'")]
    RenewalStopped {
        /// The last step completed.
        step: &'static str,
    },

    /// The HTTP proxy could not be reached, or refused the tunnel (`407`: credentials, `403`:
    /// the target is not allowed, `502`: it could not reach the service). Names the proxy,
    /// never its credentials.
    #[error("the proxy {proxy} {reason}")]
    Proxy {
        /// The proxy, `http://host:port`.
        proxy: String,
        /// The proxy's answer to `CONNECT`, if it gave one.
        status: Option<u16>,
        /// What happened.
        reason: String,
        /// The network error, if that was it.
        #[source]
        source: Option<BoxError>,
    },

    /// The server refused the WebSocket upgrade (MQTT over WebSockets).
    #[error("{reason}")]
    WebSocket {
        /// What happened.
        reason: String,
        /// The WebSocket library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The hub client was disconnected.
    #[error("the hub connection is closed")]
    HubClosed,

    /// A telemetry message larger than IoT Hub takes.
    #[error("the message is {size} bytes, more than the {limit} bytes IoT Hub takes")]
    MessageTooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Error {
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }

    pub(crate) fn driver(operation: &'static str, source: hsm_core::Error) -> Self {
        Self::Driver { operation, source }
    }

    /// Whether this error is one the client retries before giving up (see the type's
    /// documentation).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. }
                | Self::Transient { .. }
                | Self::Io { .. }
                | Self::Mqtt { .. }
                | Self::HubUnavailable { .. }
                | Self::HubTimeout { .. }
                | Self::Proxy {
                    status: None | Some(502..=504),
                    ..
                }
        )
    }

    /// Whether the hub refused the device's credential ([`HubRefused`](Self::HubRefused),
    /// directly or as the cause of [`HubConnectionLost`](Self::HubConnectionLost)): what
    /// calls for registering again, as opposed to a network failure.
    pub fn is_hub_refusal(&self) -> bool {
        match self {
            Self::HubRefused { .. } => true,
            Self::HubConnectionLost { cause, .. } => cause.is_hub_refusal(),
            _ => false,
        }
    }
}

/// `": error code N: message"`, leaving out what DPS did not send.
fn describe_failure(error_code: Option<u64>, message: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(code) = error_code {
        text.push_str(&format!(": error code {code}"));
    }
    if let Some(message) = message {
        text.push_str(": ");
        text.push_str(&hsm_core::untrusted::printable(message));
    }
    text
}

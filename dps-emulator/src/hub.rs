//! The IoT Hub side: the emulator plays every hub it assigns. A device connects with the
//! credential it was provisioned with and is checked as IoT Hub checks it ([`auth`]); once in,
//! it sends telemetry ([`telemetry`]) and reads and reports its twin ([`twin`]). [`sessions`]
//! tracks who is connected, so that a newer connection, a disabled device or a device moved to
//! another hub ends the old one. The MQTT framing is in `crate::mqtt::hub`.

mod auth;
pub(crate) mod credentials;
mod sessions;
mod telemetry;
mod twin;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub(crate) use auth::{Admitted, Login};
pub(crate) use sessions::{Outbound, SessionHandle};
pub use telemetry::TelemetryMessage;
pub(crate) use telemetry::properties;
pub(crate) use twin::TwinError;

use crate::https::Limits;

/// API versions the hub accepts in the MQTT user name: the ones the device SDKs send, old and
/// new (`2025-08-01-preview` for certificate management).
pub const HUB_API_VERSIONS: &[&str] = &[
    "2016-11-14",
    "2017-06-30",
    "2018-06-30",
    "2019-03-30",
    "2019-10-01",
    "2020-09-30",
    "2021-04-12",
    "2025-08-01-preview",
];

/// Refusals kept for [`crate::Emulator::hub_refusals`], the oldest dropped first.
const REFUSALS_KEPT: usize = 1000;

/// Why a hub refused a connection. Devices only see CONNACK 5 (not authorized), or 4 for an
/// API version the hub does not know, as IoT Hub tells them no more; the reason goes to the
/// log and to [`crate::Emulator::hub_refusals`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The user name is not `{hub}/{deviceId}/?api-version=...`.
    #[error("the user name is not {{hub}}/{{deviceId}}/?api-version=...")]
    UserName,
    /// The user name's API version is missing or unknown (CONNACK 4).
    #[error("the API version {} is not supported", api_version.as_deref().map_or_else(|| "(none)".to_owned(), hsm_core::untrusted::quoted))]
    ApiVersion {
        /// The version asked for, if any.
        api_version: Option<String>,
    },
    /// The MQTT client id is not the device id of the user name.
    #[error("the client id is not the device id of the user name")]
    ClientId,
    /// No registration made a device with this id.
    #[error("no device with this id is registered")]
    UnknownDevice,
    /// The device is assigned to another hub.
    #[error("the device is assigned to {assigned}, not to this hub")]
    WrongHub {
        /// The hub it is assigned to.
        assigned: String,
    },
    /// An admin call disabled the device.
    #[error("the device is disabled")]
    Disabled,
    /// Neither a SAS token nor a client certificate.
    #[error("the device presented no credential (no password and no client certificate)")]
    NoCredential,
    /// The SAS token is malformed, for another resource, expired, has a key name, or is not
    /// signed with the device's key.
    #[error("{0}")]
    Sas(#[from] crate::SasError),
    /// A SAS token from a device that must present its certificate (X.509 attestation, or a
    /// certificate issued from its CSR).
    #[error("the device authenticates with its certificate, not with a SAS token")]
    SasNotAccepted,
    /// A TPM device whose hub key this emulator does not have (it restarted since the
    /// registration): it must register again.
    #[error("the emulator has no hub key for this TPM device (register it again)")]
    NoHubKey,
    /// A client certificate from a device that authenticates with a SAS token.
    #[error("the device authenticates with a SAS token, not with a certificate")]
    CertificateNotAccepted,
    /// The client certificate is neither the one the device registered with nor the one
    /// issued from its CSR (nor, in an X.509 group, one that chains to the group's CA with
    /// the device id as its common name).
    #[error("the certificate is not the device's registered or issued certificate")]
    NotTheCertificate,
    /// The client certificate has expired or is not valid yet.
    #[error("the certificate is not valid now")]
    CertificateNotValidNow,
}

/// A connection a hub refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubRefusal {
    /// The hub named in the user name (empty when the user name has none).
    pub hub: String,
    /// The device id the connection named (its client id when the user name has none).
    pub device_id: String,
    /// Why.
    pub reason: RefusalReason,
    /// When.
    pub at: SystemTime,
}

/// The hubs' state: sessions, twins, telemetry, refusals.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) sessions: sessions::Sessions,
    twins: twin::Twins,
    telemetry: telemetry::Log,
    refusals: Mutex<VecDeque<HubRefusal>>,
    connections: AtomicU64,
    /// The SHA-256 of the certificate each device last connected with.
    certificates: Mutex<std::collections::HashMap<String, String>>,
}

impl Hub {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            sessions: sessions::Sessions::default(),
            twins: twin::Twins::default(),
            telemetry: telemetry::Log::new(limits),
            refusals: Mutex::new(VecDeque::new()),
            connections: AtomicU64::new(0),
            certificates: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Keeps the certificate a device connected with (its SHA-256, lowercase hex).
    pub(crate) fn record_certificate(&self, device_id: &str, sha256: String) {
        self.certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device_id.to_owned(), sha256);
    }

    /// The certificate a device last connected with.
    pub(crate) fn last_certificate(&self, device_id: &str) -> Option<String> {
        self.certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(device_id)
            .cloned()
    }

    /// Connections accepted so far (CONNACK 0).
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs and keeps a refusal.
    pub(crate) fn refuse(&self, hub: &str, device_id: &str, reason: RefusalReason) {
        tracing::info!(
            hub = %hsm_core::untrusted::printable(hub),
            device_id = %hsm_core::untrusted::printable(device_id),
            %reason,
            "hub connection refused"
        );
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if refusals.len() == REFUSALS_KEPT {
            refusals.pop_front();
        }
        refusals.push_back(HubRefusal {
            hub: hub.to_owned(),
            device_id: device_id.to_owned(),
            reason,
            at: SystemTime::now(),
        });
    }

    pub(crate) fn refusals(&self) -> Vec<HubRefusal> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Creates the device's twin at its assignment (desired properties from the enrollment's
    /// initial twin), unless it has one.
    pub(crate) fn create_twin(&self, device_id: &str, initial: Option<&serde_json::Value>) {
        self.twins.create(device_id, initial);
    }

    /// The twin document a device reads: `{"desired": {...}, "reported": {...}}`, each with
    /// its `$version`.
    pub(crate) fn twin(&self, device_id: &str) -> serde_json::Value {
        self.twins.document(device_id)
    }

    /// Applies a reported-properties patch; returns the new reported version.
    pub(crate) fn patch_reported(&self, device_id: &str, patch: &[u8]) -> Result<u64, TwinError> {
        self.twins.patch_reported(device_id, patch)
    }

    /// Applies a desired-properties patch (an admin call) and sends it to the device if it is
    /// connected and subscribed; returns the new desired version.
    pub(crate) fn patch_desired(
        &self,
        device_id: &str,
        patch: &serde_json::Value,
    ) -> Result<u64, TwinError> {
        let (version, notification) = self.twins.patch_desired(device_id, patch)?;
        self.sessions
            .notify_desired(device_id, version, notification);
        Ok(version)
    }

    pub(crate) fn record_telemetry(&self, message: TelemetryMessage) {
        self.telemetry.record(message);
    }

    pub(crate) fn telemetry(&self) -> Vec<TelemetryMessage> {
        self.telemetry.messages()
    }

    pub(crate) fn telemetry_received(&self) -> u64 {
        self.telemetry.received()
    }
}

//! The provisioning service behind both endpoints: a [`Request`] in, a [`Reply`] out, whether it
//! came over HTTPS or MQTT. One module per operation: [`register`], [`operation`] (status of an
//! operation and of a registration), [`auth`] (one module per attestation mechanism) and
//! [`assign`]; this one holds the shared types and the dispatch, including fault injection.

mod assign;
mod auth;
mod identity;
mod operation;
mod register;

pub(crate) use assign::sha256_hex;
pub(crate) use auth::TpmKeys;
pub(crate) use identity::HubIdentity;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::{now_rfc3339, random_hex};
use crate::enrollment::{AllocationPolicy, Enrollments};
use crate::faults::{FaultKind, Faults};
use crate::https::Limits;
use crate::hub::Hub;
use crate::tls::Ca;
use crate::{Error, store};

/// API versions the emulator accepts: the ones the official SDKs send, old and new.
pub const API_VERSIONS: &[&str] = &[
    "2017-11-15",
    "2018-04-01",
    "2018-09-01-preview",
    "2018-11-01",
    "2019-01-15",
    "2019-03-31",
    "2021-06-01",
    "2021-10-01",
    "2021-11-01-preview",
    "2022-02-01",
    "2022-12-01",
    "2023-03-01",
    "2025-07-01-preview",
];

/// Service-wide settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) id_scope: String,
    pub(crate) iot_hubs: Vec<String>,
    pub(crate) allocation: AllocationPolicy,
    pub(crate) retry_after: u32,
    pub(crate) assigning_polls: u32,
    pub(crate) issued_certificate_validity: Duration,
    /// Seconds the emulator's clock is ahead of the system's (negative: behind), for SAS
    /// expiry checks: tests of devices whose clock is wrong.
    pub(crate) clock_offset: i64,
    /// Whether the hubs answer certificate requests (`$iothub/credentials`).
    pub(crate) hub_certificate_management: bool,
}

/// Which request this is.
#[derive(Debug)]
pub(crate) enum RequestKind {
    /// `PUT .../register` with its body.
    Register(Vec<u8>),
    /// `GET .../operations/{id}`.
    Operation(String),
    /// `POST .../registrations/{id}`: the device's registration state.
    Status,
    /// An MQTT CONNECT: authenticate only (200 or 401).
    Connect,
}

/// A device request, from either endpoint.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) id_scope: &'a str,
    pub(crate) registration_id: String,
    pub(crate) api_version: Option<String>,
    pub(crate) kind: RequestKind,
    pub(crate) authorization: Option<String>,
    pub(crate) client_chain: &'a [CertificateDer<'static>],
    pub(crate) transport: Transport,
}

/// The endpoint a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Https,
    Mqtt,
    Amqp,
}

/// What to send back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) retry_after: Option<u32>,
    /// Close the connection instead of answering.
    pub(crate) drop: bool,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            body: serde_json::to_vec(body).unwrap_or_default(),
            retry_after: None,
            drop: false,
        }
    }

    pub(crate) fn error(status: u16, error_code: u32, message: &str) -> Self {
        let tracking = random_hex(16);
        Self::json(
            status,
            &json!({
                "errorCode": error_code,
                "trackingId": tracking,
                "message": message,
                "timestampUtc": now_rfc3339(),
            }),
        )
    }

    fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// A device's registration, kept across registrations (and restarts, with a state file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRecord {
    /// The registration id.
    pub registration_id: String,
    /// The device id on the hub.
    pub device_id: String,
    /// The hub it is assigned to.
    pub assigned_hub: String,
    /// When it was first assigned (RFC 3339).
    pub created_date_time_utc: String,
    /// When it was last registered (RFC 3339).
    pub last_updated_date_time_utc: String,
    /// Changes at every registration.
    pub etag: String,
    /// The enrollment group, for group enrollments.
    #[serde(default)]
    pub enrollment_group_id: Option<String>,
    /// How the device attested.
    pub attestation: AttestationKind,
    /// How many times it registered.
    pub registrations: u32,
    /// Whether its hub lets it connect: `enabled` unless an admin call disabled it.
    #[serde(default)]
    pub status: DeviceStatus,
    /// The SHA-256 of the certificate it registered with (X.509 attestation), lowercase hex:
    /// the certificate its hub accepts, unless one was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    /// The SHA-256 of the certificate issued last (from the CSR of its last registration, or
    /// by its hub's certificate management since), lowercase hex: then the certificate its
    /// hub accepts, with `earlier_issued_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_certificate_sha256: Option<String>,
    /// Certificates its hub issued before the last one since its last registration (at most
    /// four, newest last): still accepted until they expire, as IoT Hub accepts every
    /// certificate it issued for the device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_issued_sha256: Vec<String>,
}

/// Whether a device may connect to its hub (IoT Hub's device `status`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeviceStatus {
    /// It may connect.
    #[default]
    Enabled,
    /// Its hub refuses it (CONNACK 5) and drops its connections.
    Disabled,
}

/// How a device attests, as DPS names it in `registrationState` (and in the state file).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttestationKind {
    /// An X.509 certificate chain (TLS client authentication).
    #[serde(rename = "x509")]
    X509,
    /// A symmetric key (SAS token).
    #[serde(rename = "symmetricKey")]
    SymmetricKey,
    /// A TPM (endorsement key, then a SAS token signed by the imported identity key).
    #[serde(rename = "tpm")]
    Tpm,
}

impl AttestationKind {
    /// The name DPS uses: `x509`, `symmetricKey`, `tpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::SymmetricKey => "symmetricKey",
            Self::Tpm => "tpm",
        }
    }
}

impl std::fmt::Display for AttestationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registration DPS has accepted and polls answer.
#[derive(Debug)]
struct Operation {
    registration_id: String,
    state: Value,
    polls_left: u32,
    created: Instant,
}

/// The operations polls can ask for, bounded ([`Limits`]): a device's new registration
/// replaces its earlier operation, operations expire after `operation_ttl`, and at most
/// `max_operations` are kept, the oldest going first.
#[derive(Debug, Default)]
struct Operations {
    by_id: HashMap<String, Operation>,
    /// Each registration id's latest operation.
    latest: HashMap<String, String>,
    /// Operation ids, oldest first (some already gone: replaced by a newer registration).
    order: VecDeque<String>,
}

impl Operations {
    fn insert(&mut self, id: String, operation: Operation, limits: &Limits) {
        if let Some(previous) = self
            .latest
            .insert(operation.registration_id.clone(), id.clone())
        {
            self.by_id.remove(&previous);
        }
        self.by_id.insert(id.clone(), operation);
        self.order.push_back(id);
        self.prune(limits);
    }

    /// The operation, unless it has expired.
    fn get_mut(&mut self, id: &str, limits: &Limits) -> Option<&mut Operation> {
        self.prune(limits);
        self.by_id.get_mut(id)
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn prune(&mut self, limits: &Limits) {
        let now = Instant::now();
        while let Some(oldest) = self.order.front() {
            let expired = match self.by_id.get(oldest) {
                None => true,
                Some(op) => {
                    self.by_id.len() > limits.max_operations
                        || now.duration_since(op.created) > limits.operation_ttl
                }
            };
            if !expired {
                break;
            }
            if let Some(id) = self.order.pop_front()
                && let Some(op) = self.by_id.remove(&id)
                && self.latest.get(&op.registration_id) == Some(&id)
            {
                self.latest.remove(&op.registration_id);
            }
        }
        // Replaced operations behind a live one: drop their ids once they are the majority.
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
    }
}

/// What the service remembers between requests.
#[derive(Default)]
struct State {
    operations: Operations,
    registrations: HashMap<String, RegistrationRecord>,
    /// TPM challenges issued, by registration id.
    tpm: HashMap<String, auth::TpmSession>,
    /// The hub key sent to each TPM device at its last assignment, by registration id: what
    /// its hub SAS tokens must be signed with. Kept in memory only (a restarted emulator has
    /// none: those devices must register again).
    hub_keys: HashMap<String, zeroize::Zeroizing<Vec<u8>>>,
    /// Registration ids by device id, for the hubs (which know devices by device id).
    devices: HashMap<String, String>,
}

/// The provisioning service.
pub(crate) struct Service {
    pub(crate) settings: Settings,
    pub(crate) enrollments: RwLock<Enrollments>,
    state: Mutex<State>,
    pub(crate) faults: Faults,
    pub(crate) ca: Ca,
    /// The hubs' side: sessions, twins, telemetry.
    pub(crate) hub: Hub,
    store: Option<PathBuf>,
    limits: Limits,
    /// Requests handled (register, poll, status, MQTT CONNECT), faults included.
    requests: std::sync::atomic::AtomicU64,
    /// Seconds the emulator's clock is ahead of the system's (negative: behind).
    pub(crate) clock_offset: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub(crate) fn new(
        settings: Settings,
        enrollments: Enrollments,
        ca: Ca,
        store: Option<PathBuf>,
        limits: Limits,
    ) -> Result<Self, Error> {
        let settings_offset = settings.clock_offset;
        let mut state = State::default();
        if let Some(path) = &store {
            state.registrations = store::load(path)?;
            state.devices = state
                .registrations
                .values()
                .map(|r| (r.device_id.clone(), r.registration_id.clone()))
                .collect();
        }
        Ok(Self {
            settings,
            enrollments: RwLock::new(enrollments),
            state: Mutex::new(state),
            faults: Faults::default(),
            ca,
            hub: Hub::new(limits),
            store,
            limits,
            requests: std::sync::atomic::AtomicU64::new(0),
            clock_offset: std::sync::atomic::AtomicI64::new(settings_offset),
        })
    }

    /// A service with the default settings and no enrollments, for unit tests.
    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub(crate) fn for_tests() -> Self {
        Self::new(
            crate::EmulatorBuilder::default().settings,
            Enrollments::default(),
            Ca::generate().unwrap(),
            None,
            Limits::default(),
        )
        .unwrap()
    }

    /// Now, in seconds since the Unix epoch, by the emulator's clock (the system's plus the
    /// configured offset).
    pub(crate) fn now(&self) -> u64 {
        crate::clock::unix_now().saturating_add_signed(self.clock_offset.load(Relaxed))
    }

    /// Requests handled so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many operations polls can still ask for.
    pub(crate) fn operations_kept(&self) -> usize {
        let mut state = self.lock();
        state.operations.prune(&self.limits);
        state.operations.len()
    }

    pub(crate) fn registrations(&self) -> Vec<RegistrationRecord> {
        let mut list: Vec<_> = self.lock().registrations.values().cloned().collect();
        list.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        list
    }

    /// The mutable state. Every update leaves the maps consistent before it can panic, so a
    /// poisoned lock is recovered.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `record` and writes the state file, if there is one.
    fn save(&self, state: &mut State, record: RegistrationRecord) {
        state
            .devices
            .insert(record.device_id.clone(), record.registration_id.clone());
        if let Some(previous) = state
            .registrations
            .insert(record.registration_id.clone(), record)
            && let Some(current) = state.registrations.get(&previous.registration_id)
            && current.device_id != previous.device_id
            && state.devices.get(&previous.device_id) == Some(&previous.registration_id)
        {
            state.devices.remove(&previous.device_id);
        }
        if let Some(path) = &self.store
            && let Err(e) = store::save(path, &state.registrations)
        {
            tracing::error!(error = %e, "cannot persist registrations");
        }
    }

    /// Handles one request, including any injected fault.
    pub(crate) async fn handle(&self, request: Request<'_>) -> Reply {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let is_poll = matches!(request.kind, RequestKind::Operation(_));
        let is_connect = matches!(request.kind, RequestKind::Connect);
        let fault = (!is_connect)
            .then(|| {
                let target = if is_poll {
                    crate::faults::FaultTarget::Poll
                } else {
                    crate::faults::FaultTarget::Register
                };
                self.faults.take(&request.registration_id, target)
            })
            .flatten();
        if let Some(fault) = fault {
            tracing::info!(registration_id = %request.registration_id, fault = ?fault.kind, "injecting fault");
            match fault.kind {
                FaultKind::Throttle { retry_after } => {
                    return Reply::error(429, 429001, "Operations are being throttled.")
                        .with_retry_after(retry_after);
                }
                FaultKind::Status { status } => {
                    return Reply::error(
                        status,
                        u32::from(status) * 1000,
                        "Injected service error.",
                    );
                }
                FaultKind::Drop => {
                    return Reply {
                        status: 500,
                        body: Vec::new(),
                        retry_after: None,
                        drop: true,
                    };
                }
                FaultKind::MalformedBody => {
                    return Reply {
                        status: if is_poll { 200 } else { 202 },
                        body: b"{\"operationId\": \"not json".to_vec(),
                        retry_after: Some(0),
                        drop: false,
                    };
                }
                FaultKind::Delay { .. } => {
                    if let Some(delay) = fault.delay() {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        self.handle_now(request)
    }

    fn handle_now(&self, request: Request<'_>) -> Reply {
        if let Err(reply) = self.check_common(&request) {
            return reply;
        }
        match &request.kind {
            RequestKind::Register(body) => self.register(&request, body),
            RequestKind::Operation(id) => self.operation(&request, id),
            RequestKind::Status => self.status(&request),
            RequestKind::Connect => match self.authenticate(&request, None) {
                Ok(_) => Reply::json(200, &json!({})),
                Err(reply) => reply,
            },
        }
    }

    /// Authenticates a device at AMQP's SASL layer (`PLAIN`, or `TPM`'s last step): the ID
    /// scope and registration id checked, then the SAS token. `Err` is the refusal, for the
    /// log (SASL answers only `auth`).
    pub(crate) fn authenticate_sasl(
        &self,
        id_scope: &str,
        registration_id: &str,
        token: &str,
    ) -> Result<(), Reply> {
        let request = self.sasl_request(id_scope, registration_id, Some(token))?;
        self.authenticate(&request, None).map(|_| ())
    }

    /// AMQP's SASL `TPM` challenge: the activation blob for the enrolled TPM with these keys
    /// (its key kept for the token that must follow), or the refusal.
    pub(crate) fn tpm_sasl_challenge(
        &self,
        id_scope: &str,
        registration_id: &str,
        keys: &auth::TpmKeys,
    ) -> Result<Vec<u8>, Reply> {
        let request = self.sasl_request(id_scope, registration_id, None)?;
        self.tpm_blob(&request, keys)
    }

    /// A SASL step as a request (counted), its ID scope and registration id checked; no API
    /// version (the links carry it).
    fn sasl_request<'a>(
        &self,
        id_scope: &'a str,
        registration_id: &str,
        token: Option<&str>,
    ) -> Result<Request<'a>, Reply> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = Request {
            id_scope,
            registration_id: registration_id.to_owned(),
            api_version: None,
            kind: RequestKind::Connect,
            authorization: token.map(str::to_owned),
            client_chain: &[],
            transport: Transport::Amqp,
        };
        self.check_identity(&request)?;
        Ok(request)
    }

    fn check_common(&self, request: &Request<'_>) -> Result<(), Reply> {
        match request.api_version.as_deref() {
            None => {
                return Err(Reply::error(
                    400,
                    400001,
                    "The api-version query parameter is required.",
                ));
            }
            Some(v) if !API_VERSIONS.contains(&v) => {
                return Err(Reply::error(
                    400,
                    400001,
                    &format!("The api-version '{v}' is not supported."),
                ));
            }
            Some(_) => {}
        }
        self.check_identity(request)
    }

    /// The registration id is valid and the ID scope is this service's.
    fn check_identity(&self, request: &Request<'_>) -> Result<(), Reply> {
        if hsm_core::RegistrationId::new(request.registration_id.as_str()).is_err() {
            return Err(Reply::error(
                400,
                400004,
                "The registration id is not valid.",
            ));
        }
        if !request
            .id_scope
            .eq_ignore_ascii_case(&self.settings.id_scope)
        {
            return Err(Reply::error(404, 404001, "The ID scope is unknown."));
        }
        Ok(())
    }
}

//! The provisioning logic shared by the HTTPS and MQTT endpoints: authentication against the
//! enrollments, the TPM challenge, assignment, operations, CSR issuance and fault injection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::enrollment::{
    AllocationPolicy, Common, Enrollments, GroupAttestation, IndividualAttestation, X509Match,
};
use crate::faults::{FaultKind, Faults};
use crate::sas::SasToken;
use crate::tls::{Ca, CsrError};
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

/// The first API version that carries a CSR.
const CSR_API_VERSION: &str = "2025-07-01-preview";

/// Service-wide settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) id_scope: String,
    pub(crate) iot_hubs: Vec<String>,
    pub(crate) allocation: AllocationPolicy,
    pub(crate) retry_after: u32,
    pub(crate) assigning_polls: u32,
    pub(crate) issued_certificate_validity: Duration,
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
    fn json(status: u16, body: &Value) -> Self {
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

/// The register request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    registration_id: Option<String>,
    tpm: Option<TpmBody>,
    payload: Option<Value>,
    csr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TpmBody {
    endorsement_key: String,
    storage_root_key: String,
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
    /// How the device attested: `x509`, `symmetricKey` or `tpm`.
    pub attestation: String,
    /// How many times it registered.
    pub registrations: u32,
}

#[derive(Debug)]
struct Operation {
    registration_id: String,
    state: Value,
    polls_left: u32,
}

/// The device-side half of a TPM registration: the key we duplicated to it.
struct TpmSession {
    key: Zeroizing<Vec<u8>>,
}

#[derive(Default)]
struct State {
    operations: HashMap<String, Operation>,
    registrations: HashMap<String, RegistrationRecord>,
    tpm: HashMap<String, TpmSession>,
}

/// What authentication established.
struct Authenticated {
    common: Common,
    device_id: String,
    group: Option<String>,
    attestation: &'static str,
    tpm: Option<(Vec<u8>, Vec<u8>)>,
}

/// The provisioning service.
pub(crate) struct Service {
    pub(crate) settings: Settings,
    pub(crate) enrollments: RwLock<Enrollments>,
    state: Mutex<State>,
    pub(crate) faults: Faults,
    pub(crate) ca: Ca,
    store: Option<PathBuf>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Reply(Reply),
    Continue,
}

impl Service {
    pub(crate) fn new(
        settings: Settings,
        enrollments: Enrollments,
        ca: Ca,
        store: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let mut state = State::default();
        if let Some(path) = &store {
            state.registrations = store::load(path)?;
        }
        Ok(Self {
            settings,
            enrollments: RwLock::new(enrollments),
            state: Mutex::new(state),
            faults: Faults::default(),
            ca,
            store,
        })
    }

    pub(crate) fn registrations(&self) -> Vec<RegistrationRecord> {
        let mut list: Vec<_> = self.lock().registrations.values().cloned().collect();
        list.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below leaves the maps consistent before it can panic: recover the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one request, including any injected fault.
    pub(crate) async fn handle(&self, request: Request<'_>) -> Reply {
        let is_poll = matches!(request.kind, RequestKind::Operation(_));
        let is_connect = matches!(request.kind, RequestKind::Connect);
        let fault = (!is_connect)
            .then(|| self.faults.take(&request.registration_id, is_poll))
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
        if let Outcome::Reply(reply) = self.check_common(&request) {
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

    fn check_common(&self, request: &Request<'_>) -> Outcome {
        match request.api_version.as_deref() {
            None => {
                return Outcome::Reply(Reply::error(
                    400,
                    400001,
                    "The api-version query parameter is required.",
                ));
            }
            Some(v) if !API_VERSIONS.contains(&v) => {
                return Outcome::Reply(Reply::error(
                    400,
                    400001,
                    &format!("The api-version '{v}' is not supported."),
                ));
            }
            Some(_) => {}
        }
        if hsm_core::RegistrationId::new(request.registration_id.as_str()).is_err() {
            return Outcome::Reply(Reply::error(
                400,
                400004,
                "The registration id is not valid.",
            ));
        }
        if !request
            .id_scope
            .eq_ignore_ascii_case(&self.settings.id_scope)
        {
            return Outcome::Reply(Reply::error(404, 404001, "The ID scope is unknown."));
        }
        Outcome::Continue
    }

    fn register(&self, request: &Request<'_>, body: &[u8]) -> Reply {
        let body: RegisterBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return Reply::error(
                    400,
                    400004,
                    &format!("The request body is not a valid registration: {e}"),
                );
            }
        };
        if body
            .registration_id
            .as_deref()
            .is_some_and(|id| id != request.registration_id)
        {
            return Reply::error(
                400,
                400004,
                "The registrationId in the body does not match the URL.",
            );
        }
        let tpm = match &body.tpm {
            None => None,
            Some(t) => match (
                BASE64.decode(&t.endorsement_key),
                BASE64.decode(&t.storage_root_key),
            ) {
                (Ok(ek), Ok(srk)) if !ek.is_empty() && !srk.is_empty() => Some((ek, srk)),
                _ => {
                    return Reply::error(
                        400,
                        400004,
                        "The TPM endorsement or storage root key is not base64.",
                    );
                }
            },
        };
        if tpm.is_some() && request.transport == Transport::Mqtt {
            return Reply::error(400, 400004, "TPM attestation is not supported over MQTT.");
        }
        let csr = match &body.csr {
            None => None,
            Some(_) if request.api_version.as_deref() < Some(CSR_API_VERSION) => {
                return Reply::error(
                    400,
                    400004,
                    &format!("A CSR needs api-version {CSR_API_VERSION} or later."),
                );
            }
            Some(csr) => match BASE64.decode(csr) {
                Ok(der) => Some(der),
                Err(_) => return Reply::error(400, 400004, "The CSR is not base64."),
            },
        };
        let auth = match self.authenticate(request, tpm.as_ref()) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let operation_id = format!("5.{}.{}", random_hex(8), random_uuid());
        let state = if auth.common.enabled {
            match self.assign(request, &auth, body.payload, csr.as_deref()) {
                Ok(state) => state,
                Err(reply) => return reply,
            }
        } else {
            tracing::info!(registration_id = %request.registration_id, "enrollment disabled");
            json!({
                "registrationId": request.registration_id,
                "status": "disabled",
                "errorCode": 401002,
                "errorMessage": "The enrollment is disabled.",
                "createdDateTimeUtc": now_rfc3339(),
                "lastUpdatedDateTimeUtc": now_rfc3339(),
            })
        };
        self.lock().operations.insert(
            operation_id.clone(),
            Operation {
                registration_id: request.registration_id.clone(),
                state,
                polls_left: self.settings.assigning_polls,
            },
        );
        Reply::json(
            202,
            &json!({"operationId": operation_id, "status": "assigning"}),
        )
        .with_retry_after(self.settings.retry_after)
    }

    fn operation(&self, request: &Request<'_>, operation_id: &str) -> Reply {
        if let Err(reply) = self.authenticate(request, None) {
            return reply;
        }
        let mut state = self.lock();
        let Some(op) = state
            .operations
            .get_mut(operation_id)
            .filter(|op| op.registration_id == request.registration_id)
        else {
            return Reply::error(404, 404001, "The operation is unknown.");
        };
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Reply::json(
                202,
                &json!({"operationId": operation_id, "status": "assigning"}),
            )
            .with_retry_after(self.settings.retry_after);
        }
        let status = op.state["status"].clone();
        Reply::json(
            200,
            &json!({
                "operationId": operation_id,
                "status": status,
                "registrationState": op.state,
            }),
        )
    }

    fn status(&self, request: &Request<'_>) -> Reply {
        if let Err(reply) = self.authenticate(request, None) {
            return reply;
        }
        match self.lock().registrations.get(&request.registration_id) {
            Some(r) => Reply::json(
                200,
                &json!({
                    "registrationId": r.registration_id,
                    "createdDateTimeUtc": r.created_date_time_utc,
                    "assignedHub": r.assigned_hub,
                    "deviceId": r.device_id,
                    "status": "assigned",
                    "substatus": "initialAssignment",
                    "lastUpdatedDateTimeUtc": r.last_updated_date_time_utc,
                    "etag": r.etag,
                }),
            ),
            None => Reply::error(404, 404001, "The device is not registered."),
        }
    }

    fn authenticate(
        &self,
        request: &Request<'_>,
        tpm: Option<&(Vec<u8>, Vec<u8>)>,
    ) -> Result<Authenticated, Reply> {
        let unauthorized = |why: &str| {
            tracing::info!(registration_id = %request.registration_id, reason = why, "unauthorized");
            Reply::error(401, 401002, "The device is unauthorized.")
        };
        let id = request.registration_id.as_str();
        let enrollments = self.enrollments.read().unwrap_or_else(|e| e.into_inner());
        let individual = enrollments.individual.get(id);
        if let Some(leaf) = request.client_chain.first() {
            if common_name(leaf).as_deref() != Some(id) {
                return Err(unauthorized("certificate CN is not the registration id"));
            }
            if let Some(e) = individual {
                let IndividualAttestation::X509(m) = &e.attestation else {
                    return Err(unauthorized("the enrollment is not X.509"));
                };
                let matches = match m {
                    X509Match::Certificate(c) => c.as_ref() == leaf.as_ref(),
                    X509Match::Thumbprint(t) => t.matches(leaf),
                };
                if !matches || !valid_now(leaf) {
                    return Err(unauthorized("certificate is not the enrolled one"));
                }
                return Ok(Authenticated {
                    common: e.common.clone(),
                    device_id: e.device_id.clone().unwrap_or_else(|| id.to_owned()),
                    group: None,
                    attestation: "x509",
                    tpm: None,
                });
            }
            for g in &enrollments.groups {
                let GroupAttestation::X509Ca(ca) = &g.attestation else {
                    continue;
                };
                if chain_verifies(leaf, &request.client_chain[1..], ca) {
                    return Ok(Authenticated {
                        common: g.common.clone(),
                        device_id: id.to_owned(),
                        group: Some(g.id.clone()),
                        attestation: "x509",
                        tpm: None,
                    });
                }
            }
            return Err(unauthorized("no enrollment group CA verifies the chain"));
        }
        let resource = format!("{}/registrations/{}", self.settings.id_scope, id);
        let now = unix_now();
        if let Some(header) = &request.authorization {
            let token = SasToken::parse(header).map_err(|e| unauthorized(&e.to_string()))?;
            if let Some(e) = individual {
                match &e.attestation {
                    IndividualAttestation::SymmetricKey(keys) => {
                        token
                            .verify(&resource, now, keys.keys())
                            .map_err(|e| unauthorized(&e.to_string()))?;
                        return Ok(Authenticated {
                            common: e.common.clone(),
                            device_id: e.device_id.clone().unwrap_or_else(|| id.to_owned()),
                            group: None,
                            attestation: "symmetricKey",
                            tpm: None,
                        });
                    }
                    IndividualAttestation::Tpm { endorsement_key } => {
                        if tpm.is_some_and(|(ek, _)| ek != endorsement_key) {
                            return Err(unauthorized("the EK is not the enrolled one"));
                        }
                        let state = self.lock();
                        let session = state
                            .tpm
                            .get(id)
                            .ok_or_else(|| unauthorized("no TPM challenge was issued"))?;
                        token
                            .verify(&resource, now, [session.key.as_slice()])
                            .map_err(|e| unauthorized(&e.to_string()))?;
                        return Ok(Authenticated {
                            common: e.common.clone(),
                            device_id: e.device_id.clone().unwrap_or_else(|| id.to_owned()),
                            group: None,
                            attestation: "tpm",
                            tpm: tpm.cloned(),
                        });
                    }
                    IndividualAttestation::X509(_) => {
                        return Err(unauthorized("the enrollment is X.509"));
                    }
                }
            }
            for g in &enrollments.groups {
                let GroupAttestation::SymmetricKey(keys) = &g.attestation else {
                    continue;
                };
                let derived = keys.derive(id);
                if token.verify(&resource, now, derived.keys()).is_ok() {
                    return Ok(Authenticated {
                        common: g.common.clone(),
                        device_id: id.to_owned(),
                        group: Some(g.id.clone()),
                        attestation: "symmetricKey",
                        tpm: None,
                    });
                }
            }
            return Err(unauthorized("no enrolled key signed the SAS token"));
        }
        if let (Some((ek, srk)), Some(e)) = (tpm, individual)
            && let IndividualAttestation::Tpm { endorsement_key } = &e.attestation
        {
            if endorsement_key != ek {
                return Err(unauthorized("the EK is not the enrolled one"));
            }
            return Err(self.tpm_challenge(id, ek, srk));
        }
        Err(unauthorized("no credential"))
    }

    /// Answers a TPM device's first request: 401 with an activation blob that only its TPM can
    /// open, carrying a fresh key it must sign its SAS token with.
    fn tpm_challenge(&self, id: &str, ek: &[u8], srk: &[u8]) -> Reply {
        let key = Zeroizing::new(random_bytes(32));
        match crate::tpm::activation_blob(ek, srk, &key) {
            Ok(blob) => {
                self.lock().tpm.insert(id.to_owned(), TpmSession { key });
                tracing::info!(registration_id = %id, "TPM challenge issued");
                Reply::json(
                    401,
                    &json!({
                        "authenticationKey": BASE64.encode(blob),
                        "keyName": "registration",
                    }),
                )
            }
            Err(reason) => Reply::error(
                400,
                400004,
                &format!("The TPM endorsement or storage root key is not usable: {reason}"),
            ),
        }
    }

    fn assign(
        &self,
        request: &Request<'_>,
        auth: &Authenticated,
        payload: Option<Value>,
        csr: Option<&[u8]>,
    ) -> Result<Value, Reply> {
        let id = request.registration_id.as_str();
        let hubs = if auth.common.iot_hubs.is_empty() {
            &self.settings.iot_hubs
        } else {
            &auth.common.iot_hubs
        };
        let policy = auth.common.allocation.unwrap_or(self.settings.allocation);
        let issued = match csr {
            None => None,
            Some(der) => Some(
                self.ca
                    .issue_from_csr(der, id, self.settings.issued_certificate_validity)
                    .map_err(|e| {
                        let why = match e {
                            CsrError::Malformed => "The CSR is not a valid PKCS#10 request.",
                            CsrError::Signature => "The CSR's signature does not verify.",
                            CsrError::CommonName => {
                                "The CSR's common name must be the registration id."
                            }
                        };
                        Reply::error(400, 400004, why)
                    })?,
            ),
        };
        let hub_key = match &auth.tpm {
            None => None,
            Some((ek, srk)) => {
                let key = Zeroizing::new(random_bytes(32));
                Some(
                    crate::tpm::activation_blob(ek, srk, &key).map_err(|reason| {
                        Reply::error(500, 500000, &format!("Cannot build the hub key: {reason}"))
                    })?,
                )
            }
        };
        let now = now_rfc3339();
        let (record, substatus) = {
            let mut state = self.lock();
            let previous = state.registrations.get(id).cloned();
            let (hub, substatus) = match &previous {
                Some(p) if hubs.contains(&p.assigned_hub) => {
                    (p.assigned_hub.clone(), "initialAssignment")
                }
                Some(_) => (choose_hub(hubs, policy, id), "deviceDataMigrated"),
                None => (choose_hub(hubs, policy, id), "initialAssignment"),
            };
            let record = RegistrationRecord {
                registration_id: id.to_owned(),
                device_id: auth.device_id.clone(),
                assigned_hub: hub,
                created_date_time_utc: previous
                    .as_ref()
                    .map_or_else(|| now.clone(), |p| p.created_date_time_utc.clone()),
                last_updated_date_time_utc: now.clone(),
                etag: format!("\"{}\"", random_uuid()),
                enrollment_group_id: auth.group.clone(),
                attestation: auth.attestation.to_owned(),
                registrations: previous.map_or(1, |p| p.registrations.saturating_add(1)),
            };
            state.registrations.insert(id.to_owned(), record.clone());
            if let Some(path) = &self.store
                && let Err(e) = store::save(path, &state.registrations)
            {
                tracing::error!(error = %e, "cannot persist registrations");
            }
            (record, substatus)
        };
        tracing::info!(
            registration_id = %id,
            hub = %record.assigned_hub,
            device_id = %record.device_id,
            attestation = auth.attestation,
            "assigned"
        );
        let mut state = json!({
            "registrationId": id,
            "createdDateTimeUtc": record.created_date_time_utc,
            "assignedHub": record.assigned_hub,
            "deviceId": record.device_id,
            "status": "assigned",
            "substatus": substatus,
            "lastUpdatedDateTimeUtc": record.last_updated_date_time_utc,
            "etag": record.etag,
        });
        let group = auth.group.as_ref().map(|g| json!({"enrollmentGroupId": g}));
        match auth.attestation {
            "x509" => state["x509"] = group.unwrap_or_else(|| json!({})),
            "symmetricKey" => state["symmetricKey"] = group.unwrap_or_else(|| json!({})),
            _ => {
                state["tpm"] = json!({
                    "authenticationKey": hub_key.map(|b| BASE64.encode(b)),
                });
            }
        }
        if let Some(p) = auth.common.return_payload.clone().or(payload) {
            state["payload"] = p;
        }
        if let Some(chain) = issued {
            state["issuedCertificateChain"] =
                Value::from(chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>());
        }
        Ok(state)
    }
}

fn choose_hub(hubs: &[String], policy: AllocationPolicy, id: &str) -> String {
    if hubs.is_empty() {
        return "emulated-hub.azure-devices.net".to_owned();
    }
    let index = match policy {
        AllocationPolicy::Static => 0,
        AllocationPolicy::Hashed => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(id.as_bytes());
            let n = u64::from_be_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7],
            ]);
            // The remainder is below hubs.len(), so it fits usize.
            usize::try_from(n % hubs.len() as u64).unwrap_or(0)
        }
    };
    hubs[index].clone()
}

/// The subject CN of a certificate, if it parses and has one.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    cert.tbs_certificate()
        .subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned())
}

fn valid_now(cert: &CertificateDer<'_>) -> bool {
    use der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let validity = cert.tbs_certificate().validity();
    let now = SystemTime::now();
    validity.not_before.to_system_time() <= now && now <= validity.not_after.to_system_time()
}

fn chain_verifies(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
) -> bool {
    let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let now = rustls_pki_types::UnixTime::now();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // Without an OS RNG there is no safe key to hand out; a panic here is the honest answer.
        panic!("the operating system's random number generator failed");
    }
    bytes
}

fn random_hex(n: usize) -> String {
    data_encoding::HEXLOWER.encode(&random_bytes(n))
}

fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

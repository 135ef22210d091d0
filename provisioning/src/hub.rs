//! The hub leg: connect to the IoT Hub a registration assigned, with the credential it
//! provisioned, and use it: telemetry, the device twin. MQTT 3.1.1 over TLS, as the Azure
//! device SDKs speak it (client id = device id; user name
//! `{hub}/{deviceId}/?api-version=2021-04-12`; a SAS token signed in the driver as the
//! password, or the TLS client certificate whose key stays in the HSM).
//!
//! ```no_run
//! # async fn run(registration: provisioning::Registration) -> Result<(), provisioning::Error> {
//! use provisioning::hub::{HubClient, Message};
//!
//! let hub = HubClient::builder_for(&registration).connect().await?;
//! hub.send_telemetry(Message::json(&serde_json::json!({"temperature": 21.5}))).await?;
//! let twin = hub.twin().await?;
//! hub.update_reported(&serde_json::json!({"firmware": "1.0"})).await?;
//! hub.disconnect().await;
//! # let _ = twin; Ok(()) }
//! ```
//!
//! A [`HubClient`] is one connection, kept by a task: it pings the hub when idle, makes a new
//! connection with a fresh SAS token before the old token expires, and when the connection
//! drops it connects again (a few attempts, with backoff) and sends again what the hub had
//! not acknowledged. When the hub refuses the credential ([`Error::HubRefused`], or
//! [`Error::HubConnectionLost`] caused by it: see [`Error::is_hub_refusal`]), the device
//! should register again.

mod link;
mod session;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use wire::{CERTIFICATE_API_VERSION, Twin, fuzz_hub_response};

use crate::endpoint::Endpoint;
use crate::{Error, HubCredentials, ProxySetting, Registration};
use hsm_core::CertificateDer;
use session::{Answer, Command, Credential, HubRequest, Settings};

/// The IoT Hub API version the client sends (the Azure device SDKs' current one).
pub const DEFAULT_HUB_API_VERSION: &str = "2021-04-12";
/// IoT Hub's MQTT port.
pub const DEFAULT_HUB_PORT: u16 = 8883;
/// The largest telemetry message IoT Hub takes.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Configures a [`HubClient`].
#[derive(Debug)]
pub struct HubClientBuilder {
    hub: String,
    device_id: String,
    credentials: HubCredentials,
    connect_to: Option<String>,
    api_version: String,
    model_id: Option<String>,
    keep_alive: Duration,
    sas_ttl: Duration,
    renewal_margin: Duration,
    timeout: Duration,
    attempts: u32,
    certificate_timeout: Duration,
    proxy: ProxySetting,
    websocket: bool,
}

impl HubClientBuilder {
    /// A client for `device_id` on `hub` (a host name, or `host:port`) with these
    /// credentials.
    pub fn new(
        hub: impl Into<String>,
        device_id: impl Into<String>,
        credentials: HubCredentials,
    ) -> Self {
        Self {
            hub: hub.into(),
            device_id: device_id.into(),
            credentials,
            connect_to: None,
            api_version: DEFAULT_HUB_API_VERSION.to_owned(),
            model_id: None,
            keep_alive: Duration::from_secs(180),
            sas_ttl: Duration::from_secs(3600),
            renewal_margin: Duration::from_secs(900),
            timeout: Duration::from_secs(30),
            attempts: 3,
            certificate_timeout: Duration::from_secs(120),
            proxy: ProxySetting::default(),
            websocket: false,
        }
    }

    /// A client for the hub and device a registration assigned, with its credentials, the
    /// registering client's proxy setting, and MQTT over WebSockets if DPS was reached so.
    pub fn from_registration(registration: &Registration) -> Self {
        let mut builder = Self::new(
            registration.assigned_hub.clone(),
            registration.device_id.clone(),
            registration.credentials.clone(),
        );
        builder.proxy = registration.network.proxy.clone();
        builder.websocket = registration.network.websocket;
        builder
    }

    /// MQTT over a WebSocket (`wss://{hub}:443/$iothub/websocket`, subprotocol `mqtt`)
    /// instead of MQTT on port 8883: for networks that allow only 443. The port is 443 (or
    /// the [`connect_to`](Self::connect_to) address's).
    #[must_use]
    pub fn websocket(mut self, websocket: bool) -> Self {
        self.websocket = websocket;
        self
    }

    /// Whether to tunnel through an HTTP proxy (default [`ProxySetting::FromEnvironment`]:
    /// `HTTPS_PROXY` unless `NO_PROXY` names the hub).
    #[must_use]
    pub fn proxy(mut self, proxy: ProxySetting) -> Self {
        self.proxy = proxy;
        self
    }

    /// Connects to this address (`host:port`) instead of the one the hub's name resolves to,
    /// still checking the hub's certificate for its name (as curl's `--connect-to`): for
    /// networks with private DNS, and for emulators.
    #[must_use]
    pub fn connect_to(mut self, address: impl Into<String>) -> Self {
        self.connect_to = Some(address.into());
        self
    }

    /// The IoT Hub API version (default [`DEFAULT_HUB_API_VERSION`]).
    #[must_use]
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// The IoT Plug and Play model the device implements (`dtmi:...`), announced at connect.
    #[must_use]
    pub fn model_id(mut self, model_id: impl Into<String>) -> Self {
        self.model_id = Some(model_id.into());
        self
    }

    /// The MQTT keep-alive: the client pings when the line has been idle this long (default
    /// 180 s; IoT Hub allows up to 1177 s; zero turns pings off).
    #[must_use]
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// How long each SAS token is valid (default 1 hour), and how long before it expires the
    /// client connects again with a new one (default 15 minutes).
    #[must_use]
    pub fn sas_lifetime(mut self, ttl: Duration, renewal_margin: Duration) -> Self {
        self.sas_ttl = ttl;
        self.renewal_margin = renewal_margin;
        self
    }

    /// How long each step and each request may take: TCP connect, TLS handshake, CONNACK,
    /// a telemetry acknowledgement, a twin answer, a ping (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connection attempts each time the client connects, transient failures only (the
    /// network, CONNACK 3 server unavailable, a step that timed out); default 3.
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// How long a [`issue_certificate`](HubClient::issue_certificate) request may take once
    /// the hub accepted it (default 120 s).
    #[must_use]
    pub fn certificate_timeout(mut self, timeout: Duration) -> Self {
        self.certificate_timeout = timeout;
        self
    }

    /// Connects (CONNACK received) and returns the client.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad hub name, address or lifetime; [`Error::HubRefused`] when
    /// the hub refuses the credential; [`Error::HubUnavailable`], [`Error::Io`] or
    /// [`Error::HubTimeout`] when it cannot be reached after every attempt; [`Error::Tls`]
    /// when TLS fails (an untrusted hub certificate, a client certificate the hub refuses);
    /// [`Error::NotMqtt`]; [`Error::Driver`] when the driver cannot sign the SAS token.
    pub async fn connect(self) -> Result<HubClient, Error> {
        let endpoint = Endpoint::parse_named("hub name", &self.hub, DEFAULT_HUB_PORT)?;
        let address = match &self.connect_to {
            Some(address) => {
                Endpoint::parse_named("connect-to address", address, DEFAULT_HUB_PORT)?
            }
            // Over WebSockets the hub answers on its HTTPS port.
            None if self.websocket => endpoint.with_port(443),
            None => endpoint.clone(),
        };
        let proxy = self.proxy.resolve()?.for_host(&address.host).cloned();
        if self.timeout.is_zero() {
            return Err(Error::config("the hub timeout must be more than zero"));
        }
        if self.renewal_margin >= self.sas_ttl {
            return Err(Error::config(
                "the SAS token's renewal margin must be shorter than its lifetime",
            ));
        }
        let (tls, credential) = split(self.credentials);
        let target = link::Target {
            username: wire::username(
                &self.hub,
                &self.device_id,
                &self.api_version,
                self.model_id.as_deref(),
            ),
            hub: self.hub.clone(),
            host: endpoint.host,
            address: (address.host, address.port),
            tls,
            client_id: self.device_id.clone(),
            keep_alive: self.keep_alive,
            timeout: self.timeout,
            proxy,
            websocket: self.websocket,
        };
        tracing::debug!(hub = %self.hub, device_id = %self.device_id, host = %target.address.0, port = target.address.1, "connecting to the hub");
        let (commands, task) = session::start(Settings {
            target,
            credential,
            sas_ttl: self.sas_ttl,
            renewal_margin: self.renewal_margin,
            timeout: self.timeout,
            attempts: self.attempts,
            certificate_timeout: self.certificate_timeout,
        })
        .await?;
        tracing::info!(hub = %self.hub, device_id = %self.device_id, "connected to the hub");
        Ok(HubClient {
            hub: self.hub,
            device_id: self.device_id,
            commands,
            task: Arc::new(task),
        })
    }
}

/// A device's connection to its IoT Hub. Cheap to clone (the clones share the connection);
/// it closes when [`disconnect`](Self::disconnect) is called or the last clone is dropped.
#[derive(Clone, Debug)]
pub struct HubClient {
    hub: String,
    device_id: String,
    commands: mpsc::Sender<Command>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl HubClient {
    /// A builder for `device_id` on `hub` with these credentials.
    pub fn builder(
        hub: impl Into<String>,
        device_id: impl Into<String>,
        credentials: HubCredentials,
    ) -> HubClientBuilder {
        HubClientBuilder::new(hub, device_id, credentials)
    }

    /// A builder for the hub and device a registration assigned.
    pub fn builder_for(registration: &Registration) -> HubClientBuilder {
        HubClientBuilder::from_registration(registration)
    }

    /// The hub's name.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Sends a telemetry message (QoS 1) and waits until the hub acknowledges it.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]; [`Error::HubTimeout`] when no acknowledgement came in
    /// time; [`Error::HubConnectionLost`] when the connection dropped and could not be made
    /// again; [`Error::HubClosed`] after [`disconnect`](Self::disconnect).
    pub async fn send_telemetry(&self, message: Message) -> Result<(), Error> {
        if message.payload.len() > MAX_MESSAGE {
            return Err(Error::MessageTooLarge {
                size: message.payload.len(),
                limit: MAX_MESSAGE,
            });
        }
        let topic = wire::telemetry_topic(&self.device_id, &message.properties);
        let (done, answer) = oneshot::channel();
        self.command(Command::Send {
            topic,
            payload: message.payload,
            done,
        })
        .await?;
        answer.await.map_err(|_| Error::HubClosed)?
    }

    /// Reads the device twin.
    ///
    /// # Errors
    /// [`Error::HubRequest`] when the hub answers with an error status; [`Error::Hub`]
    /// with a twin that cannot be read; the errors of
    /// [`send_telemetry`](Self::send_telemetry) otherwise.
    pub async fn twin(&self) -> Result<Twin, Error> {
        let answer = self.request(HubRequest::TwinGet).await?;
        Twin::parse(&answer.body).map_err(|reason| Error::Hub {
            operation: "twin GET",
            reason,
        })
    }

    /// Updates reported properties with a JSON patch (`null` deletes a property) and returns
    /// the new reported version.
    ///
    /// # Errors
    /// As [`twin`](Self::twin); [`Error::HubRequest`] with status 400 for a patch the hub
    /// refuses.
    pub async fn update_reported(&self, patch: &Value) -> Result<u64, Error> {
        let body = serde_json::to_vec(patch).map_err(|e| Error::config(e.to_string()))?;
        let answer = self
            .request(HubRequest::PatchReported(Bytes::from(body)))
            .await?;
        answer.version.ok_or_else(|| Error::Hub {
            operation: "reported-properties PATCH",
            reason: "the answer has no $version".into(),
        })
    }

    /// Asks the hub for a certificate for a CSR (DER PKCS#10; its common name the device's
    /// registration id, its key the one to certify): IoT Hub's certificate management
    /// (preview), which needs a connection made with API version
    /// [`CERTIFICATE_API_VERSION`] and a hub with an issuing policy. The request is published
    /// on `$iothub/credentials/POST/issueCertificate/`; the hub answers `202 Accepted` and
    /// then, on the same `$rid`, `200` with the chain. Returns the chain, leaf first, as sent
    /// (the caller checks that it certifies the key: see
    /// [`device`](crate::device), which does).
    ///
    /// # Errors
    /// [`Error::HubRequest`] with the hub's status and error body (429 and 503 carry
    /// `retry_after`); [`Error::Hub`] for an answer without a readable chain;
    /// [`Error::HubTimeout`] when no answer came within the timeout (or, once accepted,
    /// the [`certificate_timeout`](HubClientBuilder::certificate_timeout)); the connection
    /// errors of [`send_telemetry`](Self::send_telemetry).
    pub async fn issue_certificate(
        &self,
        csr_der: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        let body = wire::issue_certificate_body(&self.device_id, csr_der);
        let answer = self
            .request(HubRequest::IssueCertificate(Bytes::from(body)))
            .await?;
        wire::issued_chain(&answer.body).map_err(|reason| Error::Hub {
            operation: "certificate request",
            reason,
        })
    }

    /// Connects with other credentials from now on (a renewed certificate with its new key),
    /// on a new connection; telemetry not yet acknowledged is sent again on it. When the hub
    /// refuses them, the client connects again with the credentials it had and returns the
    /// refusal: it is never left without a working credential.
    ///
    /// # Errors
    /// [`Error::HubRefused`] and the other connection errors of
    /// [`HubClientBuilder::connect`], for the new credentials; [`Error::HubClosed`] after
    /// [`disconnect`](Self::disconnect).
    pub async fn replace_credentials(&self, credentials: HubCredentials) -> Result<(), Error> {
        let (tls, credential) = split(credentials);
        let (done, answer) = oneshot::channel();
        self.command(Command::Replace {
            tls,
            credential,
            done,
        })
        .await?;
        answer.await.map_err(|_| Error::HubClosed)?
    }

    /// Disconnects (DISCONNECT, then the TLS session closes). Requests still waiting fail
    /// with [`Error::HubClosed`].
    pub async fn disconnect(self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn request(&self, request: HubRequest) -> Result<Answer, Error> {
        let operation = request.operation();
        let (done, answer) = oneshot::channel();
        self.command(Command::Request { request, done }).await?;
        let answer = answer.await.map_err(|_| Error::HubClosed)??;
        if !(200..300).contains(&answer.status) {
            return Err(Error::HubRequest {
                operation,
                error: Box::new(wire::service_error(answer.status, &answer.body)),
                retry_after: wire::retry_after(&answer.body),
            });
        }
        Ok(answer)
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        if self.task.is_finished() {
            return Err(Error::HubClosed);
        }
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::HubClosed)
    }
}

/// The TLS configuration and what each CONNECT presents for these credentials.
fn split(credentials: HubCredentials) -> (Arc<rustls::ClientConfig>, Credential) {
    match credentials {
        HubCredentials::X509(config) => (config, Credential::Certificate),
        HubCredentials::Sas(signer) => (signer.tls_config().clone(), Credential::Sas(signer)),
    }
}

/// A telemetry message: a payload and its properties.
#[derive(Clone, Debug, Default)]
pub struct Message {
    payload: Bytes,
    properties: Vec<(String, String)>,
}

impl Message {
    /// A message with this payload and no properties.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            properties: Vec::new(),
        }
    }

    /// A JSON document, with content type `application/json` and encoding `utf-8` (so that
    /// IoT Hub message routing can query its body).
    pub fn json(document: &Value) -> Self {
        Self::new(document.to_string())
            .content_type("application/json")
            .content_encoding("utf-8")
    }

    /// An application property.
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// The content type (system property `$.ct`).
    #[must_use]
    pub fn content_type(self, value: impl Into<String>) -> Self {
        self.property("$.ct", value)
    }

    /// The content encoding (system property `$.ce`).
    #[must_use]
    pub fn content_encoding(self, value: impl Into<String>) -> Self {
        self.property("$.ce", value)
    }

    /// The message id (system property `$.mid`).
    #[must_use]
    pub fn message_id(self, value: impl Into<String>) -> Self {
        self.property("$.mid", value)
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hsm_core::{
    CertificateDer, KeyHandle, RegistrationId, SasToken, SasTokenBuilder, SymmetricKeyAttestation,
    TpmAttestation, X509Attestation,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tls_bridge::TlsIdentity;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::https::HttpsConnection;
use crate::mqtt::MqttConnection;
use crate::registration::HmacSource;
use crate::wire::{FinalState, RegisterBody, Reply, TpmKeys, parse_reply};
use crate::{
    Error, HubCredentials, HubSasSigner, Registration, RegistrationStatus, RetryPolicy,
    ServiceError,
};

/// The stable DPS API version, the default.
pub const DEFAULT_API_VERSION: &str = "2021-06-01";
/// The first API version that accepts a CSR; used whenever a certificate is requested.
pub const CSR_API_VERSION: &str = "2025-07-01-preview";
/// The default overall deadline of [`ProvisioningClient::register`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// DPS's MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 8883;

pub(crate) const USER_AGENT_VALUE: &str = concat!("hsm-provisioning/", env!("CARGO_PKG_VERSION"));

/// How the client talks to DPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// HTTPS (REST API), port 443 or the endpoint's port. Supports every attestation. The
    /// default.
    #[default]
    Https,
    /// MQTT 3.1.1 over TLS, port 8883 (see [`ProvisioningClientBuilder::mqtt_port`]). X.509 and
    /// symmetric key only: DPS has no TPM attestation over MQTT.
    Mqtt,
}

#[derive(Clone, Debug)]
enum Attestation {
    X509(Arc<dyn X509Attestation>),
    SymmetricKey(Arc<dyn SymmetricKeyAttestation>),
    Tpm(Arc<dyn TpmAttestation>),
}

impl Attestation {
    fn name(&self) -> &'static str {
        match self {
            Self::X509(_) => "X.509",
            Self::SymmetricKey(_) => "symmetric key",
            Self::Tpm(_) => "TPM",
        }
    }
}

/// A host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    /// Parses `host`, `host:port`, `[v6]:port`, optionally prefixed with `https://`.
    fn parse(text: &str, default_port: u16) -> Result<Self, Error> {
        let bad = |why: &str| Error::config(format!("global endpoint {text:?}: {why}"));
        let rest = text.trim();
        let rest = rest
            .strip_prefix("https://")
            .or_else(|| rest.strip_prefix("mqtts://"))
            .unwrap_or(rest)
            .trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("junk after the IPv6 address")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad("invalid host"));
        }
        rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| bad("not a DNS name or IP address"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One request to DPS.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    Register { body: &'a Bytes },
    Poll { operation_id: &'a str },
}

impl Request<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Poll { .. } => "poll",
        }
    }
}

/// How a transport-level failure is handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Retried on a new connection, then returned.
    Retry(Error),
    /// Returned at once.
    Fatal(Error),
}

/// Whether `error` or any of its causes is a rustls error (certificate not trusted, alert from
/// the peer): retrying cannot help.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_tls_failure(inner)
        {
            return true;
        }
        current = e.source();
    }
    false
}

pub(crate) fn classify_io(operation: &'static str, error: std::io::Error) -> Failure {
    if is_tls_failure(&error) {
        Failure::Fatal(Error::Tls {
            operation,
            source: Box::new(error),
        })
    } else {
        Failure::Retry(Error::Io {
            operation,
            source: Box::new(error),
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for values that came from
/// the network and go into a path or a topic).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a [`ProvisioningClient`].
#[derive(Debug)]
pub struct ProvisioningClientBuilder {
    endpoint: String,
    id_scope: String,
    attestations: Vec<Attestation>,
    transport: Transport,
    payload: Option<Value>,
    csr_key: Option<Arc<dyn KeyHandle>>,
    anchors: Vec<CertificateDer<'static>>,
    roots: Option<RootCertStore>,
    api_version: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
    mqtt_port: u16,
    provider: Option<Arc<CryptoProvider>>,
}

impl ProvisioningClientBuilder {
    /// Attests with an X.509 certificate chain and its alias key (TLS client authentication).
    #[must_use]
    pub fn x509(mut self, attestation: Arc<dyn X509Attestation>) -> Self {
        self.attestations.push(Attestation::X509(attestation));
        self
    }

    /// Attests with a symmetric key (a SAS token HMAC'd by the driver).
    #[must_use]
    pub fn symmetric_key(mut self, attestation: Arc<dyn SymmetricKeyAttestation>) -> Self {
        self.attestations
            .push(Attestation::SymmetricKey(attestation));
        self
    }

    /// Attests with a TPM (HTTPS only).
    #[must_use]
    pub fn tpm(mut self, attestation: Arc<dyn TpmAttestation>) -> Self {
        self.attestations.push(Attestation::Tpm(attestation));
        self
    }

    /// The transport (default HTTPS).
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// A custom payload sent with the registration (for custom allocation policies).
    #[must_use]
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Asks DPS to issue a certificate for this key: a PKCS#10 CSR with CN = registration id,
    /// signed through the handle, is sent with API version [`CSR_API_VERSION`] (or a later one
    /// given with [`api_version`](Self::api_version)). The issued chain is returned in
    /// [`Registration::issued_certificate_chain`] and used for the hub credentials.
    #[must_use]
    pub fn certificate_request(mut self, key: Arc<dyn KeyHandle>) -> Self {
        self.csr_key = Some(key);
        self
    }

    /// Trusts this CA certificate for DPS (and the hub). Without [`root_store`](Self::root_store),
    /// the trust anchors given here replace the platform's roots.
    #[must_use]
    pub fn trust_anchor(mut self, certificate: CertificateDer<'static>) -> Self {
        self.anchors.push(certificate);
        self
    }

    /// Trusts exactly these roots (plus any [`trust_anchor`](Self::trust_anchor)). Default:
    /// the platform's root certificates.
    #[must_use]
    pub fn root_store(mut self, roots: RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// The DPS API version (default [`DEFAULT_API_VERSION`]).
    #[must_use]
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// The overall deadline of one [`register`](ProvisioningClient::register) call, retries
    /// and polls included (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How polls and retries are timed (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The MQTT port on the global endpoint's host (default [`DEFAULT_MQTT_PORT`]).
    #[must_use]
    pub fn mqtt_port(mut self, port: u16) -> Self {
        self.mqtt_port = port;
        self
    }

    /// The rustls crypto provider (default: the process default, else ring). Pass
    /// `rustls::crypto::aws_lc_rs::default_provider()` (or install it as the process default)
    /// for AWS-LC, e.g. for its post-quantum key exchange.
    #[must_use]
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Checks the configuration and builds the client. For X.509 it checks that the alias key
    /// matches the leaf certificate.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or second attestation, an unusable endpoint, ID scope,
    /// API version or timeout, a CSR for a registration id longer than a common name, or no
    /// trusted roots; [`Error::UnsupportedOverMqtt`] for TPM over MQTT; [`Error::Tls`] when the
    /// X.509 chain does not match its key or rustls refuses the configuration.
    pub fn build(self) -> Result<ProvisioningClient, Error> {
        let mut attestations = self.attestations;
        let attestation = match (attestations.pop(), attestations.is_empty()) {
            (Some(a), true) => a,
            (None, _) => {
                return Err(Error::config(
                    "no attestation: call x509, symmetric_key or tpm",
                ));
            }
            (Some(_), false) => return Err(Error::config("more than one attestation")),
        };
        if matches!(attestation, Attestation::Tpm(_)) && self.transport == Transport::Mqtt {
            return Err(Error::UnsupportedOverMqtt {
                attestation: attestation.name(),
            });
        }
        let endpoint = Endpoint::parse(&self.endpoint, 443)?;
        let mqtt_endpoint = Endpoint {
            host: endpoint.host.clone(),
            port: self.mqtt_port,
        };
        let scope = self.id_scope.trim().to_owned();
        if scope.is_empty()
            || scope.len() > 64
            || !scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::config(format!("invalid ID scope {scope:?}")));
        }
        let mut api_version = self
            .api_version
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        if api_version.is_empty()
            || !api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::config(format!(
                "invalid API version {api_version:?}"
            )));
        }
        if self.csr_key.is_some() && api_version.as_str() < CSR_API_VERSION {
            api_version = CSR_API_VERSION.to_owned();
        }
        if let (Some(_), Attestation::X509(a)) = (&self.csr_key, &attestation)
            && !a.registration_id().fits_common_name()
        {
            return Err(Error::config(
                "a CSR needs a registration id of at most 64 characters (its common name)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("the timeout is zero"));
        }
        let mut roots = match self.roots {
            Some(roots) => roots,
            None if !self.anchors.is_empty() => RootCertStore::empty(),
            None => platform_roots().clone(),
        };
        for anchor in self.anchors {
            roots.add(anchor).map_err(|e| Error::Tls {
                operation: "add a trust anchor",
                source: Box::new(e),
            })?;
        }
        if roots.is_empty() {
            return Err(Error::config(
                "no trusted root certificates (none on the platform, none given)",
            ));
        }
        let provider = match self.provider {
            Some(p) => p,
            None => CryptoProvider::get_default()
                .cloned()
                // ring, not AWS-LC: AWS-LC seeds its DRBG from CPU jitter the first time a
                // process asks it for randomness (the TLS handshake), which costs ~60-80 ms of
                // CPU on a 2-core x86 machine and more on a small device, for each process that
                // registers once. ring reads the OS RNG. rumqttc already links ring.
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider())),
        };
        let identity = match &attestation {
            Attestation::X509(a) => Some(TlsIdentity::from_attestation(a.as_ref()).map_err(
                |e| Error::Tls {
                    operation: "use the X.509 attestation as a TLS identity",
                    source: Box::new(e),
                },
            )?),
            _ => None,
        };
        let mut dps_tls = match &identity {
            Some(identity) => identity
                .client_config_with(provider.clone(), rustls::DEFAULT_VERSIONS, roots.clone())
                .map_err(|e| Error::Tls {
                    operation: "build the DPS TLS configuration",
                    source: Box::new(e),
                })?,
            None => ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .map_err(|e| Error::Tls {
                    operation: "build the DPS TLS configuration",
                    source: Box::new(e),
                })?
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        };
        if self.transport == Transport::Https {
            dps_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(ProvisioningClient {
            inner: Arc::new(Inner {
                endpoint,
                mqtt_endpoint,
                id_scope: scope,
                attestation,
                transport: self.transport,
                payload: self.payload,
                csr_key: self.csr_key,
                api_version,
                timeout: self.timeout,
                retry: self.retry,
                dps_tls: Arc::new(dps_tls),
                hub_roots: roots,
                provider,
                identity,
            }),
        })
    }
}

/// An Azure IoT Device Provisioning Service client for one device.
///
/// Cheap to clone; [`register`](Self::register) may run any number of times, concurrently,
/// each on its own connection.
#[derive(Clone, Debug)]
pub struct ProvisioningClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    mqtt_endpoint: Endpoint,
    id_scope: String,
    attestation: Attestation,
    transport: Transport,
    payload: Option<Value>,
    csr_key: Option<Arc<dyn KeyHandle>>,
    api_version: String,
    timeout: Duration,
    retry: RetryPolicy,
    dps_tls: Arc<ClientConfig>,
    hub_roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    identity: Option<TlsIdentity>,
}

impl ProvisioningClient {
    /// A builder for a device in `id_scope` at `global_endpoint` (for Azure:
    /// `global.azure-devices-provisioning.net`; a port may follow, as `host:port`).
    pub fn builder(
        global_endpoint: impl Into<String>,
        id_scope: impl Into<String>,
    ) -> ProvisioningClientBuilder {
        ProvisioningClientBuilder {
            endpoint: global_endpoint.into(),
            id_scope: id_scope.into(),
            attestations: Vec::new(),
            transport: Transport::default(),
            payload: None,
            csr_key: None,
            anchors: Vec::new(),
            roots: None,
            api_version: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            mqtt_port: DEFAULT_MQTT_PORT,
            provider: None,
        }
    }

    /// The API version requests are sent with.
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// Registers the device: sends the registration, answers the TPM challenge, polls until
    /// DPS has decided, and returns the assignment with hub credentials.
    ///
    /// # Errors
    /// See [`Error`]: [`Error::Unauthorized`] at once for refused credentials,
    /// [`Error::Failed`] for status `failed` or `disabled`, [`Error::Timeout`] when the
    /// deadline passes, and the transient errors once the retry policy is exhausted.
    pub async fn register(&self) -> Result<Registration, Error> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.timeout;
        let mut run = Run {
            inner,
            deadline,
            requests: 0,
            last: None,
        };
        let span = tracing::info_span!("dps_register", transport = ?inner.transport, attestation = inner.attestation.name());
        let result = tokio::time::timeout_at(deadline, run.register().instrument(span)).await;
        match result {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(after = ?inner.timeout, "registration timed out");
                Err(Error::Timeout {
                    after: inner.timeout,
                    last: run.last.take().map(Box::new),
                })
            }
        }
    }
}

/// The platform's root certificates, loaded once per process: reading them takes ~10 ms (60 ms
/// cold) with a typical Debian bundle and certificate folder, which a factory building a client
/// per device would otherwise pay for every device. A root store change on disk is seen by the
/// next process.
fn platform_roots() -> &'static RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "cannot load a platform root certificate");
        }
        roots.add_parsable_certificates(native.certs);
        roots
    })
}

/// Runs a driver call on the blocking pool.
async fn blocking<T, F>(operation: &'static str, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, hsm_core::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::driver(operation, hsm_core::Error::device(operation, e)))?
        .map_err(|e| Error::driver(operation, e))
}

fn csr(key: Arc<dyn KeyHandle>, registration_id: &RegistrationId) -> Result<Vec<u8>, Error> {
    let signer =
        hsm_core::RcgenSigner::new(key).map_err(|e| Error::driver("use the CSR key", e))?;
    let csr_error = |e: rcgen::Error| Error::Csr {
        source: Box::new(e),
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(csr_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, registration_id.as_str());
    let request = params.serialize_request(&signer).map_err(csr_error)?;
    Ok(request.der().to_vec())
}

enum Connection {
    Https(HttpsConnection),
    Mqtt(Box<MqttConnection>),
}

impl Connection {
    async fn send(
        &mut self,
        request: &Request<'_>,
        registration_id: &str,
        authorization: Option<&str>,
    ) -> Result<crate::wire::RawResponse, Failure> {
        match self {
            Self::Https(c) => c.send(request, registration_id, authorization).await,
            Self::Mqtt(c) => c.send(request).await,
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Https(c) => c.reset(),
            Self::Mqtt(c) => c.reset(),
        }
    }
}

/// The state of one `register` call.
struct Run<'a> {
    inner: &'a Inner,
    deadline: Instant,
    requests: u32,
    /// The last retried failure, reported with a timeout.
    last: Option<Error>,
}

impl Run<'_> {
    async fn register(&mut self) -> Result<Registration, Error> {
        let inner = self.inner;
        let registration_id = match &inner.attestation {
            Attestation::X509(a) => a.registration_id().clone(),
            Attestation::SymmetricKey(a) => a.registration_id().clone(),
            Attestation::Tpm(t) => {
                let t = t.clone();
                blocking("read the TPM registration id", move || t.registration_id()).await?
            }
        };
        let csr = match &inner.csr_key {
            None => None,
            Some(key) => {
                if !registration_id.fits_common_name() {
                    return Err(Error::config(
                        "a CSR needs a registration id of at most 64 characters",
                    ));
                }
                let (key, id) = (key.clone(), registration_id.clone());
                let der = tokio::task::spawn_blocking(move || csr(key, &id))
                    .await
                    .map_err(|e| {
                        Error::driver("sign the CSR", hsm_core::Error::device("sign the CSR", e))
                    })??;
                Some(BASE64.encode(der))
            }
        };
        let tpm = match &inner.attestation {
            Attestation::Tpm(t) => {
                let t = t.clone();
                let (ek, srk) = blocking("read the TPM's EK and SRK", move || {
                    Ok((t.endorsement_key()?, t.storage_root_key()?))
                })
                .await?;
                Some(TpmKeys {
                    endorsement_key: BASE64.encode(ek),
                    storage_root_key: BASE64.encode(srk),
                })
            }
            _ => None,
        };
        let body = serde_json::to_vec(&RegisterBody {
            registration_id: registration_id.as_str(),
            tpm,
            payload: inner.payload.as_ref(),
            csr,
        })
        .map_err(|e| Error::config(format!("cannot encode the registration: {e}")))?;
        let body = Bytes::from(body);
        let hmac = match &inner.attestation {
            Attestation::X509(_) => None,
            Attestation::SymmetricKey(k) => Some(HmacSource::Symmetric(k.clone())),
            Attestation::Tpm(t) => Some(HmacSource::Tpm(t.clone())),
        };
        let sas_builder = || SasTokenBuilder::for_registration(&inner.id_scope, &registration_id);
        let mut authorization: Option<SasToken> = match (&inner.attestation, &hmac) {
            (Attestation::SymmetricKey(_), Some(source)) => {
                Some(source.token(sas_builder()).await?)
            }
            _ => None,
        };
        let mut connection = match inner.transport {
            Transport::Https => Connection::Https(HttpsConnection::new(
                inner.endpoint.clone(),
                inner.dps_tls.clone(),
                inner.id_scope.clone(),
                inner.api_version.clone(),
            )),
            Transport::Mqtt => Connection::Mqtt(Box::new(MqttConnection::new(
                inner.mqtt_endpoint.clone(),
                inner.dps_tls.clone(),
                &inner.id_scope,
                registration_id.as_str(),
                &inner.api_version,
                authorization.as_ref().map(SasToken::expose),
            ))),
        };
        tracing::info!(registration_id = %registration_id, api_version = %inner.api_version, "register");
        let mut challenged = false;
        let mut reply = loop {
            let reply = self
                .request(
                    &mut connection,
                    &Request::Register { body: &body },
                    &registration_id,
                    authorization.as_ref().map(SasToken::expose),
                    None,
                )
                .await?;
            let Reply::Challenge { authentication_key } = reply else {
                break reply;
            };
            let tpm = match &inner.attestation {
                Attestation::Tpm(t) if !challenged => t.clone(),
                _ => return Err(unexpected_challenge()),
            };
            tracing::info!(registration_id = %registration_id, "challenge: activating the TPM identity key");
            blocking("activate the TPM identity key", move || {
                tpm.activate_identity_key(&authentication_key)
            })
            .await?;
            challenged = true;
            authorization = match &hmac {
                Some(source) => Some(source.token(sas_builder()).await?),
                None => return Err(unexpected_challenge()),
            };
        };
        loop {
            match reply {
                Reply::Pending {
                    operation_id,
                    retry_after,
                } => {
                    let wait = inner
                        .retry
                        .retry_after(retry_after, inner.retry.default_poll_interval);
                    self.sleep(wait).await?;
                    tracing::debug!(registration_id = %registration_id, operation_id = %operation_id, "poll");
                    reply = self
                        .request(
                            &mut connection,
                            &Request::Poll {
                                operation_id: &operation_id,
                            },
                            &registration_id,
                            authorization.as_ref().map(SasToken::expose),
                            Some(&operation_id),
                        )
                        .await?;
                }
                Reply::Done(state) => return self.finish(registration_id, *state, hmac).await,
                Reply::Challenge { .. } | Reply::Status(..) => return Err(unexpected_challenge()),
            }
        }
    }

    /// Sends one request, retrying transient failures per the policy.
    async fn request(
        &mut self,
        connection: &mut Connection,
        request: &Request<'_>,
        registration_id: &RegistrationId,
        authorization: Option<&str>,
        operation_id: Option<&str>,
    ) -> Result<Reply, Error> {
        let policy = self.inner.retry;
        let operation = request.name();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.requests += 1;
            tracing::debug!(operation, attempt, "dps request");
            let sent = tokio::time::timeout(
                policy.request_timeout,
                connection.send(request, registration_id.as_str(), authorization),
            )
            .await;
            let (error, asked) = match sent {
                Err(_) => {
                    connection.reset();
                    let timeout = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", policy.request_timeout),
                    );
                    (
                        Error::Io {
                            operation: "wait for DPS",
                            source: Box::new(timeout),
                        },
                        None,
                    )
                }
                Ok(Err(Failure::Fatal(e))) => return Err(e),
                Ok(Err(Failure::Retry(e))) => (e, None),
                Ok(Ok(raw)) => {
                    tracing::debug!(operation, status = raw.status, retry_after = ?raw.retry_after, "dps response");
                    match parse_reply(&raw, operation_id, registration_id) {
                        Ok(Reply::Status(error, retry_after)) => match error.status {
                            401 => return Err(Error::Unauthorized { error }),
                            429 => (
                                Error::Throttled {
                                    attempts: attempt,
                                    error,
                                },
                                retry_after,
                            ),
                            408 | 500..=599 => (
                                Error::Transient {
                                    attempts: attempt,
                                    error,
                                },
                                retry_after,
                            ),
                            _ => return Err(Error::Rejected { error }),
                        },
                        Ok(reply) => return Ok(reply),
                        Err(malformed) => (
                            Error::MalformedResponse {
                                operation,
                                reason: malformed.0,
                            },
                            None,
                        ),
                    }
                }
            };
            if attempt > policy.max_retries {
                return Err(match error {
                    Error::Throttled { error, .. } => Error::Throttled {
                        attempts: attempt,
                        error,
                    },
                    Error::Transient { error, .. } => Error::Transient {
                        attempts: attempt,
                        error,
                    },
                    other => other,
                });
            }
            let wait = match asked {
                Some(asked) => policy.retry_after(Some(asked), Duration::ZERO),
                None => policy.backoff(attempt),
            };
            tracing::warn!(operation, attempt, error = %error, wait = ?wait, "retrying");
            self.last = Some(error);
            self.sleep(wait).await?;
        }
    }

    /// Sleeps, or fails at once with a timeout if the wait would pass the deadline.
    async fn sleep(&mut self, wait: Duration) -> Result<(), Error> {
        if Instant::now() + wait >= self.deadline {
            return Err(Error::Timeout {
                after: self.inner.timeout,
                last: self.last.take().map(Box::new),
            });
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        registration_id: RegistrationId,
        state: FinalState,
        hmac: Option<HmacSource>,
    ) -> Result<Registration, Error> {
        let inner = self.inner;
        if state.status != RegistrationStatus::Assigned {
            tracing::warn!(registration_id = %registration_id, status = %state.status, error_code = ?state.error_code, "registration not assigned");
            return Err(Error::Failed {
                status: state.status,
                error_code: state.error_code,
                message: state.error_message,
            });
        }
        let malformed = |reason: &str| Error::MalformedResponse {
            operation: "poll",
            reason: reason.to_owned(),
        };
        // parse_reply checked both for an assigned registration.
        let hub = state
            .assigned_hub
            .clone()
            .ok_or_else(|| malformed("no assignedHub"))?;
        let device_id = state
            .device_id
            .clone()
            .ok_or_else(|| malformed("no deviceId"))?;
        if let (Attestation::Tpm(tpm), Some(blob)) =
            (&inner.attestation, state.tpm_authentication_key.clone())
        {
            let tpm = tpm.clone();
            tracing::info!(registration_id = %registration_id, "importing the hub device key into the TPM");
            blocking("import the hub device key", move || {
                tpm.activate_identity_key(&blob)
            })
            .await?;
        }
        let tls_config = |identity: &TlsIdentity| {
            identity
                .client_config_with(
                    inner.provider.clone(),
                    rustls::DEFAULT_VERSIONS,
                    inner.hub_roots.clone(),
                )
                .map(Arc::new)
                .map_err(|e| Error::Tls {
                    operation: "build the hub TLS configuration",
                    source: Box::new(e),
                })
        };
        let credentials = match (&inner.csr_key, &inner.identity, hmac) {
            (Some(key), _, _) if !state.issued_certificate_chain.is_empty() => {
                let identity =
                    TlsIdentity::new(key.clone(), state.issued_certificate_chain.clone()).map_err(
                        |_| malformed("the issued certificate is not for the CSR's key"),
                    )?;
                HubCredentials::X509(tls_config(&identity)?)
            }
            (_, Some(identity), _) => HubCredentials::X509(tls_config(identity)?),
            (_, None, Some(source)) => {
                HubCredentials::Sas(HubSasSigner::new(hub.clone(), device_id.clone(), source))
            }
            (_, None, None) => return Err(malformed("no credentials for the hub")),
        };
        if inner.csr_key.is_some() && state.issued_certificate_chain.is_empty() {
            tracing::warn!(registration_id = %registration_id, "a CSR was sent but DPS issued no certificate");
        }
        tracing::info!(
            registration_id = %registration_id,
            hub = %hub,
            device_id = %device_id,
            substatus = ?state.substatus,
            requests = self.requests,
            "assigned"
        );
        Ok(Registration {
            registration_id,
            assigned_hub: hub,
            device_id,
            status: state.status,
            substatus: state.substatus,
            payload: state.payload,
            error_code: state.error_code,
            error_message: state.error_message,
            enrollment_group_id: state.enrollment_group_id,
            created_date_time_utc: state.created_date_time_utc,
            last_updated_date_time_utc: state.last_updated_date_time_utc,
            etag: state.etag,
            issued_certificate_chain: state.issued_certificate_chain,
            tpm_authentication_key: state.tpm_authentication_key,
            credentials,
            requests: self.requests,
        })
    }
}

fn unexpected_challenge() -> Error {
    Error::Unauthorized {
        error: ServiceError {
            status: 401,
            message: Some("DPS sent a TPM challenge that cannot be answered".into()),
            ..ServiceError::default()
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("global.azure-devices-provisioning.net", 443).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port),
            ("global.azure-devices-provisioning.net", 443)
        );
        assert_eq!(e.authority(), "global.azure-devices-provisioning.net");
        let e = Endpoint::parse("https://localhost:8443/", 443).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8443));
        assert_eq!(e.authority(), "localhost:8443");
        let e = Endpoint::parse("[::1]:9", 443).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(e.authority(), "[::1]:9");
        for bad in ["", "host:port", "a/b", "[::1", "host:99999", "[::1]x"] {
            assert!(Endpoint::parse(bad, 443).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("5.ab-c_d~"), "5.ab-c_d~");
        assert_eq!(percent_encode("a/b?c&d=e"), "a%2Fb%3Fc%26d%3De");
    }
}

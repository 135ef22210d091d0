//! [`ProvisioningClientBuilder`]: the client's configuration, checked once in
//! [`build`](ProvisioningClientBuilder::build).

use std::sync::Arc;
use std::time::Duration;

use hsm_core::untrusted::quoted;
use hsm_core::{
    CertificateDer, KeyHandle, SymmetricKeyAttestation, TpmAttestation, X509Attestation,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;

use crate::attestation::{self, Mechanism};
use crate::client::{Config, platform_roots};
use crate::endpoint::Endpoint;
use crate::proxy::ProxySetting;
use crate::{
    CSR_API_VERSION, Clock, DEFAULT_AMQP_PORT, DEFAULT_API_VERSION, DEFAULT_MQTT_PORT,
    DEFAULT_TIMEOUT, Error, ProvisioningClient, RetryPolicy, Transport,
};

/// Builds a [`ProvisioningClient`].
#[derive(Debug)]
pub struct ProvisioningClientBuilder {
    endpoint: String,
    id_scope: String,
    attestations: Vec<Arc<dyn Mechanism>>,
    transport: Transport,
    payload: Option<Value>,
    csr_key: Option<Arc<dyn KeyHandle>>,
    anchors: Vec<CertificateDer<'static>>,
    roots: Option<RootCertStore>,
    api_version: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
    mqtt_port: u16,
    amqp_port: u16,
    provider: Option<Arc<CryptoProvider>>,
    clock: Clock,
    proxy: ProxySetting,
}

impl ProvisioningClientBuilder {
    pub(crate) fn new(endpoint: String, id_scope: String) -> Self {
        Self {
            endpoint,
            id_scope,
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
            amqp_port: DEFAULT_AMQP_PORT,
            provider: None,
            clock: Clock::new(),
            proxy: ProxySetting::default(),
        }
    }

    /// Attests with an X.509 certificate chain and its alias key (TLS client authentication).
    #[must_use]
    pub fn x509(mut self, attestation: Arc<dyn X509Attestation>) -> Self {
        self.attestations
            .push(Arc::new(attestation::X509(attestation)));
        self
    }

    /// Attests with a symmetric key (a SAS token HMAC'd by the driver).
    #[must_use]
    pub fn symmetric_key(mut self, attestation: Arc<dyn SymmetricKeyAttestation>) -> Self {
        self.attestations
            .push(Arc::new(attestation::SymmetricKey(attestation)));
        self
    }

    /// Attests with a TPM (HTTPS only).
    #[must_use]
    pub fn tpm(mut self, attestation: Arc<dyn TpmAttestation>) -> Self {
        self.attestations
            .push(Arc::new(attestation::Tpm(attestation)));
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
    /// [`Registration::issued_certificate_chain`](crate::Registration::issued_certificate_chain)
    /// and used for the hub credentials.
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

    /// The AMQP port on the global endpoint's host (default [`DEFAULT_AMQP_PORT`]).
    #[must_use]
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = port;
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

    /// Whether connections (to DPS, and to the hub through [`HubClient::builder_for`]) go
    /// through an HTTP proxy: [`ProxySetting::FromEnvironment`] (the default: `HTTPS_PROXY`
    /// and `NO_PROXY`, read at [`build`](Self::build)), [`ProxySetting::Direct`], or a
    /// [`ProxySetting::Proxy`]. The TLS session runs inside the proxy's `CONNECT` tunnel, for
    /// every transport.
    ///
    /// [`HubClient::builder_for`]: crate::hub::HubClient::builder_for
    #[must_use]
    pub fn proxy(mut self, proxy: ProxySetting) -> Self {
        self.proxy = proxy;
        self
    }

    /// The clock SAS tokens are built with (default: a new [`Clock`], the system clock until
    /// the service's `Date` says otherwise). Share one clock between clients of the same
    /// device so that what one learns, the others use.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds the client. For X.509 it checks that the alias key
    /// matches the leaf certificate.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or second attestation, an unusable endpoint, ID scope,
    /// API version or timeout, a CSR for a registration id longer than a common name, or no
    /// trusted roots; [`Error::UnsupportedOverMqtt`] for TPM over
    /// MQTT; [`Error::Tls`] when the X.509 chain does not match its key or rustls refuses the
    /// configuration.
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
        if self.transport.is_mqtt() && !attestation.over_mqtt() {
            return Err(Error::UnsupportedOverMqtt {
                attestation: attestation.name(),
            });
        }
        self.transport.check_built()?;
        let endpoint = Endpoint::parse(&self.endpoint, 443)?;
        let id_scope = check_id_scope(&self.id_scope)?;
        let api_version = api_version(self.api_version, self.csr_key.is_some())?;
        if self.csr_key.is_some()
            && attestation
                .known_registration_id()
                .is_some_and(|id| !id.fits_common_name())
        {
            return Err(Error::config(
                "a CSR needs a registration id of at most 64 characters (its common name)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("the timeout is zero"));
        }
        let roots = roots(self.roots, self.anchors)?;
        let proxy = self.proxy.resolve()?;
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
        let identity = attestation.tls_identity()?;
        let tls_error = |e: rustls::Error| Error::Tls {
            operation: "build the DPS TLS configuration",
            source: Box::new(e),
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
                .map_err(tls_error)?
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        };
        if let Some(alpn) = self.transport.alpn() {
            dps_tls.alpn_protocols = vec![alpn.to_vec()];
        }
        // A registration is one connection (a few with retries), never resumed across
        // processes: no session tickets. Without the offer a TLS 1.3 server sends none, which
        // saves their bytes and, behind a proxy that relays without TCP_NODELAY, the ~40 ms
        // its second small segment (the tickets, then the answer) waits for a delayed ACK.
        dps_tls.resumption = rustls::client::Resumption::disabled();
        Ok(ProvisioningClient::new(Config {
            endpoint,
            mqtt_port: self.mqtt_port,
            amqp_port: self.amqp_port,
            id_scope,
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
            clock: self.clock,
            proxy,
            proxy_setting: self.proxy,
        }))
    }
}

/// An ID scope: 1 to 64 characters from `A-Z a-z 0-9 - _ .`.
fn check_id_scope(text: &str) -> Result<String, Error> {
    let scope = text.trim();
    if scope.is_empty()
        || scope.len() > 64
        || !scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::config(format!(
            "invalid ID scope {} (1 to 64 of A-Z, a-z, 0-9, '-', '_', '.')",
            quoted(scope)
        )));
    }
    Ok(scope.to_owned())
}

/// The API version: the one given (letters, digits, `-`) or the default; a CSR needs
/// [`CSR_API_VERSION`] or later.
fn api_version(given: Option<String>, csr: bool) -> Result<String, Error> {
    let version = given.unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Error::config(format!(
            "invalid API version {} (letters, digits and '-', e.g. 2021-06-01)",
            quoted(&version)
        )));
    }
    if csr && version.as_str() < CSR_API_VERSION {
        return Ok(CSR_API_VERSION.to_owned());
    }
    Ok(version)
}

/// The roots to trust: those given, else the anchors given, else the platform's; plus the
/// anchors.
fn roots(
    given: Option<RootCertStore>,
    anchors: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, Error> {
    let mut roots = match given {
        Some(roots) => roots,
        None if !anchors.is_empty() => RootCertStore::empty(),
        None => platform_roots().clone(),
    };
    for anchor in anchors {
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
    Ok(roots)
}

//! [`ProvisioningClient`]: a built, checked configuration; each
//! [`register`](ProvisioningClient::register) call is one [`Run`](crate::run::Run).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hsm_core::KeyHandle;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tls_bridge::TlsIdentity;
use tracing::Instrument as _;

use crate::attestation::Mechanism;
use crate::endpoint::Endpoint;
use crate::run::Run;
use crate::{
    Clock, Error, HubCredentials, HubSasSigner, ProvisioningClientBuilder, Registration,
    RetryPolicy, Transport,
};

/// The stable DPS API version, the default.
pub const DEFAULT_API_VERSION: &str = "2021-06-01";
/// The first API version that accepts a CSR; used whenever a certificate is requested.
pub const CSR_API_VERSION: &str = "2025-07-01-preview";
/// The default overall deadline of [`ProvisioningClient::register`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// DPS's MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 8883;
/// DPS's AMQP port (AMQP 1.0 over TLS).
pub const DEFAULT_AMQP_PORT: u16 = 5671;

pub(crate) const USER_AGENT_VALUE: &str = concat!("hsm-provisioning/", env!("CARGO_PKG_VERSION"));

/// An Azure IoT Device Provisioning Service client for one device.
///
/// Cheap to clone; [`register`](Self::register) may run any number of times, concurrently,
/// each on its own connection.
#[derive(Clone, Debug)]
pub struct ProvisioningClient {
    config: Arc<Config>,
}

/// Everything [`ProvisioningClientBuilder::build`] checked, shared by every registration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) endpoint: Endpoint,
    pub(crate) mqtt_port: u16,
    pub(crate) amqp_port: u16,
    pub(crate) id_scope: String,
    pub(crate) attestation: Arc<dyn Mechanism>,
    pub(crate) transport: Transport,
    pub(crate) payload: Option<Value>,
    pub(crate) csr_key: Option<Arc<dyn KeyHandle>>,
    pub(crate) api_version: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// The TLS configuration for DPS (with the client certificate for X.509).
    pub(crate) dps_tls: Arc<ClientConfig>,
    /// The roots the hub TLS configuration trusts (the same as DPS's).
    pub(crate) hub_roots: RootCertStore,
    pub(crate) provider: Arc<CryptoProvider>,
    /// The X.509 attestation's TLS identity.
    pub(crate) identity: Option<TlsIdentity>,
    /// The time SAS tokens are built with.
    pub(crate) clock: Clock,
    /// The proxy decision, read once.
    pub(crate) proxy: crate::proxy::ProxyRoute,
    /// What was asked for, handed to hub connections of its registrations.
    pub(crate) proxy_setting: crate::proxy::ProxySetting,
}

impl Config {
    /// What each connection of a registration of `registration_id` is opened for.
    pub(crate) fn session(
        &self,
        registration_id: &hsm_core::RegistrationId,
    ) -> crate::transport::Session {
        crate::transport::Session {
            endpoint: self.endpoint.clone(),
            mqtt_port: self.mqtt_port,
            amqp_port: self.amqp_port,
            tls: self.dps_tls.clone(),
            proxy: self.proxy.for_host(&self.endpoint.host).cloned(),
            id_scope: self.id_scope.clone(),
            registration_id: registration_id.clone(),
            api_version: self.api_version.clone(),
        }
    }

    /// The hub credentials for `device_id` on `hub`: the issued certificate with its key when
    /// there is one, else the X.509 attestation's certificate, else a SAS signer over the
    /// attestation's key (with this client's clock).
    ///
    /// # Errors
    /// [`Error::Tls`] when rustls refuses the configuration; [`Error::MalformedResponse`]
    /// when there is nothing to authenticate with.
    pub(crate) fn hub_credentials(
        &self,
        hub: &str,
        device_id: &str,
        issued: Option<&TlsIdentity>,
    ) -> Result<HubCredentials, Error> {
        let tls_error = |e: rustls::Error| Error::Tls {
            operation: "build the hub TLS configuration",
            source: Box::new(e),
        };
        let with_identity = |identity: &TlsIdentity| {
            identity
                .client_config_with(
                    self.provider.clone(),
                    rustls::DEFAULT_VERSIONS,
                    self.hub_roots.clone(),
                )
                .map(|c| HubCredentials::X509(Arc::new(c)))
                .map_err(|e| Error::Tls {
                    operation: "build the hub TLS configuration",
                    source: Box::new(e),
                })
        };
        if let Some(identity) = issued.or(self.identity.as_ref()) {
            return with_identity(identity);
        }
        let Some(source) = self.attestation.sas_signer() else {
            return Err(Error::MalformedResponse {
                operation: "poll",
                reason: "no credentials for the hub".into(),
            });
        };
        let tls = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(tls_error)?
            .with_root_certificates(self.hub_roots.clone())
            .with_no_client_auth();
        Ok(HubCredentials::Sas(
            HubSasSigner::new(hub.to_owned(), device_id.to_owned(), source, Arc::new(tls))
                .clock(self.clock.clone()),
        ))
    }
}

impl ProvisioningClient {
    /// A builder for a device in `id_scope` at `global_endpoint` (for Azure:
    /// `global.azure-devices-provisioning.net`; a port may follow, as `host:port`).
    pub fn builder(
        global_endpoint: impl Into<String>,
        id_scope: impl Into<String>,
    ) -> ProvisioningClientBuilder {
        ProvisioningClientBuilder::new(global_endpoint.into(), id_scope.into())
    }

    pub(crate) fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The clock SAS tokens are built with (shared with the hub credentials it returns).
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// This client, sending a CSR signed by `key` with each registration (as
    /// [`certificate_request`](ProvisioningClientBuilder::certificate_request)), with API
    /// version [`CSR_API_VERSION`] at least.
    ///
    /// # Errors
    /// [`Error::Config`] when the registration id is too long for a common name.
    pub fn with_certificate_request(&self, key: Arc<dyn KeyHandle>) -> Result<Self, Error> {
        if self
            .config
            .attestation
            .known_registration_id()
            .is_some_and(|id| !id.fits_common_name())
        {
            return Err(Error::config(
                "a CSR needs a registration id of at most 64 characters (its common name)",
            ));
        }
        let mut config = Config::clone(&self.config);
        config.csr_key = Some(key);
        if config.api_version.as_str() < CSR_API_VERSION {
            config.api_version = CSR_API_VERSION.to_owned();
        }
        Ok(Self::new(config))
    }

    /// The API version requests are sent with.
    pub fn api_version(&self) -> &str {
        &self.config.api_version
    }

    /// Registers the device: sends the registration, answers the TPM challenge, polls until
    /// DPS has decided, and returns the assignment with hub credentials.
    ///
    /// # Errors
    /// See [`Error`]: [`Error::Unauthorized`] at once for refused credentials,
    /// [`Error::Failed`] for status `failed` or `disabled`, [`Error::Timeout`] when the
    /// deadline passes, and the transient errors once the retry policy is exhausted.
    pub async fn register(&self) -> Result<Registration, Error> {
        let config = &*self.config;
        let mut run = Run::new(config);
        let span = tracing::info_span!("dps_register", transport = ?config.transport, attestation = config.attestation.name());
        let result = tokio::time::timeout_at(run.deadline(), run.register().instrument(span)).await;
        match result {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(after = ?config.timeout, "registration timed out");
                Err(run.timed_out())
            }
        }
    }
}

/// The platform's root certificates, loaded once per process: reading them takes ~10 ms (60 ms
/// cold) with a typical Debian bundle and certificate folder, which a factory building a client
/// per device would otherwise pay for every device. A root store change on disk is seen by the
/// next process.
pub(crate) fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
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

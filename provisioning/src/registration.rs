use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hsm_core::{
    CertificateDer, Expiry, RegistrationId, SasToken, SasTokenBuilder, SymmetricKeyAttestation,
    TpmAttestation, X509Attestation,
};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;

use crate::{Clock, Error, RegistrationStatus};

/// The result of a successful registration: where the device was assigned and how to reach
/// its hub.
#[derive(Debug)]
#[non_exhaustive]
pub struct Registration {
    /// The device's registration id.
    pub registration_id: RegistrationId,
    /// The IoT Hub host name, e.g. `contoso-hub.azure-devices.net`.
    pub assigned_hub: String,
    /// The device id on that hub.
    pub device_id: String,
    /// Always [`RegistrationStatus::Assigned`] here (`failed` and `disabled` are
    /// [`Error::Failed`]).
    pub status: RegistrationStatus,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset` or
    /// `reprovisionedToInitialAssignment`.
    pub substatus: Option<String>,
    /// The payload returned by a custom allocation policy (or echoed), if any.
    pub payload: Option<Value>,
    /// DPS's `errorCode`, if it set one.
    pub error_code: Option<u64>,
    /// DPS's `errorMessage`, if it set one.
    pub error_message: Option<String>,
    /// The enrollment group the device registered through, if any.
    pub enrollment_group_id: Option<String>,
    /// When the device was first registered (RFC 3339), as DPS reports it.
    pub created_date_time_utc: Option<String>,
    /// When the registration last changed (RFC 3339).
    pub last_updated_date_time_utc: Option<String>,
    /// The registration's etag.
    pub etag: Option<String>,
    /// The certificate chain DPS issued for the CSR (leaf first); empty without a CSR.
    pub issued_certificate_chain: Vec<CertificateDer<'static>>,
    /// TPM only: the hub device key DPS sent (`registrationState.tpm.authenticationKey`), an
    /// activation blob only this TPM can open. The client has already imported it through
    /// `TpmAttestation::activate_identity_key`, so the TPM's identity key is now the hub key.
    pub tpm_authentication_key: Option<Vec<u8>>,
    /// How to authenticate to the hub.
    pub credentials: HubCredentials,
    /// Requests sent to DPS during this registration (register requests, polls and retries).
    pub requests: u32,
    /// How the client reached DPS, for the hub connection: its proxy setting, and MQTT over
    /// WebSockets if DPS was reached so.
    pub(crate) network: HubNetwork,
}

impl Registration {
    /// Whether hub connections built from it ([`HubClient::builder_for`](crate::hub::HubClient::builder_for))
    /// use MQTT over WebSockets on port 443: when DPS was reached over a WebSocket (MQTT or
    /// AMQP), as a network that allows nothing else needs.
    pub fn hub_over_websocket(&self) -> bool {
        self.network.websocket
    }
}

/// The network settings a registration hands to its hub connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct HubNetwork {
    pub(crate) proxy: crate::ProxySetting,
    pub(crate) websocket: bool,
}

/// Credentials for the assigned IoT Hub, with the private key still in the HSM.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HubCredentials {
    /// A TLS client configuration presenting the device certificate (the issued chain if a CSR
    /// was sent, else the attestation's chain) with the key handle, trusting the same roots as
    /// the DPS connection. Given for X.509 attestation and whenever a certificate was issued.
    X509(Arc<rustls::ClientConfig>),
    /// A SAS-token signer for `{hub}/devices/{deviceId}` that signs with the driver, with the
    /// TLS configuration to present its tokens over: symmetric key and TPM attestation without
    /// a CSR.
    Sas(HubSasSigner),
}

impl HubCredentials {
    /// X.509 credentials for a device certificate whose key is a handle (the key stays in
    /// the HSM), trusting `roots` for the hub.
    ///
    /// # Errors
    /// [`Error::Tls`] when the certificate and key cannot make a TLS identity.
    pub fn x509(identity: &dyn X509Attestation, roots: RootCertStore) -> Result<Self, Error> {
        let tls = |e: tls_bridge::Error| Error::Tls {
            operation: "build the hub TLS configuration",
            source: Box::new(e),
        };
        let identity = tls_bridge::TlsIdentity::from_attestation(identity).map_err(tls)?;
        Ok(Self::X509(Arc::new(
            identity.client_config(roots).map_err(tls)?,
        )))
    }

    /// The TLS configuration the hub connection uses.
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        match self {
            Self::X509(config) => config,
            Self::Sas(signer) => &signer.tls,
        }
    }
}

#[derive(Clone)]
pub(crate) enum HmacSource {
    Symmetric(Arc<dyn SymmetricKeyAttestation>),
    Tpm(Arc<dyn TpmAttestation>),
}

impl HmacSource {
    pub(crate) fn hmac(&self, data: &[u8]) -> Result<[u8; 32], hsm_core::Error> {
        match self {
            Self::Symmetric(key) => key.hmac_sha256(data),
            Self::Tpm(tpm) => tpm.sign_with_identity(data),
        }
    }

    /// Builds a token in a blocking task (drivers block on their device).
    pub(crate) async fn token(&self, builder: SasTokenBuilder) -> Result<SasToken, Error> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || builder.sign(|data| source.hmac(data)))
            .await
            .map_err(|e| Error::Driver {
                operation: "sign a SAS token",
                source: hsm_core::Error::device("sign a SAS token", e),
            })?
            .map_err(|e| Error::driver("sign a SAS token", e))
    }
}

impl fmt::Debug for HmacSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Symmetric(key) => f.debug_tuple("Symmetric").field(key).finish(),
            Self::Tpm(tpm) => f.debug_tuple("Tpm").field(tpm).finish(),
        }
    }
}

/// Signs IoT Hub SAS tokens (`sr={hub}/devices/{deviceId}`) with the device's key, inside the
/// driver: the symmetric key's HMAC, or the TPM's identity key (the hub key DPS sent, already
/// imported).
#[derive(Clone)]
pub struct HubSasSigner {
    hub: String,
    device_id: String,
    source: HmacSource,
    tls: Arc<ClientConfig>,
    clock: Clock,
}

impl fmt::Debug for HubSasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSasSigner")
            .field("hub", &self.hub)
            .field("device_id", &self.device_id)
            .field("source", &self.source)
            .field("clock_offset", &self.clock.offset())
            .finish_non_exhaustive()
    }
}

impl HubSasSigner {
    pub(crate) fn new(
        hub: String,
        device_id: String,
        source: HmacSource,
        tls: Arc<ClientConfig>,
    ) -> Self {
        Self {
            hub,
            device_id,
            source,
            tls,
            clock: Clock::new(),
        }
    }

    /// Builds its tokens with this clock (default: the system clock). Registrations give the
    /// signer their client's clock, which learned the service's time.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock its tokens are built with.
    pub fn token_clock(&self) -> &Clock {
        &self.clock
    }

    /// A signer using a symmetric key's driver, for a device whose hub and device id are
    /// known (from an earlier registration), presenting its tokens over `tls` (server
    /// authentication only).
    pub fn symmetric_key(
        hub: impl Into<String>,
        device_id: impl Into<String>,
        key: Arc<dyn SymmetricKeyAttestation>,
        tls: Arc<ClientConfig>,
    ) -> Self {
        Self::new(
            hub.into(),
            device_id.into(),
            HmacSource::Symmetric(key),
            tls,
        )
    }

    /// A signer using a TPM's identity key (the hub key DPS sent, once imported).
    pub fn tpm(
        hub: impl Into<String>,
        device_id: impl Into<String>,
        tpm: Arc<dyn TpmAttestation>,
        tls: Arc<ClientConfig>,
    ) -> Self {
        Self::new(hub.into(), device_id.into(), HmacSource::Tpm(tpm), tls)
    }

    /// The hub.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The TLS configuration tokens are presented over.
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls
    }

    /// The token resource, `{hub}/devices/{deviceId}` (unencoded).
    pub fn resource(&self) -> String {
        format!("{}/devices/{}", self.hub, self.device_id)
    }

    /// A token valid for `ttl` from the [`clock`](Self::clock)'s now, signed in a blocking
    /// task.
    ///
    /// # Errors
    /// [`Error::Driver`] when the driver fails or the token cannot be built.
    pub async fn token(&self, ttl: Duration) -> Result<SasToken, Error> {
        self.source
            .token(SasTokenBuilder::new(self.resource()).expiry(self.clock.expiry(ttl)))
            .await
    }

    /// A token with this expiry, signed on the calling thread (which the driver may block).
    ///
    /// # Errors
    /// [`Error::Driver`] when the driver fails or the token cannot be built.
    pub fn token_blocking(&self, expiry: Expiry) -> Result<SasToken, Error> {
        SasTokenBuilder::new(self.resource())
            .expiry(expiry)
            .sign(|data| self.source.hmac(data))
            .map_err(|e| Error::driver("sign a SAS token", e))
    }
}

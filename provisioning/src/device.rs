//! The credential's whole life: a [`Device`] connects to its hub from a cached assignment
//! (registering with DPS only when it must), registers again when the hub refuses it, and
//! renews a certificate DPS issued before it expires, with a new key made inside the same HSM.
//!
//! ```no_run
//! # async fn demo(client: provisioning::ProvisioningClient) -> Result<(), provisioning::Error> {
//! use provisioning::device::Device;
//!
//! let device = Device::builder(client)
//!     .state_dir("/var/lib/my-device") // the assignment cache: assignment.json
//!     .build()?;
//! let connection = device.connect().await?; // the cache, else DPS; DPS again if refused
//! println!("on {} ({:?})", connection.assignment().assigned_hub, connection.via());
//! # Ok(()) }
//! ```
//!
//! - **The cache** (`{state_dir}/assignment.json`, [`CachedAssignment`]) holds the
//!   registration id, hub, device id, credential kind, issued chain and key label, an
//!   identity fingerprint of the attestation and when DPS assigned it; no secret. It is
//!   written atomically (mode 0600) and read strictly: a missing, corrupt, truncated or
//!   foreign cache, or one for another identity, means registering, never a panic (see
//!   [`RegisterReason`]). [`CachePolicy`] says whether to use it.
//! - **Reprovisioning**: when the hub refuses the cached credential (CONNACK "not
//!   authorized": a disabled device, a device moved to another hub, a changed key), the device
//!   registers again and connects to the hub DPS names, with bounded attempts, backoff and
//!   jitter ([`ReprovisionPolicy`]). A device DPS itself refuses stops with DPS's typed error
//!   after one registration; the last good cache is only replaced by a successful one.
//! - **Renewal** ([`Device::renew`], [`Device::keep_renewed`]): for a certificate issued for
//!   a key in a [`KeyStore`] (see
//!   [`issue_certificates`](DeviceBuilder::issue_certificates)), a new key is generated in the
//!   same store, a CSR signed by it is sent to the hub's certificate management API (DPS
//!   re-registration when the hub has none), the chain checked and stored with the new key,
//!   the connection moved to it, and only then the old key deleted. Every step is recorded
//!   first, so a device stopped at any step connects on its next start.
//! - **Clock skew**: SAS tokens are built with the service's time ([`Clock`](crate::Clock));
//!   a refused token makes the device ask the service's time and try once more.

mod cache;
mod renewal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hsm_core::{KeyAlgorithm, KeyHandle, KeyLabel, KeyStore};
use sha2::{Digest as _, Sha256};
use tls_bridge::TlsIdentity;
use tokio::sync::Mutex;

pub use cache::{CachedAssignment, CredentialKind, IssuedKey};
pub use renewal::{RenewalPolicy, RenewalStep, Renewed, RenewedVia};

use crate::attestation::blocking;
use crate::hub::{HubClient, HubClientBuilder};
use crate::{Error, HubCredentials, ProvisioningClient, Registration};
use cache::CacheFile;

/// The cache file's name in the state folder.
pub const CACHE_FILE: &str = "assignment.json";

/// Reads the cached assignment in `state_dir` (as [`Device::cached`] does), without a
/// device: for tools that show it.
///
/// # Errors
/// [`Error::Cache`] when it cannot be read or is invalid.
pub fn load_cache(state_dir: &std::path::Path) -> Result<Option<CachedAssignment>, Error> {
    CacheFile::new(state_dir.join(CACHE_FILE)).load()
}

/// Reads a cache file's bytes as [`load_cache`] does, for the fuzz target. Never panics.
#[doc(hidden)]
pub fn fuzz_cache(bytes: &[u8]) {
    let _ = cache::parse(bytes);
}

/// When a [`Device`] uses its cached assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachePolicy {
    /// Use a valid cache for this identity; register when it is missing, invalid, written
    /// for another identity, or refused by the hub (as Azure's identity service does). The
    /// default.
    #[default]
    UseValid,
    /// Register at every [`connect`](Device::connect) (the cache is still written, for
    /// `hsm-provision status`).
    AlwaysRegister,
}

/// How often and how fast a refused device registers again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReprovisionPolicy {
    /// Registrations per [`connect`](Device::connect) whose assignment the hub refuses
    /// before giving up (default 3).
    pub attempts: u32,
    /// The wait before the second (default 1 s), doubling up to `max_backoff` (default
    /// 60 s), with equal jitter.
    pub initial_backoff: Duration,
    /// The longest wait between two registrations.
    pub max_backoff: Duration,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl ReprovisionPolicy {
    /// The policy with these numbers.
    pub fn new(attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            initial_backoff,
            max_backoff,
        }
    }
}

/// How a [`Connection`] came about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectedVia {
    /// The cached assignment; DPS was not asked.
    Cache,
    /// A registration with DPS, for this reason, with DPS's substatus
    /// (`initialAssignment`, `deviceDataMigrated`, `deviceDataReset`,
    /// `reprovisionedToInitialAssignment`).
    Registration {
        /// Why the device registered.
        reason: RegisterReason,
        /// DPS's substatus.
        substatus: Option<String>,
    },
}

/// Why a device registered with DPS instead of using its cache.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterReason {
    /// No state folder was given.
    NoStateDir,
    /// There was no cache.
    NoCache,
    /// [`CachePolicy::AlwaysRegister`].
    Policy,
    /// The cache could not be used ([`Error::Cache`]'s text).
    InvalidCache(String),
    /// The cache was written for another identity (another attestation, ID scope or DPS).
    OtherIdentity,
    /// The hub refused the cached credential: reprovisioning ([`Error::HubRefused`]'s text).
    HubRefused(String),
}

/// A device connected to its hub.
#[derive(Debug)]
pub struct Connection {
    hub: HubClient,
    via: ConnectedVia,
    assignment: CachedAssignment,
    registrations: u32,
}

impl Connection {
    /// The hub connection: telemetry, twin, certificate requests.
    pub fn hub(&self) -> &HubClient {
        &self.hub
    }

    /// How the connection came about.
    pub fn via(&self) -> &ConnectedVia {
        &self.via
    }

    /// The assignment it was made with.
    pub fn assignment(&self) -> &CachedAssignment {
        &self.assignment
    }

    /// DPS registrations made by this [`connect`](Device::connect) (0 from the cache).
    pub fn registrations(&self) -> u32 {
        self.registrations
    }

    /// Disconnects from the hub.
    pub async fn disconnect(self) {
        self.hub.disconnect().await;
    }
}

/// Keys generated in a store for issued certificates.
#[derive(Clone, Debug)]
struct Keys {
    store: Arc<dyn KeyStore>,
    prefix: String,
    algorithm: KeyAlgorithm,
}

/// Adjusts each hub connection's builder (timeouts, `connect_to`, SAS lifetime, ...).
type HubOptions = Arc<dyn Fn(HubClientBuilder) -> HubClientBuilder + Send + Sync>;

/// Configures a [`Device`].
pub struct DeviceBuilder {
    client: ProvisioningClient,
    state_dir: Option<PathBuf>,
    policy: CachePolicy,
    keys: Option<Keys>,
    renewal: RenewalPolicy,
    reprovision: ReprovisionPolicy,
    hub: HubOptions,
    stop_after: Option<RenewalStep>,
}

impl std::fmt::Debug for DeviceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuilder")
            .field("state_dir", &self.state_dir)
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .field("renewal", &self.renewal)
            .field("reprovision", &self.reprovision)
            .finish_non_exhaustive()
    }
}

impl DeviceBuilder {
    /// The folder that holds the assignment cache ([`CACHE_FILE`]); created (0700) when
    /// first written. Without one the device registers at every start.
    #[must_use]
    pub fn state_dir(mut self, folder: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(folder.into());
        self
    }

    /// When to use the cache (default [`CachePolicy::UseValid`]).
    #[must_use]
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Has DPS issue the hub certificate for a key generated in `store` under
    /// `{label_prefix}-1` (`-2`, `-3`, ... at each renewal), ECDSA P-256 unless
    /// [`key_algorithm`](Self::key_algorithm) says otherwise: the CSR is signed inside the
    /// store, and renewals rotate the key there. The client's attestation still
    /// authenticates to DPS.
    ///
    /// # Errors
    /// [`Error::Config`] in [`build`](Self::build) when `{label_prefix}-N` is not a valid key
    /// label.
    #[must_use]
    pub fn issue_certificates(mut self, store: Arc<dyn KeyStore>, label_prefix: &str) -> Self {
        self.keys = Some(Keys {
            store,
            prefix: label_prefix.to_owned(),
            algorithm: KeyAlgorithm::EcdsaP256,
        });
        self
    }

    /// The algorithm of generated keys (default ECDSA P-256; Azure's certificate issuance
    /// preview asks for P-384).
    #[must_use]
    pub fn key_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        if let Some(keys) = &mut self.keys {
            keys.algorithm = algorithm;
        }
        self
    }

    /// When and how certificates are renewed (default [`RenewalPolicy::default`]).
    #[must_use]
    pub fn renewal(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// How a refused device registers again (default [`ReprovisionPolicy::default`]).
    #[must_use]
    pub fn reprovision(mut self, policy: ReprovisionPolicy) -> Self {
        self.reprovision = policy;
        self
    }

    /// Adjusts every hub connection's builder, e.g. `|b| b.connect_to("10.0.0.5:8883")`.
    #[must_use]
    pub fn hub_options(
        mut self,
        options: impl Fn(HubClientBuilder) -> HubClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.hub = Arc::new(options);
        self
    }

    /// For crash tests: [`renew`](Device::renew) stops with [`Error::RenewalStopped`] right
    /// after this step, leaving what a crash there leaves.
    #[doc(hidden)]
    #[must_use]
    pub fn stop_renewal_after(mut self, step: RenewalStep) -> Self {
        self.stop_after = Some(step);
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable key label prefix or renewal policy.
    pub fn build(self) -> Result<Device, Error> {
        if let Some(keys) = &self.keys {
            KeyLabel::new(format!("{}-1", keys.prefix))
                .map_err(|e| Error::config(format!("the key label prefix: {e}")))?;
        }
        self.renewal.check()?;
        Ok(Device {
            inner: Arc::new(Inner {
                client: self.client,
                cache: self
                    .state_dir
                    .map(|dir| CacheFile::new(dir.join(CACHE_FILE))),
                policy: self.policy,
                keys: self.keys,
                renewal: self.renewal,
                reprovision: self.reprovision,
                hub: self.hub,
                stop_after: self.stop_after,
                current: Mutex::new(None),
            }),
        })
    }
}

/// A device through its whole life: see the [module documentation](self). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Device {
    inner: Arc<Inner>,
}

struct Inner {
    client: ProvisioningClient,
    cache: Option<CacheFile>,
    policy: CachePolicy,
    keys: Option<Keys>,
    renewal: RenewalPolicy,
    reprovision: ReprovisionPolicy,
    hub: HubOptions,
    stop_after: Option<RenewalStep>,
    /// The assignment in use (what the cache holds, also without a cache); renewals hold
    /// the lock.
    current: Mutex<Option<CachedAssignment>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("client", &self.client)
            .field("cache", &self.cache.as_ref().map(CacheFile::path))
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A builder for a device that registers with `client`.
    pub fn builder(client: ProvisioningClient) -> DeviceBuilder {
        DeviceBuilder {
            client,
            state_dir: None,
            policy: CachePolicy::default(),
            keys: None,
            renewal: RenewalPolicy::default(),
            reprovision: ReprovisionPolicy::default(),
            hub: Arc::new(|builder| builder),
            stop_after: None,
        }
    }

    /// The cache file, if a state folder was given.
    pub fn cache_path(&self) -> Option<&std::path::Path> {
        self.inner.cache.as_ref().map(CacheFile::path)
    }

    /// The cached assignment, read and checked (no connection is made).
    ///
    /// # Errors
    /// [`Error::Cache`] when it cannot be read or is invalid.
    pub fn cached(&self) -> Result<Option<CachedAssignment>, Error> {
        match &self.inner.cache {
            Some(file) => file.load(),
            None => Ok(None),
        }
    }

    /// Connects to the hub: with the cached assignment when the [`CachePolicy`] allows and
    /// the cache is valid for this identity, else (and when the hub refuses the cached
    /// credential) after registering with DPS. Finishes an interrupted renewal first: a new
    /// certificate that was stored but never used is tried, and kept if the hub takes it.
    ///
    /// # Errors
    /// DPS's errors ([`Error::Unauthorized`], [`Error::Failed`], ...: the device stops
    /// there, without looping); the hub's connection errors; [`Error::HubRefused`] when the
    /// hub refused every assignment of the [`ReprovisionPolicy`]; [`Error::Driver`] when
    /// the key store fails.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let inner = &*self.inner;
        let identity = self.identity().await?;
        let (cached, mut reason) = match (&inner.cache, inner.policy) {
            (None, _) => (None, RegisterReason::NoStateDir),
            (Some(_), CachePolicy::AlwaysRegister) => (None, RegisterReason::Policy),
            (Some(file), CachePolicy::UseValid) => match file.load() {
                Ok(None) => (None, RegisterReason::NoCache),
                Ok(Some(cached)) if cached.identity != identity => {
                    tracing::warn!(cache = %file.path().display(), "the assignment cache is for another identity: registering");
                    (None, RegisterReason::OtherIdentity)
                }
                Ok(Some(cached)) => (Some(cached), RegisterReason::NoCache),
                Err(e) => {
                    tracing::warn!(error = %e, "registering instead");
                    (None, RegisterReason::InvalidCache(e.to_string()))
                }
            },
        };
        let mut previous = None;
        if let Some(mut cached) = cached {
            match self.connect_cached(&mut cached).await {
                Ok(hub) => {
                    tracing::info!(hub = %cached.assigned_hub, device_id = %cached.device_id, "connected from the cached assignment");
                    *inner.current.lock().await = Some(cached.clone());
                    return Ok(Connection {
                        hub,
                        via: ConnectedVia::Cache,
                        assignment: cached,
                        registrations: 0,
                    });
                }
                Err(e) if e.is_hub_refusal() => {
                    tracing::warn!(error = %e, "the hub refused the cached credential: registering again");
                    reason = RegisterReason::HubRefused(e.to_string());
                    previous = Some(cached);
                }
                Err(e) => return Err(e),
            }
        }
        self.register_and_connect(reason, previous, identity).await
    }

    /// `sha256:` of what identifies this device to DPS.
    async fn identity(&self) -> Result<String, Error> {
        let config = self.inner.client.config();
        let attestation = config.attestation.fingerprint().await?;
        let mut hash = Sha256::new();
        for part in [
            config.attestation.name().as_bytes(),
            config.endpoint.authority().as_bytes(),
            config.id_scope.as_bytes(),
            config
                .attestation
                .known_registration_id()
                .map_or(&b""[..], |id| id.as_str().as_bytes()),
            &attestation,
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Ok(format!("sha256:{}", hex(&hash.finalize())))
    }

    /// Connects with a cached assignment: a renewal's stored but unused certificate first
    /// (kept if it connects), then the cached credential. Retired keys are deleted.
    async fn connect_cached(&self, cached: &mut CachedAssignment) -> Result<HubClient, Error> {
        let mut connected = None;
        if let Some(pending) = cached.pending.clone() {
            let usable = match (pending.certificates(), &self.inner.keys) {
                (Ok(chain), Some(keys)) if !chain.is_empty() => {
                    self.find_key(keys, &pending).await?.map(|key| (key, chain))
                }
                _ => None,
            };
            if let Some((key, chain)) = usable {
                match self.connect_hub(cached, Some((key, chain))).await {
                    Ok(hub) => {
                        tracing::info!(label = %pending.label, "an interrupted renewal's certificate connected: keeping it");
                        self.promote(cached).await?;
                        connected = Some(hub);
                    }
                    Err(e) if e.is_hub_refusal() => {
                        tracing::warn!(error = %e, label = %pending.label, "an interrupted renewal's certificate was refused: dropping it");
                        self.drop_pending(cached).await?;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                tracing::info!(label = %pending.label, "finishing an interrupted renewal: its key was never certified");
                self.drop_pending(cached).await?;
            }
        }
        self.delete_retired(cached).await?;
        if let Some(hub) = connected {
            return Ok(hub);
        }
        let issued = match (&cached.key, &self.inner.keys) {
            (Some(key), Some(keys)) => {
                let chain = key.certificates().map_err(|reason| Error::Cache {
                    path: self.cache_path().map(Into::into).unwrap_or_default(),
                    reason,
                })?;
                match self.find_key(keys, key).await? {
                    Some(handle) => Some((handle, chain)),
                    None => {
                        // The key is gone from the store: the credential cannot work.
                        return Err(Error::HubRefused {
                            hub: cached.assigned_hub.clone(),
                            code: 5,
                            meaning: "not authorized: the issued certificate's key is no longer in the key store",
                        });
                    }
                }
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "the cached credential is an issued certificate, and no key store was given (issue_certificates)",
                ));
            }
            (None, _) => None,
        };
        self.connect_hub(cached, issued).await
    }

    /// Connects to the cached hub with an issued key and chain, or the attestation's
    /// credential. A SAS token the hub refuses is tried once more if the service's time
    /// shows the device's clock was wrong.
    async fn connect_hub(
        &self,
        cached: &CachedAssignment,
        issued: Option<(Arc<dyn KeyHandle>, Vec<hsm_core::CertificateDer<'static>>)>,
    ) -> Result<HubClient, Error> {
        let config = self.inner.client.config();
        let identity = match issued {
            Some((key, chain)) => {
                Some(
                    TlsIdentity::new(key, chain).map_err(|e| Error::IssuedCertificate {
                        reason: format!("it does not fit its key ({e})"),
                    })?,
                )
            }
            None => None,
        };
        let credentials =
            config.hub_credentials(&cached.assigned_hub, &cached.device_id, identity.as_ref())?;
        let sas = matches!(credentials, HubCredentials::Sas(_));
        let builder = || {
            self.hub_builder(HubClient::builder(
                cached.assigned_hub.clone(),
                cached.device_id.clone(),
                credentials.clone(),
            ))
        };
        match builder().connect().await {
            Err(e) if sas && e.is_hub_refusal() && self.clock_corrected().await => {
                tracing::info!(
                    offset_seconds = config.clock.offset(),
                    "the hub refused a token signed with a wrong clock: trying again with the service's time"
                );
                builder().connect().await
            }
            other => other,
        }
    }

    /// A hub connection's builder: with the certificate-management API version when
    /// certificates are issued (renewals go through it), then the caller's options.
    fn hub_builder(&self, builder: HubClientBuilder) -> HubClientBuilder {
        let builder = if self.inner.keys.is_some() {
            builder.api_version(crate::hub::CERTIFICATE_API_VERSION)
        } else {
            builder
        };
        (self.inner.hub)(builder)
    }

    /// Asks DPS's HTTPS endpoint for the time; whether the clock moved (never, in a build
    /// without HTTPS).
    #[cfg(not(feature = "https"))]
    async fn clock_corrected(&self) -> bool {
        false
    }

    /// Asks DPS's HTTPS endpoint for the time; whether the clock moved.
    #[cfg(feature = "https")]
    async fn clock_corrected(&self) -> bool {
        let config = self.inner.client.config();
        let Some(id) = config
            .attestation
            .known_registration_id()
            .cloned()
            .or_else(|| hsm_core::RegistrationId::new("clock").ok())
        else {
            return false;
        };
        let session = config.session(&id);
        match crate::transport::https::service_time(session, config.retry.request_timeout).await {
            Some(date) => config.clock.observe(date),
            None => false,
        }
    }

    /// Registers (again), writes the cache, connects; a hub that refuses the new assignment
    /// is tried again per the [`ReprovisionPolicy`].
    async fn register_and_connect(
        &self,
        reason: RegisterReason,
        previous: Option<CachedAssignment>,
        identity: String,
    ) -> Result<Connection, Error> {
        let inner = &*self.inner;
        let policy = inner.reprovision;
        let mut retired = previous
            .as_ref()
            .map(|p| p.retired.clone())
            .unwrap_or_default();
        let mut label = previous
            .as_ref()
            .and_then(|p| p.key.as_ref())
            .map(|k| k.label.clone());
        let mut registrations = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, key) = match &inner.keys {
                None => (inner.client.clone(), None),
                Some(keys) => {
                    let name = match &label {
                        Some(l) => {
                            KeyLabel::new(l.as_str()).map_err(|e| Error::config(e.to_string()))?
                        }
                        None => first_label(&keys.prefix)?,
                    };
                    let handle = self.key_for(keys, &name).await?;
                    (
                        inner.client.with_certificate_request(handle.clone())?,
                        Some((keys.clone(), name, handle)),
                    )
                }
            };
            let registration = client.register().await?;
            registrations += 1;
            let mut assignment = self
                .assignment(&registration, &identity, key.as_ref())
                .await?;
            assignment.retired = std::mem::take(&mut retired);
            label = assignment.key.as_ref().map(|k| k.label.clone());
            self.save(&assignment);
            let connected = self
                .hub_builder(HubClient::builder_for(&registration))
                .connect()
                .await;
            match connected {
                Ok(hub) => {
                    *inner.current.lock().await = Some(assignment.clone());
                    return Ok(Connection {
                        hub,
                        via: ConnectedVia::Registration {
                            reason,
                            substatus: registration.substatus,
                        },
                        assignment,
                        registrations,
                    });
                }
                Err(e) if e.is_hub_refusal() && attempt < policy.attempts => {
                    retired = assignment.retired;
                    let wait = backoff(policy, attempt);
                    tracing::warn!(error = %e, attempt, ?wait, "the hub refused the new assignment: registering again");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The cache entry for a registration (the issued chain stored with its key first).
    async fn assignment(
        &self,
        registration: &Registration,
        identity: &str,
        key: Option<&(Keys, KeyLabel, Arc<dyn KeyHandle>)>,
    ) -> Result<CachedAssignment, Error> {
        let clock = &self.inner.client.config().clock;
        let issued = match key {
            Some((keys, label, _)) if !registration.issued_certificate_chain.is_empty() => {
                let chain = registration.issued_certificate_chain.clone();
                let (store, name, stored) = (keys.store.clone(), label.clone(), chain.clone());
                blocking("store the issued chain", move || {
                    store.store_chain(&name, &stored)
                })
                .await?;
                let (renew_at, not_after) = self.inner.renewal.schedule(&chain[0]);
                Some(IssuedKey::new(label, &chain, renew_at, not_after))
            }
            Some(_) => {
                tracing::warn!(
                    "DPS issued no certificate for the CSR: the attestation's credential is used"
                );
                None
            }
            None => None,
        };
        Ok(CachedAssignment {
            version: 1,
            identity: identity.to_owned(),
            registration_id: registration.registration_id.to_string(),
            assigned_hub: registration.assigned_hub.clone(),
            device_id: registration.device_id.clone(),
            substatus: registration.substatus.clone(),
            credential: if issued.is_some() {
                CredentialKind::Issued
            } else {
                CredentialKind::Attestation
            },
            key: issued,
            pending: None,
            retired: Vec::new(),
            registered_at: clock.now(),
        })
    }

    /// The key under `label`, generated if the store has none.
    async fn key_for(&self, keys: &Keys, label: &KeyLabel) -> Result<Arc<dyn KeyHandle>, Error> {
        let (store, name, algorithm) = (keys.store.clone(), label.clone(), keys.algorithm);
        blocking("generate the device key", move || {
            match store.find(&name)? {
                Some(found) => Ok(found.key),
                None => store.generate(&name, algorithm),
            }
        })
        .await
    }

    async fn find_key(
        &self,
        keys: &Keys,
        entry: &IssuedKey,
    ) -> Result<Option<Arc<dyn KeyHandle>>, Error> {
        let label = entry.key_label().map_err(Error::config)?;
        let store = keys.store.clone();
        blocking("find a key", move || {
            Ok(store.find(&label)?.map(|found| found.key))
        })
        .await
    }

    async fn delete_key(&self, label: &str) -> Result<(), Error> {
        let Some(keys) = &self.inner.keys else {
            return Ok(());
        };
        let label = KeyLabel::new(label).map_err(|e| Error::config(e.to_string()))?;
        let store = keys.store.clone();
        let name = label.clone();
        let deleted = blocking("delete a key", move || store.delete(&name)).await?;
        if deleted {
            tracing::info!(%label, "deleted a key");
        }
        Ok(())
    }

    /// The pending renewal becomes the credential; the old key is retired.
    async fn promote(&self, cached: &mut CachedAssignment) -> Result<(), Error> {
        let Some(pending) = cached.pending.take() else {
            return Ok(());
        };
        if let Some(old) = cached.key.replace(pending) {
            cached.retired.push(old.label);
        }
        cached.credential = CredentialKind::Issued;
        self.save(cached);
        Ok(())
    }

    /// Forgets a pending renewal and deletes its key.
    async fn drop_pending(&self, cached: &mut CachedAssignment) -> Result<(), Error> {
        if let Some(pending) = &cached.pending {
            self.delete_key(&pending.label.clone()).await?;
        }
        cached.pending = None;
        self.save(cached);
        Ok(())
    }

    /// Deletes the keys renewals retired.
    async fn delete_retired(&self, cached: &mut CachedAssignment) -> Result<(), Error> {
        while let Some(label) = cached.retired.first().cloned() {
            self.delete_key(&label).await?;
            cached.retired.remove(0);
            self.save(cached);
        }
        Ok(())
    }

    /// Writes the cache, if there is one. A failure is logged, not returned: the device keeps
    /// its connection, and the next start registers again.
    fn save(&self, cached: &CachedAssignment) {
        if let Some(file) = &self.inner.cache
            && let Err(e) = file.save(cached)
        {
            tracing::error!(error = %e, "cannot write the assignment cache");
        }
    }
}

/// `{prefix}-1`.
fn first_label(prefix: &str) -> Result<KeyLabel, Error> {
    KeyLabel::new(format!("{prefix}-1")).map_err(|e| Error::config(e.to_string()))
}

/// The label after `label` (`{prefix}-N` -> `{prefix}-{N+1}`).
fn next_label(prefix: &str, label: &str) -> Result<KeyLabel, Error> {
    let n = label
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    KeyLabel::new(format!("{prefix}-{}", n + 1)).map_err(|e| Error::config(e.to_string()))
}

/// `initial * 2^(attempt-1)`, at most `max`, half of it random.
fn backoff(policy: ReprovisionPolicy, attempt: u32) -> Duration {
    let base = policy
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(policy.max_backoff);
    base / 2 + base.mul_f64(random_fraction() / 2.0)
}

/// A random number in `[0, 1)`.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labels_and_backoff() {
        assert_eq!(first_label("dev").unwrap().as_str(), "dev-1");
        assert_eq!(next_label("dev", "dev-1").unwrap().as_str(), "dev-2");
        assert_eq!(next_label("dev", "dev-41").unwrap().as_str(), "dev-42");
        assert_eq!(next_label("dev", "other").unwrap().as_str(), "dev-1");
        assert!(first_label("bad/").is_err());
        let policy = ReprovisionPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4));
        for attempt in 1..10 {
            let wait = backoff(policy, attempt);
            let base = Duration::from_secs(1 << (attempt - 1).min(2));
            assert!(wait >= base / 2 && wait <= base, "{attempt}: {wait:?}");
        }
    }
}

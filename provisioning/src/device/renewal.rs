//! Renewing an issued certificate with a new key made in the same HSM: the steps, each
//! recorded before the next begins, so that a device stopped anywhere still connects (see
//! [`RenewalStep`]).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use der::Decode as _;
use hsm_core::{CertificateDer, KeyHandle, KeyLabel};
use rustls::pki_types::UnixTime;
use tls_bridge::TlsIdentity;

use super::{CachedAssignment, Connection, Device, IssuedKey, Keys, next_label, random_fraction};
use crate::attestation::blocking;
use crate::{Error, HubCredentials};

/// When certificates are renewed.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RenewalPolicy {
    /// The fraction of a certificate's lifetime after which it is renewed (default 2/3).
    pub at_fraction: f64,
    /// Up to this fraction of the lifetime is taken off the renewal time at random (default
    /// 0.05), so that a fleet issued at once does not renew at once.
    pub jitter: f64,
    /// Attempts of one certificate request when the hub is busy (429, 503, no answer);
    /// default 4.
    pub attempts: u32,
    /// The first wait between attempts (doubling; default 2 s) when the hub does not say
    /// how long (`retryAfter`).
    pub initial_backoff: Duration,
    /// Renew through DPS (registering again with a CSR of the new key) when the hub has no
    /// certificate management (default `true`).
    pub dps_fallback: bool,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            at_fraction: 2.0 / 3.0,
            jitter: 0.05,
            attempts: 4,
            initial_backoff: Duration::from_secs(2),
            dps_fallback: true,
        }
    }
}

impl RenewalPolicy {
    /// A policy renewing at `at_fraction` of the lifetime with up to `jitter` of it taken off.
    pub fn at_fraction(at_fraction: f64, jitter: f64) -> Self {
        Self {
            at_fraction,
            jitter,
            ..Self::default()
        }
    }

    /// With these attempts and first backoff for busy hubs.
    #[must_use]
    pub fn retries(mut self, attempts: u32, initial_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.initial_backoff = initial_backoff;
        self
    }

    /// With or without the DPS fallback.
    #[must_use]
    pub fn dps_fallback(mut self, enabled: bool) -> Self {
        self.dps_fallback = enabled;
        self
    }

    pub(super) fn check(&self) -> Result<(), Error> {
        let fraction = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !fraction(self.at_fraction) || self.at_fraction == 0.0 {
            return Err(Error::config(
                "the renewal fraction must be more than 0 and at most 1",
            ));
        }
        if !fraction(self.jitter) || self.jitter >= self.at_fraction {
            return Err(Error::config(
                "the renewal jitter must be at least 0 and less than the renewal fraction",
            ));
        }
        Ok(())
    }

    /// When to renew `leaf` and when it expires (seconds since the Unix epoch).
    pub(super) fn schedule(&self, leaf: &CertificateDer<'_>) -> (Option<u64>, Option<u64>) {
        let Some((not_before, not_after)) = validity(leaf) else {
            return (None, None);
        };
        let lifetime = not_after.saturating_sub(not_before) as f64;
        let early = lifetime * self.jitter * random_fraction();
        let at = not_before as f64 + lifetime * self.at_fraction - early;
        (Some(at.max(not_before as f64) as u64), Some(not_after))
    }
}

/// The steps of a renewal, in order. Each is recorded in the cache before the next begins:
/// - after [`Recorded`](Self::Recorded) and [`KeyGenerated`](Self::KeyGenerated) a restart
///   deletes the new key and keeps the old credential;
/// - after [`CertificateIssued`](Self::CertificateIssued) likewise (the chain was not stored);
/// - after [`ChainStored`](Self::ChainStored) a restart connects with the new certificate and
///   keeps it if the hub accepts it, else the old;
/// - after [`Connected`](Self::Connected) and [`Promoted`](Self::Promoted) the new credential
///   is the device's, and a restart deletes the old key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenewalStep {
    /// The new key's label is written to the cache as pending.
    Recorded,
    /// The new key exists in the store.
    KeyGenerated,
    /// The service issued a certificate for it, checked.
    CertificateIssued,
    /// The chain is stored with the new key and in the cache.
    ChainStored,
    /// The hub connection uses the new certificate.
    Connected,
    /// The cache names the new key as the credential and the old one as retired.
    Promoted,
    /// The old key is deleted.
    OldDeleted,
}

impl RenewalStep {
    /// The step's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::KeyGenerated => "key generated",
            Self::CertificateIssued => "certificate issued",
            Self::ChainStored => "chain stored",
            Self::Connected => "connected",
            Self::Promoted => "promoted",
            Self::OldDeleted => "old key deleted",
        }
    }
}

/// Where a renewed certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenewedVia {
    /// The hub's certificate management (`$iothub/credentials`).
    Hub,
    /// A DPS registration with a CSR (the hub has no certificate management).
    Dps,
}

/// A finished renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewed {
    /// The new key's label.
    pub label: String,
    /// The old key's label (deleted).
    pub replaced: String,
    /// Where the certificate came from.
    pub via: RenewedVia,
    /// When the new certificate expires (seconds since the Unix epoch).
    pub not_after: Option<u64>,
    /// When it will be renewed.
    pub renew_at: Option<u64>,
}

impl Device {
    /// Renews the connection's issued certificate now, with a new key generated in the key
    /// store (see [`RenewalStep`] for what is recorded when): the old credential stays
    /// usable until the new one has connected, and is deleted after.
    ///
    /// # Errors
    /// [`Error::CannotRenew`] when the credential is not an issued certificate with its key
    /// in a key store (a DICE device's keys follow its firmware: it cannot rotate);
    /// [`Error::HubRequest`] / [`Error::HubTimeout`] when the hub refuses or never answers
    /// the certificate request (after the policy's attempts); [`Error::IssuedCertificate`]
    /// when the certificate does not fit the new key; the key store's [`Error::Driver`];
    /// the hub's refusal of the new certificate (the old one is connected again).
    pub async fn renew(&self, connection: &Connection) -> Result<Renewed, Error> {
        let inner = &*self.inner;
        let mut current = inner.current.lock().await;
        let keys = inner.keys.as_ref().ok_or_else(|| Error::CannotRenew {
            reason: "no key store was given (issue_certificates); a DICE device's keys follow its firmware and cannot be rotated".into(),
        })?;
        let mut cached = current.clone().ok_or_else(|| Error::CannotRenew {
            reason: "the device is not connected".into(),
        })?;
        let old = cached.key.clone().ok_or_else(|| Error::CannotRenew {
            reason: "the hub credential is the attestation, not a certificate issued for a key in the key store".into(),
        })?;
        let label = next_label(&keys.prefix, &old.label)?;
        tracing::info!(old = %old.label, new = %label, "renewing the device certificate");

        cached.pending = Some(IssuedKey::new(&label, &[], None, None));
        self.save(&cached);
        self.step(RenewalStep::Recorded)?;

        let key = match self.generate(keys, &label).await {
            Ok(key) => key,
            Err(e) => {
                self.drop_pending(&mut cached).await?;
                return Err(e);
            }
        };
        self.step(RenewalStep::KeyGenerated)?;

        let issued = match self.certificate(connection, &cached, &key).await {
            Ok(issued) => issued,
            Err(e) => {
                tracing::warn!(error = %e, "no certificate for the new key: keeping the old one");
                self.drop_pending(&mut cached).await?;
                *current = Some(cached);
                return Err(e);
            }
        };
        let (chain, via) = issued;
        self.step(RenewalStep::CertificateIssued)?;

        let (store, name, stored) = (keys.store.clone(), label.clone(), chain.clone());
        blocking("store the renewed chain", move || {
            store.store_chain(&name, &stored)
        })
        .await?;
        let (renew_at, not_after) = inner.renewal.schedule(&chain[0]);
        cached.pending = Some(IssuedKey::new(&label, &chain, renew_at, not_after));
        self.save(&cached);
        self.step(RenewalStep::ChainStored)?;

        let identity = TlsIdentity::new(key, chain).map_err(|e| Error::IssuedCertificate {
            reason: format!("it does not fit its key ({e})"),
        })?;
        let config = inner.client.config();
        let credentials: HubCredentials =
            config.hub_credentials(&cached.assigned_hub, &cached.device_id, Some(&identity))?;
        if let Err(e) = connection.hub().replace_credentials(credentials).await {
            tracing::warn!(error = %e, "the hub refused the renewed certificate: keeping the old one");
            self.drop_pending(&mut cached).await?;
            *current = Some(cached);
            return Err(e);
        }
        self.step(RenewalStep::Connected)?;

        self.promote(&mut cached).await?;
        *current = Some(cached.clone());
        self.step(RenewalStep::Promoted)?;

        self.delete_retired(&mut cached).await?;
        *current = Some(cached);
        self.step(RenewalStep::OldDeleted)?;
        tracing::info!(new = %label, old = %old.label, ?via, "device certificate renewed");
        Ok(Renewed {
            label: label.to_string(),
            replaced: old.label,
            via,
            not_after,
            renew_at,
        })
    }

    /// Renews the connection's certificate each time it is due (the renewal time in the
    /// cache, by the service's clock), for as long as the connection lives; a failed renewal
    /// is tried again with backoff until the certificate expires.
    ///
    /// # Errors
    /// What [`renew`](Self::renew) returns when it cannot be retried ([`Error::CannotRenew`])
    /// or the certificate expired before a renewal succeeded.
    pub async fn keep_renewed(&self, connection: &Connection) -> Result<(), Error> {
        let clock = self.inner.client.config().clock.clone();
        let mut failures = 0u32;
        loop {
            let (renew_at, not_after) = {
                let current = self.inner.current.lock().await;
                let key = current
                    .as_ref()
                    .and_then(|c| c.key.as_ref())
                    .ok_or_else(|| Error::CannotRenew {
                        reason: "the hub credential is not an issued certificate".into(),
                    })?;
                (key.renew_at.unwrap_or(0), key.not_after.unwrap_or(u64::MAX))
            };
            let now = clock.now();
            if now < renew_at {
                tracing::debug!(in_seconds = renew_at - now, "next certificate renewal");
                tokio::time::sleep(Duration::from_secs(renew_at - now)).await;
                continue;
            }
            match self.renew(connection).await {
                Ok(renewed) => {
                    failures = 0;
                    tracing::info!(label = %renewed.label, renew_at = ?renewed.renew_at, "renewed; next renewal scheduled");
                }
                Err(e @ (Error::CannotRenew { .. } | Error::RenewalStopped { .. })) => {
                    return Err(e);
                }
                Err(e) if clock.now() >= not_after => return Err(e),
                Err(e) => {
                    failures += 1;
                    let wait = self
                        .inner
                        .renewal
                        .initial_backoff
                        .saturating_mul(2u32.saturating_pow(failures.min(8)))
                        .min(Duration::from_secs(300));
                    let left = Duration::from_secs(not_after.saturating_sub(clock.now()));
                    let wait = wait.mul_f64(0.5 + random_fraction() / 2.0).min(left / 2);
                    tracing::warn!(error = %e, ?wait, "certificate renewal failed; trying again");
                    tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                }
            }
        }
    }

    fn step(&self, step: RenewalStep) -> Result<(), Error> {
        tracing::debug!(step = step.name(), "renewal step done");
        if self.inner.stop_after == Some(step) {
            return Err(Error::RenewalStopped { step: step.name() });
        }
        Ok(())
    }

    /// A new key under `label` (a key left there by an interrupted attempt is replaced).
    async fn generate(&self, keys: &Keys, label: &KeyLabel) -> Result<Arc<dyn KeyHandle>, Error> {
        let (store, name, algorithm) = (keys.store.clone(), label.clone(), keys.algorithm);
        blocking("generate the new key", move || {
            if store.find(&name)?.is_some() {
                store.delete(&name)?;
            }
            store.generate(&name, algorithm)
        })
        .await
    }

    /// A checked certificate for `key`: from the hub (busy answers tried again), else
    /// through DPS when the hub has no certificate management.
    async fn certificate(
        &self,
        connection: &Connection,
        cached: &CachedAssignment,
        key: &Arc<dyn KeyHandle>,
    ) -> Result<(Vec<CertificateDer<'static>>, RenewedVia), Error> {
        let inner = &*self.inner;
        let policy = inner.renewal;
        let (csr_key, id) = (key.clone(), cached.registration_id.clone());
        let csr = blocking("sign the CSR", move || hsm_core::csr_der(csr_key, &id)).await?;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match connection.hub().issue_certificate(&csr).await {
                Ok(chain) => break Ok((chain, super::RenewedVia::Hub)),
                Err(e) if attempt < policy.attempts && busy(&e) => {
                    let wait = match &e {
                        Error::HubRequest {
                            retry_after: Some(wait),
                            ..
                        } => *wait,
                        _ => policy
                            .initial_backoff
                            .saturating_mul(2u32.saturating_pow(attempt - 1)),
                    };
                    tracing::warn!(error = %e, attempt, ?wait, "the hub is busy with the certificate request; asking again");
                    tokio::time::sleep(wait).await;
                }
                Err(e) if policy.dps_fallback && unsupported(&e) => {
                    tracing::info!(error = %e, "the hub has no certificate management: renewing through DPS");
                    let registration = inner
                        .client
                        .with_certificate_request(key.clone())?
                        .register()
                        .await?;
                    if registration.assigned_hub != cached.assigned_hub
                        || registration.device_id != cached.device_id
                    {
                        return Err(Error::IssuedCertificate {
                            reason: format!(
                                "DPS assigned {} on {} while renewing; connect again to move",
                                registration.device_id, registration.assigned_hub
                            ),
                        });
                    }
                    break Ok((
                        registration.issued_certificate_chain,
                        super::RenewedVia::Dps,
                    ));
                }
                Err(e) => break Err(e),
            }
        };
        let (chain, via) = result?;
        check_issued(
            &chain,
            key.as_ref(),
            &cached.registration_id,
            inner.client.config(),
        )?;
        Ok((chain, via))
    }
}

/// A busy hub: worth asking again.
fn busy(error: &Error) -> bool {
    match error {
        Error::HubRequest { error, .. } => matches!(error.status, 429 | 500 | 503),
        Error::HubTimeout { .. } => true,
        _ => false,
    }
}

/// A hub without certificate management (an older tier, or an API version it does not
/// offer).
fn unsupported(error: &Error) -> bool {
    match error {
        Error::HubRequest { error, .. } => {
            error.status == 404
                || error.error_code == Some(403_010)
                || error.error_code == Some(400_001)
        }
        _ => false,
    }
}

/// Checks an issued chain: its leaf certifies `key`, names the registration id, is valid now
/// (the service's time), and is signed by the next certificate of the chain.
fn check_issued(
    chain: &[CertificateDer<'static>],
    key: &dyn KeyHandle,
    registration_id: &str,
    config: &crate::client::Config,
) -> Result<(), Error> {
    let bad = |reason: String| Error::IssuedCertificate { reason };
    let leaf = chain
        .first()
        .ok_or_else(|| bad("the chain is empty".into()))?;
    hsm_core::key_store::check_chain(key, chain).map_err(|e| bad(e.to_string()))?;
    let certificate = x509_cert::Certificate::from_der(leaf)
        .map_err(|_| bad("the leaf is not a DER X.509 certificate".into()))?;
    let common_name = certificate
        .tbs_certificate()
        .subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned());
    if common_name.as_deref() != Some(registration_id) {
        return Err(bad(format!(
            "it names {}, not the registration id {registration_id}",
            common_name
                .as_deref()
                .map_or("no common name".into(), hsm_core::untrusted::printable)
        )));
    }
    let now = config.clock.now();
    if let Some((not_before, not_after)) = validity(leaf) {
        let tolerance = crate::CLOCK_TOLERANCE.as_secs();
        if now + tolerance < not_before || now >= not_after {
            return Err(bad(format!(
                "it is not valid now (valid {not_before} to {not_after}, now {now}, Unix time)"
            )));
        }
    }
    if let Some(issuer) = chain.get(1) {
        let anchor = webpki::anchor_from_trusted_cert(issuer)
            .map_err(|e| bad(format!("its issuer certificate cannot be read ({e})")))?;
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| bad(format!("the leaf cannot be read ({e})")))?;
        end_entity
            .verify_for_usage(
                config.provider.signature_verification_algorithms.all,
                &[anchor],
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(now)),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| bad(format!("it does not verify with its issuer ({e})")))?;
    }
    Ok(())
}

/// A certificate's validity (seconds since the Unix epoch).
pub(super) fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let validity = certificate.tbs_certificate().validity();
    let seconds = |t: &x509_cert::time::Time| {
        t.to_system_time()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    Some((
        seconds(&validity.not_before)?,
        seconds(&validity.not_after)?,
    ))
}

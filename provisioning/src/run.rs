//! One [`register`](crate::ProvisioningClient::register) call: the register request (and the
//! TPM challenge), the polls, the retries and the deadline, and the hub credentials at the end.
//! It talks to DPS through a [`Connection`] and to the device through a
//! [`Mechanism`](crate::attestation::Mechanism), whichever they are.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hsm_core::{RegistrationId, SasToken, SasTokenBuilder};
use tls_bridge::TlsIdentity;
use tokio::time::Instant;

use crate::attestation::{self, unexpected_challenge};
use crate::client::Config;
use crate::registration::HmacSource;
use crate::transport::{
    self, BoxFuture, Connection, Failure, Request, RequestKind, Session, TpmHandshake,
};
use crate::wire::{FinalState, RegisterBody, Reply, parse_reply};
use crate::{Error, Registration, RegistrationStatus};

/// How long the SAS tokens sent to DPS are valid.
const SAS_LIFETIME: Duration = Duration::from_secs(3600);

/// A TPM's answer to a challenge made during the connection's handshake (AMQP): the
/// identity key imported, then a registration token signed with it.
struct TpmAnswer<'a> {
    endorsement_key: Vec<u8>,
    storage_root_key: Vec<u8>,
    mechanism: &'a dyn attestation::Mechanism,
    hmac: &'a HmacSource,
    sas: &'a (dyn Fn() -> SasTokenBuilder + Sync),
}

impl TpmHandshake for TpmAnswer<'_> {
    fn endorsement_key(&self) -> &[u8] {
        &self.endorsement_key
    }

    fn storage_root_key(&self) -> &[u8] {
        &self.storage_root_key
    }

    fn answer(&self, blob: Vec<u8>) -> BoxFuture<'_, Result<SasToken, Error>> {
        Box::pin(async move {
            self.mechanism.challenge(blob).await?;
            self.hmac.token((self.sas)()).await
        })
    }
}

/// The state of one `register` call.
pub(crate) struct Run<'a> {
    config: &'a Config,
    deadline: Instant,
    requests: u32,
    /// The last retried failure, reported with a timeout.
    last: Option<Error>,
    /// The service's `Date` moved the clock since the last token was signed.
    clock_moved: bool,
}

impl<'a> Run<'a> {
    pub(crate) fn new(config: &'a Config) -> Self {
        Self {
            config,
            deadline: Instant::now() + config.timeout,
            requests: 0,
            last: None,
            clock_moved: false,
        }
    }

    /// When the whole call must have ended.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The error for a call that passed its deadline, with the last retried failure.
    pub(crate) fn timed_out(&mut self) -> Error {
        Error::Timeout {
            after: self.config.timeout,
            last: self.last.take().map(Box::new),
        }
    }

    pub(crate) async fn register(&mut self) -> Result<Registration, Error> {
        let config = self.config;
        let mechanism = &config.attestation;
        let evidence = mechanism.evidence().await?;
        let registration_id = evidence.registration_id;
        let csr = match &config.csr_key {
            None => None,
            Some(key) => {
                if !registration_id.fits_common_name() {
                    return Err(Error::config(
                        "a CSR needs a registration id of at most 64 characters",
                    ));
                }
                let (key, id) = (key.clone(), registration_id.clone());
                let der = attestation::blocking("sign the CSR", move || {
                    hsm_core::csr_der(key, id.as_str())
                })
                .await
                .map_err(|e| match e {
                    Error::Driver {
                        source: source @ hsm_core::Error::Csr { .. },
                        ..
                    } => Error::Csr {
                        source: Box::new(source),
                    },
                    other => other,
                })?;
                Some(BASE64.encode(der))
            }
        };
        // Over AMQP a TPM answers its challenge inside the SASL handshake.
        let handshake_keys = match &evidence.tpm {
            Some(keys) if config.transport.is_amqp() => Some((
                BASE64.decode(&keys.endorsement_key),
                BASE64.decode(&keys.storage_root_key),
            )),
            _ => None,
        };
        let body = serde_json::to_vec(&RegisterBody {
            registration_id: registration_id.as_str(),
            tpm: evidence.tpm,
            payload: config.payload.as_ref(),
            csr,
        })
        .map_err(|e| Error::config(format!("cannot encode the registration: {e}")))?;
        let body = Bytes::from(body);
        let hmac = mechanism.sas_signer();
        let sas_builder = || {
            SasTokenBuilder::for_registration(&config.id_scope, &registration_id)
                .expiry(config.clock.expiry(SAS_LIFETIME))
        };
        let mut authorization: Option<SasToken> = match &hmac {
            Some(source) if mechanism.token_on_first_request() => {
                Some(source.token(sas_builder()).await?)
            }
            _ => None,
        };
        let handshake = match (handshake_keys, &hmac) {
            (Some((Ok(endorsement_key), Ok(storage_root_key))), Some(hmac)) => Some(TpmAnswer {
                endorsement_key,
                storage_root_key,
                mechanism: mechanism.as_ref(),
                hmac,
                sas: &sas_builder,
            }),
            (None, _) => None,
            _ => return Err(Error::config("the TPM's keys cannot be read back")),
        };
        let tpm = handshake.as_ref().map(|h| h as &dyn TpmHandshake);
        let mut connection = transport::open(config.transport, self.session(&registration_id));
        tracing::info!(registration_id = %registration_id, api_version = %config.api_version, "register");
        let mut challenged = false;
        let mut clock_retried = false;
        let mut reply = loop {
            let request = Request {
                kind: RequestKind::Register { body: &body },
                authorization: authorization.as_ref().map(SasToken::expose),
                tpm,
            };
            let reply = match self
                .request(connection.as_mut(), &request, &registration_id, None)
                .await
            {
                // A token refused because the device's clock is wrong: once, with the time
                // the service gave (its `Date`, or over MQTT a `GET /` over HTTPS).
                Err(error @ Error::Unauthorized { .. }) => {
                    let retry = !clock_retried
                        && authorization.is_some()
                        && self.clock_corrected(&registration_id).await;
                    match &hmac {
                        Some(source) if retry => {
                            clock_retried = true;
                            tracing::info!(registration_id = %registration_id, offset_seconds = config.clock.offset(), "token refused with a wrong device clock: signing again with the service's time");
                            authorization = Some(source.token(sas_builder()).await?);
                            connection.reset();
                            continue;
                        }
                        _ => return Err(error),
                    }
                }
                other => other?,
            };
            let Reply::Challenge { authentication_key } = reply else {
                break reply;
            };
            if challenged {
                return Err(unexpected_challenge());
            }
            tracing::info!(registration_id = %registration_id, "TPM challenge");
            mechanism.challenge(authentication_key).await?;
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
                    let wait = config
                        .retry
                        .retry_after(retry_after, config.retry.default_poll_interval);
                    let asked = retry_after.map(|a| a.min(config.retry.max_retry_after));
                    self.sleep(wait, asked).await?;
                    tracing::debug!(registration_id = %registration_id, operation_id = %operation_id, "poll");
                    let request = Request {
                        kind: RequestKind::Poll {
                            operation_id: &operation_id,
                        },
                        authorization: authorization.as_ref().map(SasToken::expose),
                        tpm,
                    };
                    reply = self
                        .request(
                            connection.as_mut(),
                            &request,
                            &registration_id,
                            Some(&operation_id),
                        )
                        .await?;
                }
                Reply::Done(state) => return self.finish(registration_id, *state).await,
                Reply::Challenge { .. } | Reply::Status(..) => return Err(unexpected_challenge()),
            }
        }
    }

    /// Sends one request, retrying transient failures per the policy.
    async fn request(
        &mut self,
        connection: &mut dyn Connection,
        request: &Request<'_>,
        registration_id: &RegistrationId,
        operation_id: Option<&str>,
    ) -> Result<Reply, Error> {
        let policy = self.config.retry;
        let operation = request.name();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.requests += 1;
            tracing::debug!(operation, attempt, "dps request");
            let sent = tokio::time::timeout(policy.request_timeout, connection.send(request)).await;
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
                    if let Some(date) = raw.date
                        && self.config.clock.observe(date)
                    {
                        self.clock_moved = true;
                    }
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
                        // A server that answered nonsense answers it again: report it now,
                        // the first real cause, rather than retrying into a later error.
                        Err(malformed) => {
                            return Err(Error::MalformedResponse {
                                operation,
                                reason: malformed.0,
                            });
                        }
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
            let asked = asked.map(|a| a.min(policy.max_retry_after));
            self.sleep(wait, asked).await?;
        }
    }

    /// What each connection of this registration is opened for.
    fn session(&self, registration_id: &RegistrationId) -> Session {
        self.config.session(registration_id)
    }

    /// Whether the clock was corrected since the last token was signed: by a `Date` seen in
    /// this run, or else by asking the service's time over HTTPS (MQTT carries none).
    async fn clock_corrected(&mut self, registration_id: &RegistrationId) -> bool {
        if std::mem::take(&mut self.clock_moved) {
            return true;
        }
        if self.config.transport == transport::Transport::Https {
            return false;
        }
        #[cfg(feature = "https")]
        {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let session = self.session(registration_id);
            match transport::https::service_time(
                session,
                left.min(self.config.retry.request_timeout),
            )
            .await
            {
                Some(date) => self.config.clock.observe(date),
                None => false,
            }
        }
        // Without HTTPS the service's time cannot be asked for.
        #[cfg(not(feature = "https"))]
        {
            let _ = registration_id;
            false
        }
    }

    /// Sleeps, or fails at once if the wait would pass the deadline: with what DPS asked for
    /// when its `Retry-After` (`asked`) alone is longer than what is left, else with a timeout.
    async fn sleep(&mut self, wait: Duration, asked: Option<Duration>) -> Result<(), Error> {
        let now = Instant::now();
        if now + wait >= self.deadline {
            let left = self.deadline.saturating_duration_since(now);
            if asked.is_some_and(|asked| asked > left) {
                return Err(Error::WaitBeyondDeadline {
                    asked: wait,
                    left,
                    deadline: self.config.timeout,
                    last: self.last.take().map(Box::new),
                });
            }
            return Err(self.timed_out());
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
    ) -> Result<Registration, Error> {
        let config = self.config;
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
        config.attestation.assigned(&state).await?;
        let issued = match &config.csr_key {
            Some(key) if !state.issued_certificate_chain.is_empty() => Some(
                TlsIdentity::new(key.clone(), state.issued_certificate_chain.clone())
                    .map_err(|_| malformed("the issued certificate is not for the CSR's key"))?,
            ),
            _ => None,
        };
        let credentials = config.hub_credentials(&hub, &device_id, issued.as_ref())?;
        if config.csr_key.is_some() && state.issued_certificate_chain.is_empty() {
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
            network: crate::registration::HubNetwork {
                proxy: config.proxy_setting.clone(),
                websocket: config.transport.is_websocket(),
            },
        })
    }
}

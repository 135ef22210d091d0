//! DPS's SASL mechanisms, server side: `PLAIN` (`{idScope}/registrations/{id}` and a SAS
//! token) and `TPM` (the EK in the init, the SRK asked for with a one-byte challenge, the
//! activation blob sent in segments `0x80 | sequence`, the last `0xC0 | sequence`, each
//! answered with `0x00`, the last with `0x00 ‖ SAS token` signed by the key the blob
//! carried). fe2o3-amqp's acceptor runs the frames; what it authenticated goes to the
//! connection through [`Identity`].

use std::sync::{Arc, Mutex};

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslChallenge, SaslCode, SaslInit, SaslOutcome, SaslResponse};
use zeroize::Zeroizing;

use super::{Identity, parse_address};
use crate::service::{Service, TpmKeys};

/// The activation blob's bytes per challenge segment.
pub(crate) const SEGMENT: usize = 400;

/// Where a `TPM` exchange stands.
enum Tpm {
    /// The EK arrived; the SRK is asked for.
    AwaitSrk {
        id_scope: String,
        registration_id: String,
        ek: Vec<u8>,
    },
    /// Segments of the blob left to send (the next first), and the next's sequence number.
    Sending {
        id_scope: String,
        registration_id: String,
        segments: Vec<Vec<u8>>,
        sequence: u8,
    },
    /// The last segment went out; the token is due.
    AwaitToken {
        id_scope: String,
        registration_id: String,
    },
}

/// The acceptor's state for one connection (fe2o3-amqp clones the acceptor per connection;
/// [`super::serve_stream`] makes a new one per connection).
#[derive(Clone)]
pub(crate) struct DpsSasl {
    service: Arc<Service>,
    identity: Arc<Mutex<Option<Identity>>>,
    tpm: Arc<Mutex<Option<Tpm>>>,
}

impl DpsSasl {
    pub(crate) fn new(service: Arc<Service>, identity: Arc<Mutex<Option<Identity>>>) -> Self {
        Self {
            service,
            identity,
            tpm: Arc::new(Mutex::new(None)),
        }
    }

    fn authenticated(&self, id_scope: String, registration_id: String, token: String) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(Identity {
            id_scope,
            registration_id,
            token: Zeroizing::new(token),
        });
    }

    fn plain(&self, response: &[u8]) -> SaslCode {
        let mut parts = response.split(|b| *b == 0);
        let (Some(_authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return SaslCode::Auth;
        };
        let (Ok(authcid), Ok(password)) =
            (std::str::from_utf8(authcid), std::str::from_utf8(password))
        else {
            return SaslCode::Auth;
        };
        let Some((id_scope, registration_id)) = parse_address(authcid) else {
            tracing::info!("SASL PLAIN: the user name names no registration");
            return SaslCode::Auth;
        };
        match self
            .service
            .authenticate_sasl(&id_scope, &registration_id, password)
        {
            Ok(()) => {
                self.authenticated(id_scope, registration_id, password.to_owned());
                SaslCode::Ok
            }
            Err(_) => SaslCode::Auth,
        }
    }

    /// `0x00 ‖ idScope ‖ 0x00 ‖ registrationId ‖ 0x00 ‖ EK`.
    fn tpm_init(&self, response: &[u8]) -> SaslServerFrame {
        let parsed = (|| {
            let rest = response.strip_prefix(&[0])?;
            let scope_end = rest.iter().position(|b| *b == 0)?;
            let (scope, rest) = (&rest[..scope_end], &rest[scope_end + 1..]);
            let id_end = rest.iter().position(|b| *b == 0)?;
            let (id, ek) = (&rest[..id_end], &rest[id_end + 1..]);
            let scope = std::str::from_utf8(scope).ok()?.to_owned();
            let id = std::str::from_utf8(id).ok()?.to_owned();
            (!ek.is_empty()).then(|| (scope, id, ek.to_vec()))
        })();
        let Some((id_scope, registration_id, ek)) = parsed else {
            tracing::info!("SASL TPM: a malformed init");
            return outcome(SaslCode::Auth);
        };
        *self.tpm.lock().unwrap_or_else(|e| e.into_inner()) = Some(Tpm::AwaitSrk {
            id_scope,
            registration_id,
            ek,
        });
        challenge(vec![0])
    }

    fn tpm_response(&self, response: &[u8]) -> SaslServerFrame {
        let mut state = self.tpm.lock().unwrap_or_else(|e| e.into_inner());
        let Some(current) = state.take() else {
            return outcome(SaslCode::Auth);
        };
        let (control, data) = match response.split_first() {
            Some((&control, data)) => (control, data),
            None => return outcome(SaslCode::Auth),
        };
        if control != 0 {
            return outcome(SaslCode::Auth);
        }
        match current {
            Tpm::AwaitSrk {
                id_scope,
                registration_id,
                ek,
            } => {
                if data.is_empty() {
                    return outcome(SaslCode::Auth);
                }
                let keys = TpmKeys {
                    ek,
                    srk: data.to_vec(),
                };
                let blob = match self
                    .service
                    .tpm_sasl_challenge(&id_scope, &registration_id, &keys)
                {
                    Ok(blob) => blob,
                    Err(_) => return outcome(SaslCode::Auth),
                };
                let segments: Vec<Vec<u8>> = blob.chunks(SEGMENT).map(<[u8]>::to_vec).collect();
                next_segment(&mut state, id_scope, registration_id, segments, 0)
            }
            Tpm::Sending {
                id_scope,
                registration_id,
                segments,
                sequence,
            } => {
                if !data.is_empty() {
                    return outcome(SaslCode::Auth);
                }
                next_segment(&mut state, id_scope, registration_id, segments, sequence)
            }
            Tpm::AwaitToken {
                id_scope,
                registration_id,
            } => {
                let Ok(token) = std::str::from_utf8(data) else {
                    return outcome(SaslCode::Auth);
                };
                match self
                    .service
                    .authenticate_sasl(&id_scope, &registration_id, token)
                {
                    Ok(()) => {
                        self.authenticated(id_scope, registration_id, token.to_owned());
                        outcome(SaslCode::Ok)
                    }
                    Err(_) => outcome(SaslCode::Auth),
                }
            }
        }
    }
}

/// Sends the first of `segments` (marked last when it is), keeping the rest.
fn next_segment(
    state: &mut Option<Tpm>,
    id_scope: String,
    registration_id: String,
    mut segments: Vec<Vec<u8>>,
    sequence: u8,
) -> SaslServerFrame {
    if segments.is_empty() {
        return outcome(SaslCode::Sys);
    }
    let segment = segments.remove(0);
    let last = segments.is_empty();
    let mut frame = Vec::with_capacity(1 + segment.len());
    frame.push(0x80 | if last { 0x40 } else { 0 } | (sequence & 0x03));
    frame.extend_from_slice(&segment);
    *state = Some(if last {
        Tpm::AwaitToken {
            id_scope,
            registration_id,
        }
    } else {
        Tpm::Sending {
            id_scope,
            registration_id,
            segments,
            sequence: (sequence + 1) & 0x03,
        }
    });
    challenge(frame)
}

fn challenge(bytes: Vec<u8>) -> SaslServerFrame {
    SaslServerFrame::Challenge(SaslChallenge {
        challenge: Binary::from(bytes),
    })
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for DpsSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("PLAIN"), Symbol::from("TPM")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let response = init
            .initial_response
            .map(Binary::into_vec)
            .unwrap_or_default();
        match init.mechanism.0.as_str() {
            "PLAIN" => outcome(self.plain(&response)),
            "TPM" => self.tpm_init(&response),
            other => {
                tracing::info!(mechanism = %other, "SASL: an unoffered mechanism");
                outcome(SaslCode::Auth)
            }
        }
    }

    fn on_response(&mut self, response: SaslResponse) -> SaslServerFrame {
        self.tpm_response(&response.response.into_vec())
    }
}

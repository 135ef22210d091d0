//! The TPM connection: the tss-esapi `Context` behind a mutex; each call runs on its caller's
//! thread.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tss_esapi::Context;
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::PropertyTag;
use tss_esapi::handles::{ObjectHandle, TpmHandle};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, MaxBuffer};

use crate::error::TssError;
use crate::{Error, PersistentHandle, Tcti, sequence};

/// The largest input tss-esapi's `MaxBuffer` takes, and what swtpm reports as
/// `TPM_PT_INPUT_BUFFER`.
const MAX_BUFFER: usize = MaxBuffer::MAX_SIZE;

/// How a [`Tpm`] connects and reconnects.
#[derive(Clone, Debug)]
pub struct TpmOptions {
    attempts: u32,
    delay: Duration,
}

impl Default for TpmOptions {
    fn default() -> Self {
        Self {
            attempts: 3,
            delay: Duration::from_millis(100),
        }
    }
}

impl TpmOptions {
    /// How many times one call tries to reach the TPM (connect and run the command) before it
    /// fails with [`Error::Unavailable`]; at least 1. Default 3.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The pause between two attempts (doubled after each). Default 100 ms.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A connection to a TPM, shared by every identity and key made from it.
///
/// tss-esapi's `Context` is neither `Send` nor `Sync`; `Tpm` keeps it behind a mutex and runs
/// each call on the caller's thread while holding the lock, so `Tpm` is `Send + Sync`, cheap to
/// clone (an `Arc`), and calls from many threads are serialised, as the TPM serialises them
/// anyway. A call costs no thread hand-off: the caller writes the command to the TPM and sleeps
/// in the read of the response, exactly as a bare tss-esapi program does.
///
/// **Reconnecting.** When a command fails because the transport failed (TCTI or resource-manager
/// errors: the TPM device went away, swtpm was restarted), the `Context` is dropped and the call
/// tries again on a new connection, up to [`TpmOptions::attempts`] times; if the TPM stays away
/// the call fails with [`Error::Unavailable`] and the next call starts over. Persistent objects
/// survive; sessions and transient objects of the old connection do not, and no operation keeps
/// any across calls.
///
/// **One connection.** swtpm and `/dev/tpm0` serve one client at a time; [`disconnect`]
/// lets another program (tpm2-tools) in, and the next call reconnects. `/dev/tpmrm0` and
/// tpm2-abrmd serve many.
///
/// [`disconnect`]: Self::disconnect
#[derive(Clone)]
pub struct Tpm {
    shared: Arc<Shared>,
}

struct Shared {
    tcti: Tcti,
    connection: Mutex<Connection>,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.shared.tcti.to_string())
            .finish_non_exhaustive()
    }
}

impl Tpm {
    /// Connects to the TPM `tcti` names, with the default [`TpmOptions`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the TPM cannot be reached.
    pub fn open(tcti: Tcti) -> Result<Self, Error> {
        Self::open_with(tcti, TpmOptions::default())
    }

    /// Connects to the TPM `tcti` names.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the TPM cannot be reached (a missing device, a simulator that
    /// is not running), [`Error::Tpm`] when libtss2 refuses the configuration.
    pub fn open_with(tcti: Tcti, options: TpmOptions) -> Result<Self, Error> {
        let tpm = Self {
            shared: Arc::new(Shared {
                connection: Mutex::new(Connection::new(tcti.clone(), options)),
                tcti,
            }),
        };
        tpm.run("connect", |conn| conn.context().map(|_| ()))?;
        Ok(tpm)
    }

    /// The TCTI this handle connects through.
    pub fn tcti(&self) -> &Tcti {
        &self.shared.tcti
    }

    /// Closes the connection (so another client can use a single-connection TPM such as swtpm);
    /// the next call reconnects.
    ///
    /// # Errors
    /// None today; kept fallible so a TPM that needs a shutdown command can get one.
    pub fn disconnect(&self) -> Result<(), Error> {
        self.run_once(|conn| {
            conn.disconnect();
            Ok(())
        })
    }

    /// Whether an object is persisted at `handle`.
    ///
    /// # Errors
    /// [`Error::Tpm`] or [`Error::Unavailable`].
    pub fn contains(&self, handle: PersistentHandle) -> Result<bool, Error> {
        self.run("list persistent handles", move |conn| conn.exists(handle))
    }

    /// Every persistent handle in use.
    ///
    /// # Errors
    /// [`Error::Tpm`] or [`Error::Unavailable`].
    pub fn persistent_handles(&self) -> Result<Vec<PersistentHandle>, Error> {
        self.run("list persistent handles", Connection::persistent_handles)
    }

    /// Removes the object at `handle` from persistent storage (owner authorisation, empty
    /// password). Returns `false` when there was none.
    ///
    /// # Errors
    /// [`Error::Tpm`] or [`Error::Unavailable`].
    pub fn evict(&self, handle: PersistentHandle) -> Result<bool, Error> {
        self.run("evict a persistent object", move |conn| {
            if !conn.exists(handle)? {
                return Ok(false);
            }
            conn.evict(handle, "evict a persistent object")?;
            Ok(true)
        })
    }

    /// The largest buffer one TPM command takes (`TPM_PT_INPUT_BUFFER`, at most 1024): longer
    /// HMAC inputs go through an HMAC sequence.
    ///
    /// # Errors
    /// [`Error::Tpm`] or [`Error::Unavailable`].
    pub fn input_buffer_size(&self) -> Result<usize, Error> {
        self.run("read TPM_PT_INPUT_BUFFER", Connection::input_buffer)
    }

    /// HMAC-SHA256 of `data` with the keyed-hash key persisted at `handle` (empty
    /// authorisation), computed in the TPM: `TPM2_HMAC` when `data` fits the TPM's input buffer,
    /// else `TPM2_HMAC_Start`, `TPM2_SequenceUpdate` and `TPM2_SequenceComplete`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no object is persisted at `handle`, [`Error::Tpm`] (for example
    /// when the object is not an HMAC key), [`Error::Unavailable`].
    pub fn hmac_sha256(&self, handle: PersistentHandle, data: &[u8]) -> Result<[u8; 32], Error> {
        self.run("HMAC-SHA256", |conn| conn.hmac(handle, data))
    }

    /// Runs `op` with the connection, reconnecting and retrying it when the transport fails.
    pub(crate) fn run<R>(
        &self,
        operation: &'static str,
        mut op: impl FnMut(&mut Connection) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.run_once(move |conn| conn.retrying(operation, &mut op))
    }

    /// Runs `op` once with the connection, on this thread, holding the lock.
    fn run_once<R>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<R, Error>,
    ) -> Result<R, Error> {
        // A panic never unwinds through the guard (it is caught below), so the lock is not
        // poisoned; should it be, the connection is reset before use all the same.
        let mut connection = self.shared.connection.lock().unwrap_or_else(|poisoned| {
            self.shared.connection.clear_poison();
            let mut connection = poisoned.into_inner();
            connection.disconnect();
            connection
        });
        match std::panic::catch_unwind(AssertUnwindSafe(|| op(&mut connection))) {
            Ok(result) => result,
            Err(_) => {
                // A panicking operation is a bug; it must not take the TPM down for every other
                // handle. The Context may be mid-command, so start over with a fresh one.
                connection.disconnect();
                Err(Error::Panicked)
            }
        }
    }
}

/// A tss-esapi `Context` that may move between threads.
struct OwnedContext(Context);

// SAFETY: `Context` is `!Send` only because it holds raw pointers: the ESYS context and the TCTI
// context, heap objects libtss2 allocated for this connection alone. Neither libtss2-esys nor
// the TCTI modules (device, swtpm, mssim, tabrmd) keep thread-local state or tie a context to
// the thread that made it; they require only that one thread at a time use a context. Every
// `OwnedContext` lives inside `Shared::connection`, a `Mutex`, so exactly one thread touches it
// at a time, and it is dropped (closing the connection) by whichever thread drops it last.
#[allow(unsafe_code)]
unsafe impl Send for OwnedContext {}

/// The connection's state: the tss-esapi context (when connected) and what was learnt on it.
pub(crate) struct Connection {
    tcti: Tcti,
    options: TpmOptions,
    context: Option<OwnedContext>,
    /// Persistent handles resolved to ESYS handles on this context (`Esys_TR_FromTPMPublic`).
    objects: HashMap<PersistentHandle, ObjectHandle>,
    input_buffer: Option<usize>,
}

impl Connection {
    fn new(tcti: Tcti, options: TpmOptions) -> Self {
        Self {
            tcti,
            options,
            context: None,
            objects: HashMap::new(),
            input_buffer: None,
        }
    }

    fn retrying<R>(
        &mut self,
        operation: &'static str,
        op: &mut impl FnMut(&mut Connection) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut delay = self.options.delay;
        let attempts = self.options.attempts;
        let mut attempt = 1;
        loop {
            let source = match op(self) {
                Err(Error::Tpm { source, .. } | Error::Unavailable { source, .. })
                    if source.is_transport() =>
                {
                    source
                }
                other => return other,
            };
            log::warn!(
                "TPM at {} unreachable during {operation} (attempt {attempt}/{attempts}): {source}",
                self.tcti
            );
            self.disconnect();
            if attempt >= attempts {
                return Err(Error::Unavailable {
                    tcti: self.tcti.to_string(),
                    operation,
                    attempts,
                    source,
                });
            }
            thread::sleep(delay);
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    /// The context, connecting first when there is none.
    pub(crate) fn context(&mut self) -> Result<&mut Context, Error> {
        let context = match self.context.take() {
            Some(context) => context,
            None => {
                let conf = self
                    .tcti
                    .name_conf()
                    .map_err(Error::tpm("connect", "Tss2_TctiLdr_Initialize"))?;
                let context =
                    Context::new(conf).map_err(Error::tpm("connect", "Esys_Initialize"))?;
                log::debug!("connected to the TPM at {}", self.tcti);
                OwnedContext(context)
            }
        };
        Ok(&mut self.context.insert(context).0)
    }

    pub(crate) fn disconnect(&mut self) {
        // Dropping the Context closes the ESYS handles and the TCTI connection.
        self.objects.clear();
        self.input_buffer = None;
        self.context = None;
    }

    /// The ESYS handle of the object persisted at `handle` (`what` names it in errors).
    pub(crate) fn object(
        &mut self,
        handle: PersistentHandle,
        what: &'static str,
    ) -> Result<ObjectHandle, Error> {
        if let Some(object) = self.objects.get(&handle) {
            return Ok(*object);
        }
        let tpm_handle = handle.tpm_handle()?;
        let object = self
            .context()?
            .tr_from_tpm_public(tpm_handle)
            .map_err(|source| {
                let source = TssError::from(source);
                match source.tpm_rc() {
                    Some(TPM_RC_HANDLE) => Error::NotFound { handle, what },
                    _ => Error::Tpm {
                        operation: what,
                        command: "TPM2_ReadPublic",
                        source,
                    },
                }
            })?;
        self.objects.insert(handle, object);
        Ok(object)
    }

    /// Records that the object at `handle` was persisted as `object` on this context.
    pub(crate) fn remember(&mut self, handle: PersistentHandle, object: ObjectHandle) {
        self.objects.insert(handle, object);
    }

    pub(crate) fn persistent_handles(&mut self) -> Result<Vec<PersistentHandle>, Error> {
        let first = PersistentHandle::SRK.value() & 0xff00_0000;
        let mut out = Vec::new();
        let mut next = first;
        loop {
            let (data, more) = self
                .context()?
                .get_capability(CapabilityType::Handles, next, 64)
                .map_err(Error::tpm("list persistent handles", "TPM2_GetCapability"))?;
            let CapabilityData::Handles(list) = data else {
                return Err(Error::UnexpectedOutput("a capability other than handles"));
            };
            let mut last = None;
            for handle in list.iter() {
                if let TpmHandle::Persistent(h) = handle {
                    let value = u32::from(*h);
                    last = Some(value);
                    out.push(PersistentHandle::new(value)?);
                }
            }
            match (more, last) {
                (true, Some(last)) if last < u32::MAX => next = last + 1,
                _ => return Ok(out),
            }
        }
    }

    pub(crate) fn exists(&mut self, handle: PersistentHandle) -> Result<bool, Error> {
        if self.objects.contains_key(&handle) {
            return Ok(true);
        }
        let (data, _) = self
            .context()?
            .get_capability(CapabilityType::Handles, handle.value(), 1)
            .map_err(Error::tpm(
                "look up a persistent handle",
                "TPM2_GetCapability",
            ))?;
        Ok(match data {
            CapabilityData::Handles(list) => list
                .iter()
                .any(|h| matches!(h, TpmHandle::Persistent(p) if u32::from(*p) == handle.value())),
            _ => false,
        })
    }

    /// Evicts the object persisted at `handle` (owner authorisation).
    pub(crate) fn evict(
        &mut self,
        handle: PersistentHandle,
        operation: &'static str,
    ) -> Result<(), Error> {
        let object = self.object(handle, "persistent object")?;
        let persistent = handle.persistent()?;
        self.context()?
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.evict_control(
                    tss_esapi::interface_types::resource_handles::Provision::Owner,
                    object,
                    persistent,
                )
            })
            .map_err(Error::tpm(operation, "TPM2_EvictControl"))?;
        // EvictControl closed the ESYS handle.
        self.objects.remove(&handle);
        Ok(())
    }

    pub(crate) fn input_buffer(&mut self) -> Result<usize, Error> {
        if let Some(size) = self.input_buffer {
            return Ok(size);
        }
        let reported = self
            .context()?
            .get_tpm_property(PropertyTag::InputBuffer)
            .map_err(Error::tpm("read TPM_PT_INPUT_BUFFER", "TPM2_GetCapability"))?;
        let size = reported
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .map_or(MAX_BUFFER, |v| v.min(MAX_BUFFER));
        self.input_buffer = Some(size);
        Ok(size)
    }

    pub(crate) fn hmac(
        &mut self,
        handle: PersistentHandle,
        data: &[u8],
    ) -> Result<[u8; 32], Error> {
        let object = self.object(handle, "HMAC key")?;
        let chunk = self.input_buffer()?;
        let digest = if data.len() <= chunk {
            let buffer = MaxBuffer::try_from(data)
                .map_err(Error::tpm("HMAC-SHA256", "TPM2_HMAC (input size)"))?;
            self.context()?
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.hmac(
                        object,
                        buffer,
                        tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
                    )
                })
                .map_err(Error::tpm("HMAC-SHA256", "TPM2_HMAC"))?
                .value()
                .to_vec()
        } else {
            // tss-esapi 7 has no HMAC sequence commands: run them on a connection of our own.
            // The TPM may serve one connection at a time, so hand ours back first.
            self.disconnect();
            sequence::hmac_sha256(&self.tcti, handle, data, chunk)?
        };
        digest
            .as_slice()
            .try_into()
            .map_err(|_| Error::UnexpectedOutput("an HMAC-SHA256 that is not 32 bytes"))
    }
}

/// `TPM_RC_HANDLE` (format one, without the handle number).
const TPM_RC_HANDLE: u32 = 0x08b;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Tpm>();
        check::<crate::TpmIdentity>();
        check::<crate::TpmHmacKey>();
        fn check_key<T: Send + Sync>() {}
        check_key::<crate::TpmKey>();
    }

    #[test]
    fn a_panicking_operation_is_an_error_and_the_next_call_runs() {
        let tcti: Tcti = "swtpm:host=127.0.0.1,port=9".parse().unwrap();
        let tpm = Tpm {
            shared: Arc::new(Shared {
                connection: Mutex::new(Connection::new(tcti.clone(), TpmOptions::default())),
                tcti,
            }),
        };
        let outcome: Result<(), Error> = tpm.run_once(|_| panic!("a bug in an operation"));
        assert!(matches!(outcome, Err(Error::Panicked)), "{outcome:?}");
        assert!(!tpm.shared.connection.is_poisoned());
        let answer = tpm.run_once(|conn| Ok(conn.context.is_none()));
        assert!(matches!(answer, Ok(true)), "{answer:?}");
    }
}

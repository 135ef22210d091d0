//! The TPM connection: one worker thread owns the tss-esapi `Context`; handles send it jobs.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

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
    busy_wait: Duration,
}

impl Default for TpmOptions {
    fn default() -> Self {
        Self {
            attempts: 3,
            delay: Duration::from_millis(100),
            busy_wait: Duration::from_micros(500),
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

    /// How long a call polls for its answer (yielding the CPU between polls) before it sleeps,
    /// and (up to 50 us of it) how long the worker polls for the next call. Handing a call to
    /// the worker and back costs two thread wake-ups when both sleep, which is a large share of
    /// a fast TPM command (an HMAC on swtpm takes ~70 us); polling avoids them for back-to-back
    /// calls at the price of that much CPU time per call. Default 500 us; zero always sleeps.
    pub fn busy_wait(mut self, busy_wait: Duration) -> Self {
        self.busy_wait = busy_wait;
        self
    }
}

/// A connection to a TPM, shared by every identity and key made from it.
///
/// tss-esapi's `Context` is neither `Send` nor `Sync`, so one worker thread owns it and every
/// call is a job sent to that thread: `Tpm` is `Send + Sync`, cheap to clone (an `Arc`), and
/// calls from many threads are serialised, as the TPM serialises them anyway. A caller polls
/// briefly for its answer before it sleeps ([`TpmOptions::busy_wait`]).
///
/// **Reconnecting.** When a command fails because the transport failed (TCTI or resource-manager
/// errors: the TPM device went away, swtpm was restarted), the worker drops the `Context` and the
/// call tries again on a new connection, up to [`TpmOptions::attempts`] times; if the TPM stays
/// away the call fails with [`Error::Unavailable`] and the next call starts over. Persistent
/// objects survive; sessions and transient objects of the old connection do not, and no
/// operation keeps any across calls.
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
    busy_wait: Duration,
    /// `None` only while dropping.
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    worker_id: ThreadId,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

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
        let (jobs, queue) = mpsc::channel::<Job>();
        let busy_wait = options.busy_wait;
        let idle_wait = busy_wait.min(WORKER_BUSY_WAIT);
        let mut connection = Connection::new(tcti.clone(), options);
        let worker = thread::Builder::new()
            .name(format!("hsm-tpm {}", tcti.name()))
            .spawn(move || worker(&mut connection, &queue, idle_wait))
            .map_err(|_| Error::WorkerStopped)?;
        let tpm = Self {
            shared: Arc::new(Shared {
                tcti,
                busy_wait,
                worker_id: worker.thread().id(),
                jobs: Some(jobs),
                worker: Some(worker),
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
    /// [`Error::WorkerStopped`] only.
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
        let data = zeroize::Zeroizing::new(data.to_vec());
        self.run("HMAC-SHA256", move |conn| conn.hmac(handle, &data))
    }

    /// Runs `op` on the worker thread with the connection, reconnecting and retrying it when the
    /// transport fails.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        operation: &'static str,
        mut op: impl FnMut(&mut Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        self.run_once(move |conn| conn.retrying(operation, &mut op))
    }

    fn run_once<R: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (reply, answer): (SyncSender<Result<R, Error>>, Receiver<_>) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply.send(op(conn));
        });
        self.shared
            .jobs
            .as_ref()
            .ok_or(Error::WorkerStopped)?
            .send(job)
            .map_err(|_| Error::WorkerStopped)?;
        receive(&answer, self.shared.busy_wait).ok_or(Error::WorkerStopped)?
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue ends the worker, which drops the Context and closes the connection;
        // wait for it so the TPM is free for the next client when this returns.
        self.jobs.take();
        if thread::current().id() != self.worker_id
            && let Some(worker) = self.worker.take()
        {
            let _ = worker.join();
        }
    }
}

/// The longest the worker polls for the next call before it sleeps.
const WORKER_BUSY_WAIT: Duration = Duration::from_micros(50);

/// The next message, polling (and yielding the CPU) for up to `busy_wait` before sleeping.
fn receive<T>(queue: &Receiver<T>, busy_wait: Duration) -> Option<T> {
    let start = Instant::now();
    loop {
        match queue.try_recv() {
            Ok(message) => return Some(message),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() >= busy_wait => return queue.recv().ok(),
            Err(TryRecvError::Empty) => thread::yield_now(),
        }
    }
}

fn worker(connection: &mut Connection, queue: &Receiver<Job>, busy_wait: Duration) {
    while let Some(job) = receive(queue, busy_wait) {
        // A panicking job (a bug) must not take the TPM down for every other handle; its caller
        // sees WorkerStopped when its reply channel drops. The Context may be mid-command, so
        // start over with a fresh one.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(connection))).is_err() {
            connection.disconnect();
        }
    }
}

/// The worker's state: the tss-esapi context (when connected) and what was learnt on it.
pub(crate) struct Connection {
    tcti: Tcti,
    options: TpmOptions,
    context: Option<Context>,
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
                context
            }
        };
        Ok(self.context.insert(context))
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
    fn busy_wait_falls_back_to_sleeping() {
        let (tx, rx) = mpsc::channel();
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        // Polls for 1 ms, then sleeps until the message comes.
        assert_eq!(receive(&rx, Duration::from_millis(1)), Some(7));
        sender.join().unwrap();
        assert_eq!(receive(&rx, Duration::ZERO), None);
    }
}

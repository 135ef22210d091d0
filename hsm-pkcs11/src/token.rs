//! A logged-in token: its login session, a pool of sessions for concurrent use, and recovery when
//! the token loses its sessions or its login.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_core::SecretString;

use crate::module::{Module, TokenInfo};
use crate::{Error, Pkcs11Uri};

/// The environment variable read for the user PIN when the URI and the options give none.
pub const PIN_ENV: &str = "PKCS11_PIN";

/// A PIN callback: receives the token label, returns the PIN.
pub type PinCallback = Arc<
    dyn Fn(&str) -> Result<SecretString, Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
>;

/// Where the user PIN comes from, in addition to the URI's `pin-value` and `pin-source`.
#[derive(Clone)]
#[non_exhaustive]
pub enum Pin {
    /// This PIN.
    Value(Arc<SecretString>),
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// Ask the caller.
    Callback(PinCallback),
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Pin::Value([redacted])"),
            Self::File(path) => f.debug_tuple("Pin::File").field(path).finish(),
            Self::Env(var) => f.debug_tuple("Pin::Env").field(var).finish(),
            Self::Callback(_) => f.write_str("Pin::Callback"),
        }
    }
}

/// Options for [`Token::open_with`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The module to load when the URI names none.
    pub module: Option<PathBuf>,
    /// The PIN, taking precedence over the URI's `pin-value`/`pin-source` and `PKCS11_PIN`.
    pub pin: Option<Pin>,
    /// At most this many sessions at once (the token's own `ulMaxSessionCount` applies
    /// anyway): a caller signing from more threads waits for a session.
    pub max_sessions: Option<usize>,
}

impl OpenOptions {
    /// Options with this module, and the PIN from the URI or the environment.
    pub fn with_module(module: Option<PathBuf>) -> Self {
        Self {
            module,
            ..Self::default()
        }
    }

    /// With this PIN source.
    #[must_use]
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pin = Some(pin);
        self
    }

    /// With at most this many sessions at once.
    #[must_use]
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = Some(max.max(1));
        self
    }
}

/// How long a signing thread waits for a session when the token's limit is reached.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An open, logged-in token, found by its URI attributes (never by slot number).
///
/// Cheap to clone; keys opened from it share its sessions. Signing uses a pool of sessions that
/// grows to the number of threads signing at once. When the token reports
/// `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_USER_NOT_LOGGED_IN`,
/// `CKR_DEVICE_REMOVED` or `CKR_TOKEN_NOT_PRESENT`, the operation finds the token again (by its
/// attributes, so a token that moved to another slot is found), opens a new session, logs in and
/// retries once; if that fails too the error names the PKCS#11 function and return value.
#[derive(Clone)]
pub struct Token {
    pub(crate) inner: Arc<TokenInner>,
}

pub(crate) struct TokenInner {
    pub(crate) module: Arc<Module>,
    selector: Pkcs11Uri,
    pin: Option<SecretString>,
    pub(crate) label: String,
    state: RwLock<State>,
    pool: Mutex<Vec<(u64, Session)>>,
    pub(crate) mechanisms: Vec<MechanismType>,
    /// Sessions open now (the login session, pooled and in use, read-write ones) and the most
    /// allowed, with a condition variable signalled when one closes or returns to the pool.
    budget: Budget,
}

/// The token's session count, bounded.
struct Budget {
    limit: Option<usize>,
    open: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Budget {
    /// Counts one more open session, waiting (at most [`SESSION_WAIT`]) while the limit is
    /// reached and `pool` has nothing idle: `Ok(false)` means a pooled session came back
    /// meanwhile and should be taken instead.
    fn reserve(&self, pool: &Mutex<Vec<(u64, Session)>>, token: &str) -> Result<bool, Error> {
        let Some(limit) = self.limit else {
            *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            return Ok(true);
        };
        let started = std::time::Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *open < limit {
                *open += 1;
                return Ok(true);
            }
            if pool.lock().is_ok_and(|p| !p.is_empty()) {
                return Ok(false);
            }
            let left = SESSION_WAIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Error::SessionLimit {
                    token: token.to_owned(),
                    limit,
                    waited: SESSION_WAIT,
                });
            }
            open = self
                .freed
                .wait_timeout(open, left.min(std::time::Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn release(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = open.saturating_sub(1);
        self.freed.notify_one();
    }

    fn returned(&self) {
        self.freed.notify_one();
    }
}

/// A session counted in the token's budget; closing it (dropping) frees its place.
pub(crate) struct CountedSession<'a> {
    session: Option<Session>,
    budget: &'a Budget,
}

impl std::ops::Deref for CountedSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        // Set at creation, taken only in drop.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("a counted session is present until dropped"))
    }
}

impl Drop for CountedSession<'_> {
    fn drop(&mut self) {
        drop(self.session.take());
        self.budget.release();
    }
}

struct State {
    slot: Slot,
    generation: u64,
    // Keeps the token logged in for every session of this process.
    _login: Mutex<Session>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.inner.label)
            .field("module", &self.inner.module.path())
            .field("pin", &self.inner.pin)
            .finish()
    }
}

impl Token {
    /// Opens the token the URI names, loading the module from `module-path`/`module-name`.
    ///
    /// # Errors
    /// See [`open_with`](Self::open_with).
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, Error> {
        Self::open_with(uri, &OpenOptions::default())
    }

    /// Opens the token the URI names and logs in.
    ///
    /// The PIN comes from, in order: `options.pin`, the URI's `pin-value`, its `pin-source` file,
    /// the `PKCS11_PIN` environment variable. Tokens that need no login are opened without one.
    ///
    /// # Errors
    /// [`Error::NoModule`], [`Error::LoadModule`], [`Error::TokenNotFound`],
    /// [`Error::AmbiguousToken`], [`Error::PinRequired`], [`Error::PinFile`],
    /// [`Error::WrongPin`], [`Error::PinLocked`] or [`Error::Pkcs11`].
    pub fn open_with(uri: &Pkcs11Uri, options: &OpenOptions) -> Result<Self, Error> {
        let module = Module::for_uri(uri, options.module.as_deref())?;
        let info = module.find_token(uri)?;
        let pin = resolve_pin(uri, options, &info.label)?;
        if pin.is_none() && info.login_required {
            return Err(Error::PinRequired {
                token: info.label.clone(),
            });
        }
        if pin.is_some() {
            // What the token says before a login is tried: a locked PIN stays locked, and an
            // attempt would only count against it.
            if info.user_pin_locked {
                return Err(Error::PinLocked {
                    token: info.label.clone(),
                });
            }
            if info.login_required && !info.user_pin_initialized {
                return Err(Error::PinNotInitialized {
                    token: info.label.clone(),
                });
            }
            if info.user_pin_to_be_changed {
                return Err(Error::PinExpired {
                    token: info.label.clone(),
                });
            }
        }
        let login = login(&module, &info, pin.as_ref())?;
        let limit = match (info.max_sessions, options.max_sessions) {
            (Some(token), Some(asked)) => {
                Some(usize::try_from(token).unwrap_or(usize::MAX).min(asked))
            }
            (Some(token), None) => Some(usize::try_from(token).unwrap_or(usize::MAX)),
            (None, asked) => asked,
        };
        let mechanisms = module
            .ctx
            .get_mechanism_list(info.slot)
            .map_err(|e| Error::from_cryptoki(e, format!("token '{}'", info.label)))?;
        // Recovery finds the token again by its attributes, wherever its slot is then.
        let mut selector = uri.token_attributes();
        selector.slot_id = None;
        Ok(Self {
            inner: Arc::new(TokenInner {
                module,
                selector,
                pin,
                label: info.label,
                state: RwLock::new(State {
                    slot: info.slot,
                    generation: 0,
                    _login: Mutex::new(login),
                }),
                pool: Mutex::new(Vec::new()),
                mechanisms,
                // The login session is one of them.
                budget: Budget {
                    limit: limit.map(|l| l.max(2)),
                    open: Mutex::new(1),
                    freed: std::sync::Condvar::new(),
                },
            }),
        })
    }

    /// Sessions this token handle has open now (the login session, idle pooled ones, those in
    /// use), for diagnostics and tests.
    pub fn open_sessions(&self) -> usize {
        *self
            .inner
            .budget
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The most sessions this token handle opens at once, if bounded.
    pub fn session_limit(&self) -> Option<usize> {
        self.inner.budget.limit
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The module the token belongs to.
    pub fn module(&self) -> &Arc<Module> {
        &self.inner.module
    }

    /// The slot the token sits in now.
    pub fn slot(&self) -> Slot {
        self.inner.read_state().slot
    }

    /// Whether the token offers `mechanism`.
    pub fn offers(&self, mechanism: MechanismType) -> bool {
        self.inner.mechanisms.contains(&mechanism)
    }

    /// How many idle sessions the pool holds (for diagnostics and tests).
    pub fn pooled_sessions(&self) -> usize {
        self.inner.pool.lock().map(|p| p.len()).unwrap_or(0)
    }
}

impl TokenInner {
    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The user PIN, if the token was opened with one (for context-specific logins).
    pub(crate) fn pin(&self) -> Option<&SecretString> {
        self.pin.as_ref()
    }

    pub(crate) fn context(&self, what: &str) -> String {
        format!("token '{}', {what}", self.label)
    }

    /// Runs `op` on a pooled session. On a recoverable return value it recovers the token and
    /// retries once. `op` receives the session and the token generation it belongs to (object
    /// handles cached under another generation must be looked up again).
    pub(crate) fn with_session<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&Session, u64) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut attempt = 0;
        loop {
            let (generation, session) = self.take_session(what)?;
            match op(&session, generation) {
                Ok(value) => {
                    self.give_back(generation, session);
                    return Ok(value);
                }
                Err(e) if is_recoverable(e.rv()) && attempt == 0 => {
                    log::warn!("{}: {e}; reconnecting", self.context(what));
                    self.discard(session);
                    attempt += 1;
                    self.recover(generation)?;
                }
                Err(e) => {
                    if is_recoverable(e.rv()) {
                        self.discard(session);
                    } else {
                        self.give_back(generation, session);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A read-write session outside the pool, for object creation, counted in the budget.
    pub(crate) fn rw_session(&self) -> Result<(u64, CountedSession<'_>), Error> {
        // An idle pooled session gives its place to this one.
        while !self.budget.reserve(&self.pool, &self.label)? {
            self.close_one_pooled();
        }
        let state = self.read_state();
        match self.module.ctx.open_rw_session(state.slot) {
            Ok(session) => Ok((
                state.generation,
                CountedSession {
                    session: Some(session),
                    budget: &self.budget,
                },
            )),
            Err(e) => {
                self.budget.release();
                Err(Error::from_cryptoki(
                    e,
                    self.context("open a read-write session"),
                ))
            }
        }
    }

    /// Closes one idle pooled session, freeing its place in the budget.
    fn close_one_pooled(&self) {
        let popped = self.pool.lock().ok().and_then(|mut p| p.pop());
        if let Some((_, session)) = popped {
            drop(session);
            self.budget.release();
        }
    }

    fn take_session(&self, what: &str) -> Result<(u64, Session), Error> {
        loop {
            let state = self.read_state();
            let generation = state.generation;
            // Sessions of an earlier generation: closed, their places freed (outside the pool's
            // lock: the budget is locked before the pool, never after).
            let mut stale = Vec::new();
            let mut found = None;
            if let Ok(mut pool) = self.pool.lock() {
                while let Some((g, session)) = pool.pop() {
                    if g == generation {
                        found = Some((g, session));
                        break;
                    }
                    stale.push(session);
                }
            }
            for session in stale {
                self.discard(session);
            }
            if let Some(found) = found {
                return Ok(found);
            }
            drop(state);
            if !self.budget.reserve(&self.pool, &self.label)? {
                // An idle session came back while waiting: take it.
                continue;
            }
            let state = self.read_state();
            return match self.module.ctx.open_ro_session(state.slot) {
                Ok(session) => Ok((state.generation, session)),
                Err(e) => {
                    self.budget.release();
                    Err(Error::from_cryptoki(e, self.context(what)))
                }
            };
        }
    }

    fn give_back(&self, generation: u64, session: Session) {
        match self.pool.lock() {
            Ok(mut pool) => {
                pool.push((generation, session));
                self.budget.returned();
            }
            Err(_) => {
                drop(session);
                self.budget.release();
            }
        }
    }

    /// A session that failed beyond recovery: closed, its place freed.
    fn discard(&self, session: Session) {
        drop(session);
        self.budget.release();
    }

    /// Finds the token again, logs in on a new session, and starts a new generation. Does
    /// nothing if another thread already recovered since `seen`.
    fn recover(&self, seen: u64) -> Result<(), Error> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.generation != seen {
            return Ok(());
        }
        let idle: Vec<_> = self
            .pool
            .lock()
            .map(|mut pool| pool.drain(..).collect())
            .unwrap_or_default();
        for (_, session) in idle {
            self.discard(session);
        }
        let info = self.module.find_token(&self.selector)?;
        let login = login(&self.module, &info, self.pin.as_ref())?;
        state.slot = info.slot;
        state.generation += 1;
        state._login = Mutex::new(login);
        log::info!(
            "token '{}' reconnected in slot {} (generation {})",
            self.label,
            info.slot.id(),
            state.generation
        );
        Ok(())
    }
}

fn is_recoverable(rv: Option<RvError>) -> bool {
    matches!(
        rv,
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
        )
    )
}

fn login(module: &Module, info: &TokenInfo, pin: Option<&SecretString>) -> Result<Session, Error> {
    let context = || format!("token '{}'", info.label);
    let session = module
        .ctx
        .open_ro_session(info.slot)
        .map_err(|e| Error::from_cryptoki(e, context()))?;
    let Some(pin) = pin else {
        return Ok(session);
    };
    let auth = AuthPin::from(pin.expose().to_owned());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => Ok(session),
        // Login state is shared by all sessions of the application: another handle on this
        // token logged in already.
        Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => {
            // After a wrong PIN, what the token says of the tries left.
            let tries = module
                .tokens()
                .ok()
                .and_then(|t| t.into_iter().find(|t| t.slot == info.slot))
                .map(|t| t.user_pin_tries)
                .unwrap_or_default();
            Err(login_error(e, &info.label, tries))
        }
    }
}

/// A failed `C_Login` as the error an operator can act on.
fn login_error(error: cryptoki::error::Error, token: &str, tries: crate::PinTries) -> Error {
    match error {
        cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _) => Error::WrongPin {
            token: token.to_owned(),
            tries,
        },
        cryptoki::error::Error::Pkcs11(RvError::PinLocked, _) => Error::PinLocked {
            token: token.to_owned(),
        },
        cryptoki::error::Error::Pkcs11(RvError::PinExpired, _) => Error::PinExpired {
            token: token.to_owned(),
        },
        cryptoki::error::Error::Pkcs11(RvError::UserPinNotInitialized, _) => {
            Error::PinNotInitialized {
                token: token.to_owned(),
            }
        }
        e => Error::from_cryptoki(e, format!("token '{token}'")),
    }
}

fn resolve_pin(
    uri: &Pkcs11Uri,
    options: &OpenOptions,
    token: &str,
) -> Result<Option<SecretString>, Error> {
    let from_file = |path: &PathBuf| -> Result<SecretString, Error> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            Error::PinFile {
                path: path.clone(),
                source,
            }
        })?);
        Ok(SecretString::from(
            text.lines().next().unwrap_or("").trim_end(),
        ))
    };
    let pin = match &options.pin {
        Some(Pin::Value(pin)) => Some(SecretString::from(pin.expose())),
        Some(Pin::File(path)) => Some(from_file(path)?),
        Some(Pin::Env(var)) => std::env::var(var).ok().map(SecretString::new),
        Some(Pin::Callback(callback)) => Some(callback(token).map_err(Error::PinCallback)?),
        None => None,
    };
    let pin = match (pin, &uri.pin_value, &uri.pin_source) {
        (Some(pin), _, _) => Some(pin),
        (None, Some(value), _) => Some(SecretString::from(value.expose())),
        (None, None, Some(path)) => Some(from_file(path)?),
        (None, None, None) => std::env::var(PIN_ENV).ok().map(SecretString::new),
    };
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    #[test]
    fn login_failures_map_to_operator_errors() {
        let failed = |rv| cryptoki::error::Error::Pkcs11(rv, Function::Login);
        let none = crate::PinTries::Unknown;
        let locked = login_error(failed(RvError::PinLocked), "dev", none);
        assert!(matches!(locked, Error::PinLocked { .. }));
        assert_eq!(
            locked.to_string(),
            "the PIN of token 'dev' is locked (CKR_PIN_LOCKED): unlock it with the SO PIN"
        );
        assert!(matches!(
            login_error(failed(RvError::PinIncorrect), "dev", none),
            Error::WrongPin { .. }
        ));
        let last = login_error(
            failed(RvError::PinIncorrect),
            "dev",
            crate::PinTries::FinalTry,
        );
        assert_eq!(
            last.to_string(),
            "wrong PIN for token 'dev' (CKR_PIN_INCORRECT); one more wrong PIN locks the token"
        );
        let expired = login_error(failed(RvError::PinExpired), "dev", none);
        assert!(matches!(expired, Error::PinExpired { .. }), "{expired:?}");
        let unset = login_error(failed(RvError::UserPinNotInitialized), "dev", none);
        assert!(
            matches!(unset, Error::PinNotInitialized { .. }),
            "{unset:?}"
        );
        let other = login_error(failed(RvError::TokenNotRecognized), "dev", none);
        assert_eq!(other.rv(), Some(RvError::TokenNotRecognized));
        assert!(other.to_string().contains("C_Login"), "{other}");
    }

    #[test]
    fn recoverable_return_values() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::UserNotLoggedIn,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
        ] {
            assert!(is_recoverable(Some(rv)), "{rv}");
        }
        assert!(!is_recoverable(Some(RvError::KeyHandleInvalid)));
        assert!(!is_recoverable(None));
    }

    #[test]
    fn pin_debug_is_redacted() {
        let pin = Pin::Value(Arc::new(SecretString::from("123456")));
        assert_eq!(format!("{pin:?}"), "Pin::Value([redacted])");
    }
}

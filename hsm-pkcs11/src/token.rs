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
pub struct OpenOptions {
    /// The module to load when the URI names none.
    pub module: Option<PathBuf>,
    /// The PIN, taking precedence over the URI's `pin-value`/`pin-source` and `PKCS11_PIN`.
    pub pin: Option<Pin>,
}

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
        let login = login(&module, &info, pin.as_ref())?;
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
            }),
        })
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
                    drop(session);
                    attempt += 1;
                    self.recover(generation)?;
                }
                Err(e) => {
                    if !is_recoverable(e.rv()) {
                        self.give_back(generation, session);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A read-write session outside the pool, for object creation.
    pub(crate) fn rw_session(&self) -> Result<(u64, Session), Error> {
        let state = self.read_state();
        let session = self
            .module
            .ctx
            .open_rw_session(state.slot)
            .map_err(|e| Error::from_cryptoki(e, self.context("open a read-write session")))?;
        Ok((state.generation, session))
    }

    fn take_session(&self, what: &str) -> Result<(u64, Session), Error> {
        let state = self.read_state();
        let generation = state.generation;
        if let Ok(mut pool) = self.pool.lock() {
            while let Some((g, session)) = pool.pop() {
                if g == generation {
                    return Ok((g, session));
                }
            }
        }
        let session = self
            .module
            .ctx
            .open_ro_session(state.slot)
            .map_err(|e| Error::from_cryptoki(e, self.context(what)))?;
        Ok((generation, session))
    }

    fn give_back(&self, generation: u64, session: Session) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.push((generation, session));
        }
    }

    /// Finds the token again, logs in on a new session, and starts a new generation. Does
    /// nothing if another thread already recovered since `seen`.
    fn recover(&self, seen: u64) -> Result<(), Error> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.generation != seen {
            return Ok(());
        }
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
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
        Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(login_error(e, &info.label)),
    }
}

/// A failed `C_Login` as the error an operator can act on.
fn login_error(error: cryptoki::error::Error, token: &str) -> Error {
    match error {
        cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _) => Error::WrongPin {
            token: token.to_owned(),
        },
        cryptoki::error::Error::Pkcs11(RvError::PinLocked, _) => Error::PinLocked {
            token: token.to_owned(),
        },
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
        let locked = login_error(failed(RvError::PinLocked), "dev");
        assert!(matches!(locked, Error::PinLocked { .. }));
        assert_eq!(
            locked.to_string(),
            "the PIN of token 'dev' is locked (CKR_PIN_LOCKED): unlock it with the SO PIN"
        );
        assert!(matches!(
            login_error(failed(RvError::PinIncorrect), "dev"),
            Error::WrongPin { .. }
        ));
        let other = login_error(failed(RvError::UserPinNotInitialized), "dev");
        assert_eq!(other.rv(), Some(RvError::UserPinNotInitialized));
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

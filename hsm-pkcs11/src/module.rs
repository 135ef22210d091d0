//! Loading a PKCS#11 module once per process, and finding tokens by their attributes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use crate::ffi::{FunctionList, RawTokenInfo};
use crate::{Error, Pkcs11Uri};
use cryptoki_sys::{
    CKF_LOGIN_REQUIRED, CKF_TOKEN_INITIALIZED, CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY,
    CKF_USER_PIN_INITIALIZED, CKF_USER_PIN_LOCKED, CKF_USER_PIN_TO_BE_CHANGED,
};

/// Directories searched for `module-name=NAME` (as `NAME.so`, `libNAME.so` and `NAME`).
pub const MODULE_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/lib/softhsm",
    "/usr/local/lib/softhsm",
];

/// A loaded and initialised PKCS#11 module. One per module file per process: PKCS#11 allows a
/// single `C_Initialize`, so every [`Token`](crate::Token) on the same module shares it.
pub struct Module {
    pub(crate) ctx: Pkcs11,
    /// The module's functions called directly, when they share cryptoki's state.
    pub(crate) ffi: Option<FunctionList>,
    path: PathBuf,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

static LOADED: Mutex<Vec<(PathBuf, Weak<Module>)>> = Mutex::new(Vec::new());

impl Module {
    /// Loads (or reuses) the module at `path`.
    ///
    /// # Errors
    /// [`Error::LoadModule`] when the file is missing or is not a PKCS#11 module.
    pub fn load(path: &Path) -> Result<Arc<Self>, Error> {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|(_, m)| m.strong_count() > 0);
        if let Some(module) = loaded
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, m)| m.upgrade())
        {
            return Ok(module);
        }
        let failed = |source| Error::LoadModule {
            path: path.to_owned(),
            source,
        };
        if !path.is_file() {
            return Err(Error::ModuleFile {
                path: path.to_owned(),
                reason: "no such file".into(),
            });
        }
        let ctx = Pkcs11::new(path).map_err(failed)?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(failed(e)),
        }
        let ffi = FunctionList::load(path).map_err(|reason| Error::ModuleFile {
            path: path.to_owned(),
            reason,
        })?;
        let ffi = ffi.shares_state().then_some(ffi);
        let module = Arc::new(Self {
            ctx,
            ffi,
            path: path.to_owned(),
        });
        loaded.push((path.to_owned(), Arc::downgrade(&module)));
        Ok(module)
    }

    /// The module named by a URI: `module-path`, else `module-name` looked up in
    /// [`MODULE_DIRS`], else `fallback`.
    ///
    /// # Errors
    /// [`Error::NoModule`], [`Error::ModuleNotFound`] or [`Error::LoadModule`].
    pub fn for_uri(uri: &Pkcs11Uri, fallback: Option<&Path>) -> Result<Arc<Self>, Error> {
        if let Some(path) = &uri.module_path {
            return Self::load(path);
        }
        if let Some(name) = &uri.module_name {
            for dir in MODULE_DIRS {
                for file in [format!("{name}.so"), format!("lib{name}.so"), name.clone()] {
                    let candidate = Path::new(dir).join(file);
                    if candidate.is_file() {
                        return Self::load(&candidate);
                    }
                }
            }
            return Err(Error::ModuleNotFound {
                name: name.clone(),
                searched: MODULE_DIRS.join(", "),
            });
        }
        match fallback {
            Some(path) => Self::load(path),
            None => Err(Error::NoModule),
        }
    }

    /// The cryptoki context, for operations this crate does not wrap (and for benchmarks that
    /// compare against bare cryptoki).
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The module file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token present, with its slot.
    ///
    /// # Errors
    /// [`Error::Pkcs11`] when the module fails.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| Error::from_cryptoki(e, "list slots"))?;
        let mut out = Vec::new();
        for slot in slots {
            let info = match self.token_info(slot) {
                Ok(info) => info,
                // A token removed between the two calls is simply not listed.
                Err(CkError::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _)) => {
                    continue;
                }
                Err(e) => return Err(Error::from_cryptoki(e, format!("slot {slot}"))),
            };
            let slot_info = self.ctx.get_slot_info(slot).ok();
            out.push(TokenInfo {
                slot,
                initialized: info.has(CKF_TOKEN_INITIALIZED),
                login_required: info.has(CKF_LOGIN_REQUIRED),
                slot_description: slot_info
                    .as_ref()
                    .map(|s| s.slot_description().trim().to_owned())
                    .unwrap_or_default(),
                slot_manufacturer: slot_info
                    .as_ref()
                    .map(|s| s.manufacturer_id().trim().to_owned())
                    .unwrap_or_default(),
                max_sessions: info.session_limit(),
                user_pin_initialized: info.has(CKF_USER_PIN_INITIALIZED),
                user_pin_locked: info.has(CKF_USER_PIN_LOCKED),
                user_pin_to_be_changed: info.has(CKF_USER_PIN_TO_BE_CHANGED),
                user_pin_tries: if info.has(CKF_USER_PIN_FINAL_TRY) {
                    crate::PinTries::FinalTry
                } else if info.has(CKF_USER_PIN_COUNT_LOW) {
                    crate::PinTries::Low
                } else {
                    crate::PinTries::Unknown
                },
                label: info.label,
                manufacturer: info.manufacturer,
                model: info.model,
                serial: info.serial,
            });
        }
        Ok(out)
    }

    /// The one initialised token matching the URI's token attributes.
    ///
    /// # Errors
    /// [`Error::TokenNotFound`] or [`Error::AmbiguousToken`].
    pub(crate) fn find_token(&self, uri: &Pkcs11Uri) -> Result<TokenInfo, Error> {
        let tokens = self.tokens()?;
        let matching: Vec<&TokenInfo> = tokens
            .iter()
            .filter(|t| t.initialized && t.matches(uri))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::TokenNotFound {
                selector: token_selector(uri),
                available: tokens
                    .iter()
                    .filter(|t| t.initialized)
                    .map(|t| format!("'{}'", t.label))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            many => Err(Error::AmbiguousToken {
                selector: token_selector(uri),
                count: many.len(),
            }),
        }
    }

    /// Initialises (or re-initialises, erasing every object) the token labelled `label`, or the
    /// first uninitialised token when none has that label, and sets its user PIN.
    ///
    /// # Errors
    /// [`Error::Pkcs11`] (for instance `CKR_SESSION_EXISTS` while sessions are open on it, or
    /// `CKR_PIN_INCORRECT` for a wrong SO PIN), or [`Error::TokenNotFound`] when no slot is free.
    pub fn init_token(
        &self,
        label: &str,
        so_pin: &hsm_core::SecretString,
        user_pin: &hsm_core::SecretString,
    ) -> Result<TokenInfo, Error> {
        let tokens = self.tokens()?;
        let target = tokens
            .iter()
            .find(|t| t.initialized && t.label == label)
            .or_else(|| tokens.iter().find(|t| !t.initialized))
            .ok_or_else(|| Error::TokenNotFound {
                selector: "an uninitialised token".into(),
                available: String::new(),
            })?;
        let so = cryptoki::types::AuthPin::from(so_pin.expose().to_owned());
        let context = || format!("token '{label}'");
        self.ctx
            .init_token(target.slot, &so, label)
            .map_err(|e| Error::from_cryptoki(e, context()))?;
        let session = self
            .ctx
            .open_rw_session(target.slot)
            .map_err(|e| Error::from_cryptoki(e, context()))?;
        session
            .login(cryptoki::session::UserType::So, Some(&so))
            .map_err(|e| Error::from_cryptoki(e, context()))?;
        let user = cryptoki::types::AuthPin::from(user_pin.expose().to_owned());
        session
            .init_pin(&user)
            .map_err(|e| Error::from_cryptoki(e, context()))?;
        drop(session);
        let uri = Pkcs11Uri {
            token: Some(label.to_owned()),
            ..Pkcs11Uri::default()
        };
        self.find_token(&uri)
    }

    /// Closes every session of this process on `slot` (`C_CloseAllSessions`). Live handles on
    /// that token re-open their sessions and log in again on their next use.
    ///
    /// # Errors
    /// [`Error::Pkcs11`] when the module fails, or cannot be called directly (p11-kit's client
    /// module).
    pub fn close_all_sessions(&self, slot: Slot) -> Result<(), Error> {
        let closed = match &self.ffi {
            Some(ffi) => ffi.close_all_sessions(slot),
            // cryptoki does not wrap it; a module without a shared table cannot be reached.
            None => Err(CkError::NullFunctionPointer),
        };
        closed.map_err(|e| Error::from_cryptoki(e, format!("slot {}", slot.id())))
    }

    /// `C_GetTokenInfo`, directly when possible (cryptoki rejects opencryptoki's clock field).
    fn token_info(&self, slot: Slot) -> Result<RawTokenInfo, CkError> {
        if let Some(ffi) = &self.ffi {
            return ffi.token_info(slot);
        }
        let info = self.ctx.get_token_info(slot)?;
        let flag = |on: bool, flag: cryptoki_sys::CK_FLAGS| if on { flag } else { 0 };
        Ok(RawTokenInfo {
            label: info.label().trim().to_owned(),
            manufacturer: info.manufacturer_id().trim().to_owned(),
            model: info.model().trim().to_owned(),
            serial: info.serial_number().trim().to_owned(),
            flags: flag(info.token_initialized(), CKF_TOKEN_INITIALIZED)
                | flag(info.login_required(), CKF_LOGIN_REQUIRED)
                | flag(info.user_pin_initialized(), CKF_USER_PIN_INITIALIZED)
                | flag(info.user_pin_locked(), CKF_USER_PIN_LOCKED)
                | flag(info.user_pin_to_be_changed(), CKF_USER_PIN_TO_BE_CHANGED)
                | flag(info.user_pin_final_try(), CKF_USER_PIN_FINAL_TRY)
                | flag(info.user_pin_count_low(), CKF_USER_PIN_COUNT_LOW),
            max_sessions: match info.max_session_count() {
                cryptoki::slot::Limit::Max(n) => n as cryptoki_sys::CK_ULONG,
                _ => 0,
            },
        })
    }

    /// `C_SignInit` + `C_Sign`: one `C_Sign` into a buffer of `max_len` bytes through the
    /// module's own table, else cryptoki's (which asks for the length first). With
    /// `context_pin`, the context-specific login goes between the two.
    pub(crate) fn sign(
        &self,
        session: &cryptoki::session::Session,
        mechanism: &cryptoki::mechanism::Mechanism<'_>,
        key: cryptoki::object::ObjectHandle,
        data: &[u8],
        max_len: usize,
        context_pin: Option<&hsm_core::SecretString>,
    ) -> Result<Vec<u8>, CkError> {
        if let Some(ffi) = &self.ffi {
            return ffi.sign(session, mechanism, key, data, max_len, context_pin);
        }
        match context_pin {
            None => session.sign(mechanism, key, data),
            Some(pin) => {
                // cryptoki's single-part sign cannot log in between its two calls: multi-part.
                session.sign_init(mechanism, key)?;
                let pin = cryptoki::types::AuthPin::from(pin.expose().to_owned());
                session.login(cryptoki::session::UserType::ContextSpecific, Some(&pin))?;
                session.sign_update(data)?;
                session.sign_final()
            }
        }
    }
}

/// What a token says about itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The slot it sits in now (slots can change; select tokens by label or serial).
    pub slot: Slot,
    /// `CKA_LABEL` of the token.
    pub label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Whether the token is initialised.
    pub initialized: bool,
    /// Whether the token needs a user login for private objects.
    pub login_required: bool,
    /// The slot's description.
    pub slot_description: String,
    /// The slot's manufacturer.
    pub slot_manufacturer: String,
    /// The most sessions the token allows at once (`ulMaxSessionCount`); `None` when it sets
    /// no limit or does not say.
    pub max_sessions: Option<u64>,
    /// The user PIN has been set (`CKF_USER_PIN_INITIALIZED`).
    pub user_pin_initialized: bool,
    /// The user PIN is locked (`CKF_USER_PIN_LOCKED`).
    pub user_pin_locked: bool,
    /// The user PIN must be changed before use (`CKF_USER_PIN_TO_BE_CHANGED`).
    pub user_pin_to_be_changed: bool,
    /// What the token says of wrong PINs so far.
    pub user_pin_tries: crate::PinTries,
}

impl TokenInfo {
    fn matches(&self, uri: &Pkcs11Uri) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&uri.token, &self.label)
            && eq(&uri.manufacturer, &self.manufacturer)
            && eq(&uri.model, &self.model)
            && eq(&uri.serial, &self.serial)
            && eq(&uri.slot_description, &self.slot_description)
            && eq(&uri.slot_manufacturer, &self.slot_manufacturer)
            && uri.slot_id.is_none_or(|id| id == self.slot.id())
    }
}

fn token_selector(uri: &Pkcs11Uri) -> String {
    let text = uri.token_attributes().to_string();
    if text == "pkcs11:" {
        "any token".into()
    } else {
        text
    }
}

//! Loading a PKCS#11 module once per process, and finding tokens by their attributes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::slot::Slot;

use crate::ffi::FunctionList;
use crate::{Error, Pkcs11Uri};

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
    pub(crate) ffi: FunctionList,
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
            let info = match self.ctx.get_token_info(slot) {
                Ok(info) => info,
                // A token removed between the two calls is simply not listed.
                Err(_) => continue,
            };
            let slot_info = self.ctx.get_slot_info(slot).ok();
            out.push(TokenInfo {
                slot,
                label: info.label().trim().to_owned(),
                manufacturer: info.manufacturer_id().trim().to_owned(),
                model: info.model().trim().to_owned(),
                serial: info.serial_number().trim().to_owned(),
                initialized: info.token_initialized(),
                login_required: info.login_required(),
                slot_description: slot_info
                    .as_ref()
                    .map(|s| s.slot_description().trim().to_owned())
                    .unwrap_or_default(),
                slot_manufacturer: slot_info
                    .as_ref()
                    .map(|s| s.manufacturer_id().trim().to_owned())
                    .unwrap_or_default(),
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
    /// [`Error::Pkcs11`] when the module fails.
    pub fn close_all_sessions(&self, slot: Slot) -> Result<(), Error> {
        self.ffi
            .close_all_sessions(slot)
            .map_err(|e| Error::from_cryptoki(e, format!("slot {}", slot.id())))
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

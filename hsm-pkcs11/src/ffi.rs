//! The few PKCS#11 calls made directly through the module's function list rather than through
//! cryptoki: a single-part sign into a caller-sized buffer (cryptoki's `Session::sign` always asks
//! for the length first, one extra round trip per signature), `C_GetTokenInfo` (cryptoki rejects
//! some tokens' clock field) and `C_CloseAllSessions`.

use std::path::Path;
use std::ptr::NonNull;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::{CK_FLAGS, CK_FUNCTION_LIST, CK_MECHANISM, CK_RV, CK_ULONG};

/// The module's function list, from a second `dlopen` of the same module file. The dynamic
/// loader returns the already-loaded instance, so for a module with one function table these
/// are the very functions cryptoki calls; [`FunctionList::shares_state`] checks it (p11-kit's
/// client module hands each `C_GetFunctionList` a connection of its own).
pub(crate) struct FunctionList {
    list: NonNull<CK_FUNCTION_LIST>,
    // Keeps the library mapped for as long as `list` is used.
    _library: cryptoki_sys::Pkcs11,
}

// SAFETY: `list` points into the module's static, read-only function table; PKCS#11 modules
// initialised with CKF_OS_LOCKING_OK (cryptoki's `CInitializeArgs::OsThreads`) may be called from
// any thread.
unsafe impl Send for FunctionList {}
// SAFETY: as above; the table is never written through this pointer.
unsafe impl Sync for FunctionList {}

impl FunctionList {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading a PKCS#11 module runs its initialisers; the same module has just been
        // loaded by cryptoki from the same path, so this only bumps its reference count.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| e.to_string())?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to `list`, which outlives the call.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        if rv != cryptoki_sys::CKR_OK {
            return Err(format!("C_GetFunctionList returned {rv:#x}"));
        }
        let list = NonNull::new(list).ok_or("C_GetFunctionList returned NULL")?;
        Ok(Self {
            list,
            _library: library,
        })
    }

    /// Whether this table is the module instance cryptoki initialised (and not a fresh one that
    /// answers `CKR_CRYPTOKI_NOT_INITIALIZED`).
    pub(crate) fn shares_state(&self) -> bool {
        // SAFETY: as in `sign`.
        let list = unsafe { self.list.as_ref() };
        let Some(get_slots) = list.C_GetSlotList else {
            return false;
        };
        let mut count: CK_ULONG = 0;
        // SAFETY: a NULL slot list asks only for the count, written to `count`.
        let rv = unsafe { get_slots(cryptoki_sys::CK_FALSE, std::ptr::null_mut(), &mut count) };
        rv != cryptoki_sys::CKR_CRYPTOKI_NOT_INITIALIZED
    }

    /// `C_SignInit` + one `C_Sign` into a buffer of `max_len` bytes; returns the signature.
    pub(crate) fn sign(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        max_len: usize,
        context_pin: Option<&hsm_core::SecretString>,
    ) -> Result<Vec<u8>, CkError> {
        // SAFETY: the function table is valid while `self` lives (see `FunctionList`).
        let list = unsafe { self.list.as_ref() };
        let sign_init = list.C_SignInit.ok_or(CkError::NullFunctionPointer)?;
        let sign = list.C_Sign.ok_or(CkError::NullFunctionPointer)?;
        let mut mechanism: CK_MECHANISM = mechanism.into();
        // SAFETY: the session and key handles come from cryptoki on this module; `mechanism`
        // (and the parameters it points to, borrowed from `mechanism`) outlive the call.
        let rv = unsafe { sign_init(session.handle(), &mut mechanism, key.handle()) };
        check(rv, Function::SignInit)?;
        // A key with CKA_ALWAYS_AUTHENTICATE wants the PIN again for each operation, between
        // C_SignInit and C_Sign (PKCS#11 3.0, section 5.1.8).
        if let Some(pin) = context_pin {
            let pin = cryptoki::types::AuthPin::from(pin.expose().to_owned());
            session.login(cryptoki::session::UserType::ContextSpecific, Some(&pin))?;
        }
        let mut signature = vec![0u8; max_len];
        let mut len = CK_ULONG::try_from(max_len).map_err(|_| CkError::InvalidValue)?;
        let data_len = CK_ULONG::try_from(data.len()).map_err(|_| CkError::InvalidValue)?;
        // SAFETY: `data` is read-only for the module despite the `*mut` in the C prototype;
        // `signature` has `len` writable bytes and the module writes at most that many.
        let rv = unsafe {
            sign(
                session.handle(),
                data.as_ptr().cast_mut(),
                data_len,
                signature.as_mut_ptr(),
                &mut len,
            )
        };
        check(rv, Function::Sign)?;
        signature.truncate(usize::try_from(len).map_err(|_| CkError::InvalidValue)?);
        Ok(signature)
    }

    /// `C_GetTokenInfo` on `slot`, read here because cryptoki's parser rejects some tokens'
    /// clock field (opencryptoki's soft token fills `utcTime` with a format of its own).
    pub(crate) fn token_info(&self, slot: Slot) -> Result<RawTokenInfo, CkError> {
        // SAFETY: as in `sign`.
        let list = unsafe { self.list.as_ref() };
        let get = list.C_GetTokenInfo.ok_or(CkError::NullFunctionPointer)?;
        // SAFETY: CK_TOKEN_INFO is plain data (byte arrays and integers): all zeroes is valid.
        let mut info: cryptoki_sys::CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: the module writes one CK_TOKEN_INFO into `info`, which outlives the call.
        let rv = unsafe { get(slot.id(), &mut info) };
        check(rv, Function::GetTokenInfo)?;
        let text = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .trim_end_matches([' ', '\0'])
                .trim()
                .to_owned()
        };
        Ok(RawTokenInfo {
            label: text(&info.label),
            manufacturer: text(&info.manufacturerID),
            model: text(&info.model),
            serial: text(&info.serialNumber),
            flags: info.flags,
            max_sessions: info.ulMaxSessionCount,
        })
    }

    /// `C_CloseAllSessions` on `slot`: every session of this process on that token.
    pub(crate) fn close_all_sessions(&self, slot: Slot) -> Result<(), CkError> {
        // SAFETY: as in `sign`.
        let list = unsafe { self.list.as_ref() };
        let close = list
            .C_CloseAllSessions
            .ok_or(CkError::NullFunctionPointer)?;
        // SAFETY: takes a slot id by value.
        let rv = unsafe { close(slot.id()) };
        check(rv, Function::CloseAllSessions)
    }
}

/// What [`FunctionList::token_info`] reads.
pub(crate) struct RawTokenInfo {
    pub(crate) label: String,
    pub(crate) manufacturer: String,
    pub(crate) model: String,
    pub(crate) serial: String,
    pub(crate) flags: CK_FLAGS,
    pub(crate) max_sessions: CK_ULONG,
}

impl RawTokenInfo {
    pub(crate) fn has(&self, flag: CK_FLAGS) -> bool {
        self.flags & flag != 0
    }

    /// The session limit, when the token states one (not "effectively infinite" or
    /// "unavailable").
    // CK_ULONG is u64 here, u32 on Windows.
    #[allow(clippy::useless_conversion)]
    pub(crate) fn session_limit(&self) -> Option<u64> {
        let n = u64::try_from(self.max_sessions).ok()?;
        (n > 0
            && self.max_sessions != cryptoki_sys::CK_EFFECTIVELY_INFINITE
            && self.max_sessions != cryptoki_sys::CK_UNAVAILABLE_INFORMATION)
            .then_some(n)
    }
}

fn check(rv: CK_RV, function: Function) -> Result<(), CkError> {
    Rv::from(rv).into_result(function)
}

//! The few PKCS#11 calls made directly through the module's function list rather than through
//! cryptoki: a single-part sign into a caller-sized buffer (cryptoki's `Session::sign` always asks
//! for the length first, one extra round trip per signature) and `C_CloseAllSessions`.

use std::path::Path;
use std::ptr::NonNull;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::{CK_FUNCTION_LIST, CK_MECHANISM, CK_RV, CK_ULONG};

/// The module's function list, from a second `dlopen` of the same module file. The dynamic
/// loader returns the already-loaded instance, so these are the very functions cryptoki calls.
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

    /// `C_SignInit` + one `C_Sign` into a buffer of `max_len` bytes; returns the signature.
    pub(crate) fn sign(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        max_len: usize,
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

fn check(rv: CK_RV, function: Function) -> Result<(), CkError> {
    Rv::from(rv).into_result(function)
}

//! HMAC sequences (`TPM2_HMAC_Start`, `TPM2_SequenceUpdate`, `TPM2_SequenceComplete`) through
//! libtss2's ESAPI directly: tss-esapi 7 does not wrap these commands, and its `Context` does not
//! hand out its `ESYS_CONTEXT`. So this module opens its own TCTI and ESAPI context for the
//! sequence and closes both when done (the caller closes its own connection first, because swtpm
//! and `/dev/tpm0` serve one connection at a time).

#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr::null_mut;

use tss_esapi::constants::tss::TPM2_ALG_SHA256;
use tss_esapi::tss2_esys::{
    ESYS_CONTEXT, ESYS_TR, ESYS_TR_NONE, ESYS_TR_PASSWORD, ESYS_TR_RH_NULL, Esys_Finalize,
    Esys_FlushContext, Esys_Free, Esys_HMAC_Start, Esys_Initialize, Esys_SequenceComplete,
    Esys_SequenceUpdate, Esys_TR_FromTPMPublic, TPM2B_AUTH, TPM2B_DIGEST, TPM2B_MAX_BUFFER,
    TPMT_TK_HASHCHECK, TSS2_TCTI_CONTEXT, Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize,
};
use zeroize::Zeroize as _;

use crate::error::TssError;
use crate::{Error, PersistentHandle, Tcti};

const OPERATION: &str = "HMAC-SHA256 sequence";
/// `TPM_RC_HANDLE` without the handle number.
const TPM_RC_HANDLE: u32 = 0x08b;

/// HMAC-SHA256 of `data` with the key persisted at `handle`, fed to the TPM in `chunk`-byte
/// pieces (at most 1024, the size of a `TPM2B_MAX_BUFFER`).
pub(crate) fn hmac_sha256(
    tcti: &Tcti,
    handle: PersistentHandle,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, Error> {
    let chunk = chunk.clamp(1, 1024);
    let esys = Esys::open(tcti)?;
    let mut key: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: esys is a live context; `key` is a valid out-pointer.
    let rc = unsafe {
        Esys_TR_FromTPMPublic(
            esys.context,
            handle.value(),
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            &mut key,
        )
    };
    if rc != 0 {
        let source = TssError::from_code(rc);
        return Err(if source.tpm_rc() == Some(TPM_RC_HANDLE) {
            Error::NotFound {
                handle,
                what: "HMAC key",
            }
        } else {
            tpm("TPM2_ReadPublic", source)
        });
    }

    let empty_auth = TPM2B_AUTH::default();
    let mut sequence: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: live context, a handle it returned, a valid auth value and out-pointer.
    let rc = unsafe {
        Esys_HMAC_Start(
            esys.context,
            key,
            ESYS_TR_PASSWORD,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            &empty_auth,
            TPM2_ALG_SHA256,
            &mut sequence,
        )
    };
    check("TPM2_HMAC_Start", rc)?;

    let result = feed(&esys, sequence, data, chunk);
    if result.is_err() {
        // SequenceComplete flushes the sequence; on any failure before it, flush it here.
        // SAFETY: live context and a sequence handle it returned.
        let _ = unsafe { Esys_FlushContext(esys.context, sequence) };
    }
    result
}

/// Sends all of `data` but the last piece with `TPM2_SequenceUpdate`, and the last piece with
/// `TPM2_SequenceComplete`.
fn feed(esys: &Esys, sequence: ESYS_TR, data: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
    let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        let buffer = max_buffer(piece);
        // SAFETY: live context, a sequence handle it returned, a valid buffer.
        let rc = unsafe {
            Esys_SequenceUpdate(
                esys.context,
                sequence,
                ESYS_TR_PASSWORD,
                ESYS_TR_NONE,
                ESYS_TR_NONE,
                &*buffer.0,
            )
        };
        check("TPM2_SequenceUpdate", rc)?;
    }
    let buffer = max_buffer(last);
    let mut result: *mut TPM2B_DIGEST = null_mut();
    let mut validation: *mut TPMT_TK_HASHCHECK = null_mut();
    // SAFETY: live context, a sequence handle it returned, a valid buffer and out-pointers.
    let rc = unsafe {
        Esys_SequenceComplete(
            esys.context,
            sequence,
            ESYS_TR_PASSWORD,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            &*buffer.0,
            ESYS_TR_RH_NULL,
            &mut result,
            &mut validation,
        )
    };
    // SAFETY: ESAPI allocated both (or left them null); Esys_Free takes null too.
    let free = |result: *mut TPM2B_DIGEST, validation: *mut TPMT_TK_HASHCHECK| unsafe {
        Esys_Free(result.cast());
        Esys_Free(validation.cast());
    };
    if rc != 0 {
        free(result, validation);
        return Err(tpm("TPM2_SequenceComplete", TssError::from_code(rc)));
    }
    if result.is_null() {
        free(result, validation);
        return Err(Error::UnexpectedOutput(
            "no digest from TPM2_SequenceComplete",
        ));
    }
    // SAFETY: non-null, allocated and filled by ESAPI on success.
    let digest = unsafe { &*result };
    let size = usize::from(digest.size).min(digest.buffer.len());
    let out = digest.buffer[..size].to_vec();
    free(result, validation);
    Ok(out)
}

/// A `TPM2B_MAX_BUFFER` holding a piece of the HMAC input, wiped on drop.
struct MaxBuffer(Box<TPM2B_MAX_BUFFER>);

impl Drop for MaxBuffer {
    fn drop(&mut self) {
        self.0.buffer.zeroize();
    }
}

fn max_buffer(piece: &[u8]) -> MaxBuffer {
    let mut buffer = Box::new(TPM2B_MAX_BUFFER {
        size: 0,
        buffer: [0; 1024],
    });
    let len = piece.len().min(buffer.buffer.len());
    buffer.buffer[..len].copy_from_slice(&piece[..len]);
    // len <= 1024 fits a u16.
    buffer.size = u16::try_from(len).unwrap_or(1024);
    MaxBuffer(buffer)
}

fn check(command: &'static str, rc: u32) -> Result<(), Error> {
    if rc == 0 {
        Ok(())
    } else {
        Err(tpm(command, TssError::from_code(rc)))
    }
}

fn tpm(command: &'static str, source: TssError) -> Error {
    Error::Tpm {
        operation: OPERATION,
        command,
        source,
    }
}

/// A TCTI and an ESAPI context on it, finalised on drop.
struct Esys {
    tcti: *mut TSS2_TCTI_CONTEXT,
    context: *mut ESYS_CONTEXT,
}

impl Esys {
    fn open(tcti: &Tcti) -> Result<Self, Error> {
        let conf = CString::new(tcti.to_string()).map_err(|_| {
            tpm(
                "Tss2_TctiLdr_Initialize",
                TssError::from_code(TSS2_BAD_VALUE),
            )
        })?;
        let mut esys = Self {
            tcti: null_mut(),
            context: null_mut(),
        };
        // SAFETY: a NUL-terminated configuration string and a valid out-pointer.
        let rc = unsafe { Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut esys.tcti) };
        check("Tss2_TctiLdr_Initialize", rc)?;
        // SAFETY: the TCTI context just initialised; a null ABI version means "current".
        let rc = unsafe { Esys_Initialize(&mut esys.context, esys.tcti, null_mut()) };
        check("Esys_Initialize", rc)?;
        Ok(esys)
    }
}

impl Drop for Esys {
    fn drop(&mut self) {
        // SAFETY: both pointers are null or were initialised by the matching functions; the
        // finalisers take a pointer to the pointer and null it.
        unsafe {
            if !self.context.is_null() {
                Esys_Finalize(&mut self.context);
            }
            if !self.tcti.is_null() {
                Tss2_TctiLdr_Finalize(&mut self.tcti);
            }
        }
    }
}

/// `TSS2_BASE_RC_BAD_VALUE` in the ESAPI layer.
const TSS2_BAD_VALUE: u32 = 0x0007_000b;

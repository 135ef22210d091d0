//! The TPM challenge: the activation blob that only the enrolled TPM can open (built in pure
//! Rust by `tpm-wire`: the credential made to the EK, the HMAC key duplicated to the SRK).

/// Builds the DPS activation blob carrying `key` for the TPM with this EK and SRK (marshaled
/// `TPM2B_PUBLIC`s).
pub(crate) fn activation_blob(ek: &[u8], srk: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
    tpm_wire::build_activation(ek, srk, key)
        .and_then(|blob| blob.to_bytes())
        .map_err(|e| e.to_string())
}

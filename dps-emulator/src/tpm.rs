//! The TPM challenge: the activation blob that only the enrolled TPM can open.

/// Builds the DPS activation blob carrying `key` for the TPM with this EK and SRK.
pub(crate) fn activation_blob(ek: &[u8], srk: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
    let _ = (ek, srk, key);
    Err("TPM attestation is not built yet".to_owned())
}

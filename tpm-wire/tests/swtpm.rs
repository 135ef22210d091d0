//! The proof that the pure-Rust builder is right: a real TPM (swtpm), driven by tpm2-tools,
//! activates the credential, imports the duplicated key and computes the same HMAC as software.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use hmac::{KeyInit, Mac};
use hsm_testkit::swtpm::Swtpm;
use tpm_wire::{
    Activation, ActivationBlob, AlgId, HMAC_KEY_ATTRIBUTES, INNER_KEY_BYTES, Public, PublicDetails,
    Scheme, build_activation_with,
};

const EK_HANDLE: &str = "0x81010001";
const SRK_HANDLE: &str = "0x81000001";
const SRK_ATTRIBUTES: &str =
    "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda";
const HMAC_KEY: [u8; 32] = *b"tpm-wire cross-check HMAC key 32";

/// A fresh swtpm with the EK (TCG L-1, as `tpm2_createek -G rsa` makes it) and the SRK persisted
/// at the DESIGN.md handles, and their marshaled `TPM2B_PUBLIC`s.
fn provisioned_tpm() -> (Swtpm, Vec<u8>, Vec<u8>) {
    let tpm = Swtpm::start();
    tpm.tpm2_ok(&["createek", "-c", EK_HANDLE, "-G", "rsa", "-u", "ek.pub"]);
    tpm.tpm2_ok(&["flushcontext", "-t"]);
    tpm.tpm2_ok(&[
        "createprimary",
        "-C",
        "o",
        "-G",
        "rsa2048:null:aes128cfb",
        "-g",
        "sha256",
        "-a",
        SRK_ATTRIBUTES,
        "-c",
        "srk.ctx",
    ]);
    tpm.tpm2_ok(&["evictcontrol", "-C", "o", "-c", "srk.ctx", SRK_HANDLE]);
    tpm.tpm2_ok(&["flushcontext", "-t"]);
    tpm.tpm2_ok(&["readpublic", "-c", SRK_HANDLE, "-o", "srk.pub"]);
    let ek = std::fs::read(tpm.work_dir().join("ek.pub")).unwrap();
    let srk = std::fs::read(tpm.work_dir().join("srk.pub")).unwrap();
    (tpm, ek, srk)
}

fn tpm2b(contents: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(contents.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(contents);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// `tpm2_activatecredential` with the EK under a `PolicySecret(TPM_RH_ENDORSEMENT)` session; the
/// recovered credential, or the tool's stderr.
fn activate(tpm: &Swtpm, blob: &ActivationBlob) -> Result<Vec<u8>, String> {
    write(
        tpm.work_dir(),
        "cred.bin",
        &blob.to_tpm2_tools_credential().unwrap(),
    );
    let _ = std::fs::remove_file(tpm.work_dir().join("secret.bin"));
    tpm.tpm2_ok(&["startauthsession", "--policy-session", "-S", "s.ctx"]);
    tpm.tpm2_ok(&["policysecret", "-S", "s.ctx", "-c", "e"]);
    let out = tpm.tpm2(&[
        "activatecredential",
        "-c",
        SRK_HANDLE,
        "-C",
        EK_HANDLE,
        "-i",
        "cred.bin",
        "-o",
        "secret.bin",
        "-P",
        "session:s.ctx",
    ]);
    tpm.tpm2_ok(&["flushcontext", "s.ctx"]);
    if out.status.success() {
        Ok(std::fs::read(tpm.work_dir().join("secret.bin")).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `tpm2_import` of the duplicate under the SRK with `inner_key`, then `tpm2_load`; the
/// loaded key's context is saved in `key.ctx`. The failing tool's stderr on error.
fn import_and_load(tpm: &Swtpm, blob: &ActivationBlob, inner_key: &[u8]) -> Result<(), String> {
    let dir = tpm.work_dir();
    write(dir, "key.pub", &tpm2b(&blob.public));
    write(dir, "key.dup", &tpm2b(&blob.duplicate));
    write(dir, "key.seed", &tpm2b(&blob.srk_encrypted_seed));
    write(dir, "inner.key", inner_key);
    let import = tpm.tpm2(&[
        "import",
        "-C",
        SRK_HANDLE,
        "-u",
        "key.pub",
        "-i",
        "key.dup",
        "-s",
        "key.seed",
        "-k",
        "inner.key",
        "-r",
        "key.priv",
    ]);
    if !import.status.success() {
        return Err(format!(
            "tpm2_import: {}",
            String::from_utf8_lossy(&import.stderr)
        ));
    }
    tpm.tpm2_ok(&["flushcontext", "-t"]);
    tpm.tpm2_ok(&[
        "load", "-C", SRK_HANDLE, "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx",
    ]);
    // swtpm has three object slots and no resource manager: keep only the saved context.
    tpm.tpm2_ok(&["flushcontext", "-t"]);
    Ok(())
}

fn tpm_hmac(tpm: &Swtpm, message: &[u8]) -> Vec<u8> {
    write(tpm.work_dir(), "message.bin", message);
    tpm.tpm2_ok(&[
        "hmac",
        "-c",
        "key.ctx",
        "-g",
        "sha256",
        "-o",
        "hmac.bin",
        "message.bin",
    ]);
    tpm.tpm2_ok(&["flushcontext", "-t"]);
    std::fs::read(tpm.work_dir().join("hmac.bin")).unwrap()
}

fn software_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn build(ek: &[u8], srk: &[u8], key: &[u8]) -> Activation {
    build_activation_with(ek, srk, key, &mut getrandom::SysRng).unwrap()
}

#[test]
fn activation_round_trip_through_tpm2_tools() {
    let (tpm, ek, srk) = provisioned_tpm();
    let activation = build(&ek, &srk, &HMAC_KEY);
    // Over the wire and back.
    let blob = ActivationBlob::parse(&activation.blob.to_bytes().unwrap()).unwrap();
    assert_eq!(blob, activation.blob);

    let inner_key = activate(&tpm, &blob).unwrap();
    assert_eq!(inner_key.len(), INNER_KEY_BYTES);
    assert_eq!(&inner_key[..], &activation.inner_key()[..]);

    import_and_load(&tpm, &blob, &inner_key).unwrap();
    for message in [
        &b"myscope.azure-devices-provisioning.net/registrations/dev\n1700000000"[..],
        b"",
        &[0xa5; 1000],
    ] {
        assert_eq!(
            tpm_hmac(&tpm, message),
            software_hmac(&HMAC_KEY, message),
            "TPM and software HMAC differ for a {}-byte message",
            message.len()
        );
    }

    // The TPM's view of the imported key is the public area we built.
    tpm.tpm2_ok(&[
        "readpublic",
        "-c",
        "key.ctx",
        "-o",
        "loaded.pub",
        "-n",
        "loaded.name",
    ]);
    let loaded = std::fs::read(tpm.work_dir().join("loaded.pub")).unwrap();
    let public = Public::from_tpm2b(&loaded).unwrap();
    assert_eq!(public, blob.public_area().unwrap());
    assert_eq!(public.attributes, HMAC_KEY_ATTRIBUTES);
    assert_eq!(public.object_type(), AlgId::KEYEDHASH);
    assert!(matches!(
        public.details,
        PublicDetails::KeyedHash(ref d) if d.scheme == Scheme::HMAC_SHA256
    ));
    let name = std::fs::read(tpm.work_dir().join("loaded.name")).unwrap();
    assert_eq!(
        name,
        public.name().unwrap(),
        "our Name computation differs from the TPM's"
    );
}

#[test]
fn names_match_the_tpm() {
    let (tpm, ek, srk) = provisioned_tpm();
    for (handle, bytes) in [(EK_HANDLE, &ek), (SRK_HANDLE, &srk)] {
        tpm.tpm2_ok(&["readpublic", "-c", handle, "-n", "obj.name"]);
        let name = std::fs::read(tpm.work_dir().join("obj.name")).unwrap();
        let public = Public::from_tpm2b(bytes).unwrap();
        assert_eq!(public.name().unwrap(), name, "Name of {handle}");
        assert_eq!(&public.to_tpm2b().unwrap(), bytes, "round trip of {handle}");
    }
}

#[test]
fn blob_for_another_tpm_does_not_activate() {
    let (tpm, ek, srk) = provisioned_tpm();
    let (_other, other_ek, _) = provisioned_tpm();
    let activation = build(&other_ek, &srk, &HMAC_KEY);
    let err = activate(&tpm, &activation.blob).unwrap_err();
    // The seed does not OAEP-decrypt under this EK. libtpms reports that as TPM_RC_FAILURE
    // (0x101) rather than TPM_RC_VALUE, without entering failure mode.
    assert!(
        err.contains("Esys_ActivateCredential(0x"),
        "expected a TPM error from tpm2_activatecredential, got {err}"
    );
    // The TPM is still usable, and a blob for its own EK activates.
    let own = build(&ek, &srk, &HMAC_KEY);
    assert_eq!(activate(&tpm, &own.blob).unwrap(), own.inner_key().to_vec());
}

#[test]
fn corrupted_integrity_is_refused() {
    let (tpm, ek, srk) = provisioned_tpm();
    let activation = build(&ek, &srk, &HMAC_KEY);

    // The credential's integrity HMAC (after its 2-byte size).
    let mut bad_credential = activation.blob.clone();
    bad_credential.credential_blob[2] ^= 1;
    let err = activate(&tpm, &bad_credential).unwrap_err();
    assert!(err.contains("integrity"), "{err}");

    // The duplicate's outer HMAC: activation works, import fails.
    let inner_key = activate(&tpm, &activation.blob).unwrap();
    let mut bad_duplicate = activation.blob.clone();
    bad_duplicate.duplicate[2] ^= 1;
    let err = import_and_load(&tpm, &bad_duplicate, &inner_key).unwrap_err();
    assert!(err.contains("integrity"), "{err}");

    // The wrong inner key: the inner integrity digest decrypts to garbage (its size field is
    // checked first, so the TPM reports a size or an integrity error).
    let mut wrong_key = inner_key.clone();
    wrong_key[0] ^= 1;
    let err = import_and_load(&tpm, &activation.blob, &wrong_key).unwrap_err();
    assert!(
        err.contains("tpm:parameter") && (err.contains("integrity") || err.contains("size")),
        "{err}"
    );

    // And the untouched blob still imports after all that.
    import_and_load(&tpm, &activation.blob, &inner_key).unwrap();
    assert_eq!(tpm_hmac(&tpm, b"x"), software_hmac(&HMAC_KEY, b"x"));
}

#[test]
fn every_allowed_key_length_imports() {
    let (tpm, ek, srk) = provisioned_tpm();
    for len in [1, 20, 63, tpm_wire::MAX_HMAC_KEY_BYTES] {
        let key: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x3c).collect();
        let activation = build(&ek, &srk, &key);
        let inner_key = activate(&tpm, &activation.blob).unwrap();
        import_and_load(&tpm, &activation.blob, &inner_key)
            .unwrap_or_else(|e| panic!("{len}-byte key: {e}"));
        assert_eq!(
            tpm_hmac(&tpm, b"message"),
            software_hmac(&key, b"message"),
            "{len}-byte key"
        );
    }
}

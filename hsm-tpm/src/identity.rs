//! TPM attestation for DPS: the EK and SRK, identity-key activation, HMAC with the identity key.

use std::fmt;

use hsm_core::{RegistrationId, TpmAttestation};
use tss_esapi::Context;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, EncryptedSecret, IdObject, Private, Public, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::traits::UnMarshall as _;
use zeroize::Zeroizing;

use crate::error::TssError;
use crate::public::marshal_tpm2b;
use crate::tpm::Connection;
use crate::{EkTemplate, Error, PersistentHandle, Tpm, templates};

/// TPM attestation with the endorsement key and storage root key at persistent handles: what
/// DPS calls a TPM enrollment. Implements [`hsm_core::TpmAttestation`].
///
/// Opening it makes sure the EK and SRK exist: a key already persisted at the handle is used as
/// it is (whatever template made it); otherwise the key is created from the template and
/// persisted. The identity key DPS sends is imported with
/// [`activate_identity_key`](Self::activate_identity_key) and used with
/// [`sign_with_identity`](Self::sign_with_identity).
///
/// ```no_run
/// use hsm_tpm::{Tpm, TpmIdentity};
///
/// let tpm = Tpm::open("device:/dev/tpmrm0".parse()?)?;
/// let identity = TpmIdentity::open(&tpm)?;
/// println!("registration id {}", identity.registration_id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TpmIdentity {
    tpm: Tpm,
    handles: Handles,
    ek: Vec<u8>,
    srk: Vec<u8>,
    registration_id: RegistrationId,
}

#[derive(Clone, Copy, Debug)]
struct Handles {
    ek: PersistentHandle,
    srk: PersistentHandle,
    identity: PersistentHandle,
}

/// Options for [`TpmIdentity`]: the EK template and the persistent handles.
#[derive(Clone, Debug)]
#[must_use]
pub struct TpmIdentityBuilder {
    tpm: Tpm,
    ek_template: EkTemplate,
    handles: Handles,
}

impl TpmIdentityBuilder {
    /// The template to create the EK from when none is persisted at the EK handle. Default
    /// [`EkTemplate::TcgL1`].
    pub fn ek_template(mut self, template: EkTemplate) -> Self {
        self.ek_template = template;
        self
    }

    /// Where the EK lives. Default [`PersistentHandle::EK`] (`0x81010001`).
    pub fn ek_handle(mut self, handle: PersistentHandle) -> Self {
        self.handles.ek = handle;
        self
    }

    /// Where the SRK lives. Default [`PersistentHandle::SRK`] (`0x81000001`).
    pub fn srk_handle(mut self, handle: PersistentHandle) -> Self {
        self.handles.srk = handle;
        self
    }

    /// Where the DPS identity key is persisted. Default [`PersistentHandle::IDENTITY`]
    /// (`0x81000100`).
    pub fn identity_handle(mut self, handle: PersistentHandle) -> Self {
        self.handles.identity = handle;
        self
    }

    /// Makes sure the EK and SRK exist (creating and persisting them if not) and reads their
    /// public areas.
    ///
    /// # Errors
    /// [`Error::Tpm`] (for example when owner or endorsement authorisation is not the empty
    /// password), [`Error::Unavailable`].
    pub fn build(self) -> Result<TpmIdentity, Error> {
        let Self {
            tpm,
            ek_template,
            handles,
        } = self;
        let (ek, srk) = tpm.run("read the EK and SRK", move |conn| {
            let ek = ensure_primary(
                conn,
                handles.ek,
                Hierarchy::Endorsement,
                &ek_template.public()?,
                "endorsement key",
            )?;
            let srk = ensure_srk(conn, handles.srk)?;
            Ok((marshal_tpm2b(&ek)?, marshal_tpm2b(&srk)?))
        })?;
        Ok(TpmIdentity {
            registration_id: hsm_core::tpm_registration_id(&ek),
            tpm,
            handles,
            ek,
            srk,
        })
    }
}

impl TpmIdentity {
    /// The EK and SRK at their default handles, the EK from the TCG L-1 template if it has to be
    /// created.
    ///
    /// # Errors
    /// As [`TpmIdentityBuilder::build`].
    pub fn open(tpm: &Tpm) -> Result<Self, Error> {
        Self::builder(tpm).build()
    }

    /// Options: the EK template and the handles.
    pub fn builder(tpm: &Tpm) -> TpmIdentityBuilder {
        TpmIdentityBuilder {
            tpm: tpm.clone(),
            ek_template: EkTemplate::default(),
            handles: Handles {
                ek: PersistentHandle::EK,
                srk: PersistentHandle::SRK,
                identity: PersistentHandle::IDENTITY,
            },
        }
    }

    /// The EK's public key as a DER `SubjectPublicKeyInfo`; `None` for an EK of a kind this
    /// crate cannot express (an ECC EK on another curve than P-256).
    ///
    /// # Errors
    /// [`Error::MalformedPublic`] when the stored EK does not parse.
    pub fn ek_spki(&self) -> Result<Option<Vec<u8>>, Error> {
        let malformed = |_| Error::MalformedPublic { what: "the EK" };
        let buffer =
            tss_esapi::structures::PublicBuffer::unmarshall(&self.ek).map_err(malformed)?;
        let public = tss_esapi::structures::Public::try_from(buffer).map_err(malformed)?;
        Ok(crate::public::signing_key(&public)
            .ok()
            .map(|(_, spki)| spki))
    }

    /// The TPM connection.
    pub fn tpm(&self) -> &Tpm {
        &self.tpm
    }

    /// The EK's public area, a marshaled `TPM2B_PUBLIC` (DPS's `endorsementKey`, base64'd).
    pub fn endorsement_key(&self) -> &[u8] {
        &self.ek
    }

    /// The SRK's public area, a marshaled `TPM2B_PUBLIC` (DPS's `storageRootKey`).
    pub fn storage_root_key(&self) -> &[u8] {
        &self.srk
    }

    /// The registration id: lowercase base32 of SHA-256 of the marshaled EK.
    pub fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    /// The handle of the EK.
    pub fn ek_handle(&self) -> PersistentHandle {
        self.handles.ek
    }

    /// The handle of the SRK.
    pub fn srk_handle(&self) -> PersistentHandle {
        self.handles.srk
    }

    /// The handle the identity key is persisted at.
    pub fn identity_handle(&self) -> PersistentHandle {
        self.handles.identity
    }

    /// Imports the DPS identity key from its activation blob and persists it at the identity
    /// handle: see [`import_hmac_key`](Self::import_hmac_key).
    ///
    /// # Errors
    /// As [`import_hmac_key`](Self::import_hmac_key).
    pub fn activate_identity_key(&self, blob: &[u8]) -> Result<(), Error> {
        self.import_hmac_key(blob, self.handles.identity)
            .map(|_| ())
    }

    /// Imports the HMAC key in an activation blob (the identity key of DPS's TPM challenge, or
    /// the IoT Hub device key in `registrationState.tpm.authenticationKey`) and persists it at
    /// `handle`:
    ///
    /// 1. the blob is parsed (`tpm_wire::ActivationBlob`);
    /// 2. `TPM2_ActivateCredential` recovers the inner wrapping key (the SRK is the credentialed
    ///    object; the EK is authorised by a `PolicySecret(TPM_RH_ENDORSEMENT)` session);
    /// 3. `TPM2_Import` under the SRK with that key as `encryptionKey` and AES-128-CFB;
    /// 4. `TPM2_Load`;
    /// 5. only then is any object at `handle` evicted, and the new key persisted there.
    ///
    /// A bad blob therefore leaves the previous key at `handle` working. Transient objects and
    /// the policy session are flushed whatever happens; the inner key is zeroized.
    ///
    /// # Errors
    /// [`Error::MalformedBlob`] for a truncated or inconsistent blob; [`Error::BlobRejected`]
    /// when the TPM refuses it (made for another TPM, corrupted integrity HMAC);
    /// [`Error::Tpm`], [`Error::Unavailable`].
    pub fn import_hmac_key(
        &self,
        blob: &[u8],
        handle: PersistentHandle,
    ) -> Result<TpmHmacKey, Error> {
        let blob = tpm_wire::ActivationBlob::parse(blob).map_err(Error::MalformedBlob)?;
        blob.public_area().map_err(Error::MalformedBlob)?;
        let handles = self.handles;
        self.tpm.run("import an HMAC key", move |conn| {
            import(conn, &blob, handles.ek, handles.srk, handle)
        })?;
        Ok(TpmHmacKey {
            tpm: self.tpm.clone(),
            handle,
        })
    }

    /// The identity key at the identity handle (whether or not one is imported yet).
    pub fn identity_key(&self) -> TpmHmacKey {
        TpmHmacKey {
            tpm: self.tpm.clone(),
            handle: self.handles.identity,
        }
    }

    /// HMAC-SHA256 of `data` with the identity key, computed in the TPM (an HMAC sequence for
    /// inputs longer than the TPM's input buffer).
    ///
    /// # Errors
    /// [`Error::NotFound`] before an identity key was imported; [`Error::Tpm`],
    /// [`Error::Unavailable`].
    pub fn sign_with_identity(&self, data: &[u8]) -> Result<[u8; 32], Error> {
        self.tpm.hmac_sha256(self.handles.identity, data)
    }
}

impl fmt::Debug for TpmIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmIdentity")
            .field("tpm", &self.tpm)
            .field("registration_id", &self.registration_id.as_str())
            .field("ek_handle", &self.handles.ek)
            .field("srk_handle", &self.handles.srk)
            .field("identity_handle", &self.handles.identity)
            .finish()
    }
}

impl TpmAttestation for TpmIdentity {
    fn registration_id(&self) -> Result<RegistrationId, hsm_core::Error> {
        Ok(self.registration_id.clone())
    }

    fn endorsement_key(&self) -> Result<Vec<u8>, hsm_core::Error> {
        Ok(self.ek.clone())
    }

    fn storage_root_key(&self) -> Result<Vec<u8>, hsm_core::Error> {
        Ok(self.srk.clone())
    }

    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), hsm_core::Error> {
        TpmIdentity::activate_identity_key(self, blob)
            .map_err(|e| hsm_core::Error::device("activate the TPM identity key", e))
    }

    fn sign_with_identity(&self, data: &[u8]) -> Result<[u8; 32], hsm_core::Error> {
        TpmIdentity::sign_with_identity(self, data)
            .map_err(|e| hsm_core::Error::device("HMAC with the TPM identity key", e))
    }
}

/// An HMAC-SHA256 key persisted in the TPM (the DPS identity key, the IoT Hub device key).
#[derive(Clone)]
pub struct TpmHmacKey {
    tpm: Tpm,
    handle: PersistentHandle,
}

impl TpmHmacKey {
    /// The key persisted at `handle` on `tpm` (not checked until used).
    pub fn new(tpm: &Tpm, handle: PersistentHandle) -> Self {
        Self {
            tpm: tpm.clone(),
            handle,
        }
    }

    /// Where the key is persisted.
    pub fn handle(&self) -> PersistentHandle {
        self.handle
    }

    /// HMAC-SHA256 of `data`, computed in the TPM.
    ///
    /// # Errors
    /// As [`Tpm::hmac_sha256`].
    pub fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], Error> {
        self.tpm.hmac_sha256(self.handle, data)
    }
}

impl fmt::Debug for TpmHmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmHmacKey")
            .field("tpm", &self.tpm)
            .field("handle", &self.handle)
            .finish()
    }
}

/// The public area of the primary key at `handle`, created from `template` in `hierarchy` and
/// persisted there first if the handle is empty.
pub(crate) fn ensure_primary(
    conn: &mut Connection,
    handle: PersistentHandle,
    hierarchy: Hierarchy,
    template: &Public,
    what: &'static str,
) -> Result<Public, Error> {
    if conn.exists(handle)? {
        return read_persistent(conn, handle, what);
    }
    log::info!("creating the {what} at {handle}");
    let created = conn
        .context()?
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(hierarchy, template.clone(), None, None, None, None)
        })
        .map_err(Error::tpm(what, "TPM2_CreatePrimary"))?;
    let transient = ObjectHandle::from(created.key_handle);
    let persisted = persist(conn, transient, handle, what);
    flush(conn.context()?, transient);
    if let Err(error) = persisted {
        // Another process (through a broker) persisted it between our look and our
        // EvictControl: the same primary (same template, same seed) is there now.
        if conn.exists(handle)? {
            log::info!("the {what} at {handle} was persisted by another process meanwhile");
            return read_persistent(conn, handle, what);
        }
        return Err(error);
    }
    Ok(created.out_public)
}

/// The public area of the persistent object at `handle`.
fn read_persistent(
    conn: &mut Connection,
    handle: PersistentHandle,
    what: &'static str,
) -> Result<Public, Error> {
    let object = conn.object(handle, what)?;
    let (public, _, _) = conn
        .context()?
        .read_public(object.into())
        .map_err(Error::tpm(what, "TPM2_ReadPublic"))?;
    Ok(public)
}

/// The SRK at `handle`, created with the standard template if missing.
pub(crate) fn ensure_srk(conn: &mut Connection, handle: PersistentHandle) -> Result<Public, Error> {
    ensure_primary(
        conn,
        handle,
        Hierarchy::Owner,
        &templates::srk()?,
        "storage root key",
    )
}

/// Persists the loaded object `transient` at `handle` (owner authorisation).
pub(crate) fn persist(
    conn: &mut Connection,
    transient: ObjectHandle,
    handle: PersistentHandle,
    what: &'static str,
) -> Result<(), Error> {
    let persistent = handle.persistent()?;
    let object = conn
        .context()?
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(Provision::Owner, transient, persistent)
        })
        .map_err(Error::tpm(what, "TPM2_EvictControl"))?;
    conn.remember(handle, object);
    Ok(())
}

/// Flushes a transient object or session; a failure only leaves it for the connection's end.
pub(crate) fn flush(context: &mut Context, object: ObjectHandle) {
    if let Err(e) = context.flush_context(object) {
        log::debug!("TPM2_FlushContext failed: {e}");
    }
}

fn import(
    conn: &mut Connection,
    blob: &tpm_wire::ActivationBlob,
    ek: PersistentHandle,
    srk: PersistentHandle,
    target: PersistentHandle,
) -> Result<(), Error> {
    // tss-esapi's size limits are the TPM's; the blob parser enforced tpm-wire's, which are
    // the same or smaller.
    let part = |what: &'static str| {
        move |source: tss_esapi::Error| Error::BlobRejected {
            command: what,
            source: source.into(),
        }
    };
    let credential =
        IdObject::try_from(blob.credential_blob.clone()).map_err(part("TPM2B_ID_OBJECT"))?;
    let ek_seed = EncryptedSecret::try_from(blob.ek_encrypted_seed.clone())
        .map_err(part("TPM2B_ENCRYPTED_SECRET"))?;
    let duplicate = Private::try_from(blob.duplicate.clone()).map_err(part("TPM2B_PRIVATE"))?;
    let srk_seed = EncryptedSecret::try_from(blob.srk_encrypted_seed.clone())
        .map_err(part("TPM2B_ENCRYPTED_SECRET"))?;
    let public = Public::unmarshall(&blob.public).map_err(part("TPM2B_PUBLIC"))?;

    let ek_object = KeyHandle::from(conn.object(ek, "endorsement key")?);
    let srk_object = KeyHandle::from(conn.object(srk, "storage root key")?);
    let ctx = conn.context()?;

    let inner_key = activate_credential(ctx, srk_object, ek_object, credential, ek_seed)?;
    let encryption_key = Data::try_from(inner_key.as_slice()).map_err(Error::tpm(
        "import an HMAC key",
        "TPM2_Import (encryptionKey)",
    ))?;
    drop(inner_key);
    let private = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.import(
                srk_object.into(),
                Some(encryption_key),
                public.clone(),
                duplicate,
                srk_seed,
                SymmetricDefinitionObject::AES_128_CFB,
            )
        })
        .map_err(rejected("TPM2_Import"))?;
    let loaded = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk_object, private, public)
        })
        .map_err(rejected("TPM2_Load"))?;
    let loaded = ObjectHandle::from(loaded);

    // The new key loaded: only now replace the old one.
    let replaced = (|| {
        if conn.exists(target)? {
            conn.evict(target, "replace the key at the identity handle")?;
        }
        persist(conn, loaded, target, "persist the imported HMAC key")
    })();
    flush(conn.context()?, loaded);
    replaced
}

/// `TPM2_ActivateCredential` with the SRK as the credentialed object and the EK authorised by
/// `PolicySecret(TPM_RH_ENDORSEMENT)`; the policy session is flushed afterwards.
fn activate_credential(
    ctx: &mut Context,
    srk: KeyHandle,
    ek: KeyHandle,
    credential: IdObject,
    seed: EncryptedSecret,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let operation = "activate the credential";
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(Error::tpm(operation, "TPM2_StartAuthSession"))?
        .ok_or(Error::UnexpectedOutput("no policy session handle"))?;
    let result = (|| {
        let policy = PolicySession::try_from(session)
            .map_err(Error::tpm(operation, "TPM2_StartAuthSession"))?;
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.policy_secret(
                policy,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .map_err(Error::tpm(operation, "TPM2_PolicySecret"))?;
        ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
            ctx.activate_credential(srk, ek, credential, seed)
        })
        .map_err(rejected("TPM2_ActivateCredential"))
    })();
    flush(ctx, SessionHandle::from(session).into());
    // Digest keeps its bytes in a Zeroizing buffer; so does the copy.
    result.map(|digest| Zeroizing::new(digest.value().to_vec()))
}

/// A TPM refusal of the blob's contents, or a transport failure (kept as [`Error::Tpm`] so the
/// call is retried on a new connection).
fn rejected(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> Error {
    move |source| {
        let source = TssError::from(source);
        if source.is_transport() {
            Error::Tpm {
                operation: "import an HMAC key",
                command,
                source,
            }
        } else {
            Error::BlobRejected { command, source }
        }
    }
}

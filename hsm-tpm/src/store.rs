//! [`TpmKeyStore`]: hsm-tpm's [`KeyStore`], signing keys created in the TPM under the SRK and
//! persisted at handles from a configurable range; a small index in a folder says which label
//! is at which handle and keeps each key's certificate chain.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hsm_core::key_store::check_chain;
use hsm_core::{
    CertificateDer, Error as CoreError, KeyAlgorithm, KeyHandle, KeyLabel, KeyStore, StoredKey,
};
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};

use crate::{Error, KeySpec, PersistentHandle, Tpm, TpmKey};

/// The handles [`TpmKeyStore`] uses unless told otherwise: `0x81000200..=0x8100020F`, clear of
/// the EK, the SRK, the DPS identity key and the device key.
pub const DEFAULT_KEY_HANDLES: RangeInclusive<u32> = 0x8100_0200..=0x8100_020F;

/// Signing keys made inside the TPM, found again by label: the TPM's [`KeyStore`].
///
/// [`generate`](KeyStore::generate) creates a key under the SRK (`fixedTPM`, `fixedParent`,
/// `sensitiveDataOrigin`: it can never leave this TPM) and persists it at the first free handle
/// of the store's range. The folder holds, per label, `{label}.tpm` (the handle and the
/// SHA-256 of the key's public key, so that a key another program put at that handle is never
/// taken for ours) and `{label}.chain.pem`. Files are replaced atomically (temporary file,
/// flush, rename, folder flushed).
///
/// The index entry is written before the key is created, so a process killed in between
/// leaves an entry whose handle is empty or holds a key not yet recorded: the store adopts
/// that key on the next [`find`](KeyStore::find) and never hands the handle to another label.
#[derive(Debug)]
pub struct TpmKeyStore {
    tpm: Tpm,
    folder: PathBuf,
    handles: RangeInclusive<u32>,
    srk: PersistentHandle,
    /// Serialises generation in this process (choosing a free handle, then creating there).
    generating: Mutex<()>,
}

impl TpmKeyStore {
    /// A store on `tpm` keeping its index in `folder` (created, mode 0700, when missing), using
    /// handles [`DEFAULT_KEY_HANDLES`].
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be made.
    pub fn open(tpm: &Tpm, folder: impl Into<PathBuf>) -> Result<Self, Error> {
        let folder = folder.into();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&folder).map_err(|source| Error::Io {
            operation: "create the key index folder",
            path: folder.clone(),
            source,
        })?;
        Ok(Self {
            tpm: tpm.clone(),
            folder,
            handles: DEFAULT_KEY_HANDLES,
            srk: PersistentHandle::SRK,
            generating: Mutex::new(()),
        })
    }

    /// The persistent handles new keys may take (each must be in `0x81000000..=0x81FFFFFF`).
    ///
    /// # Errors
    /// [`Error::NotPersistent`] when the range leaves the persistent range or is empty.
    pub fn handles(mut self, handles: RangeInclusive<u32>) -> Result<Self, Error> {
        PersistentHandle::new(*handles.start())?;
        PersistentHandle::new(*handles.end())?;
        if handles.is_empty() {
            return Err(Error::NotPersistent {
                value: *handles.start(),
            });
        }
        self.handles = handles;
        Ok(self)
    }

    /// The storage key new keys are created under (default [`PersistentHandle::SRK`], created
    /// there with the standard template when missing).
    pub fn parent(mut self, srk: PersistentHandle) -> Self {
        self.srk = srk;
        self
    }

    /// The index folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn index_path(&self, label: &KeyLabel) -> PathBuf {
        self.folder.join(format!("{label}.tpm"))
    }

    fn chain_path(&self, label: &KeyLabel) -> PathBuf {
        self.folder.join(format!("{label}.chain.pem"))
    }

    /// Every handle an index entry names (a key or a key being made).
    fn claimed(&self) -> Result<Vec<PersistentHandle>, Error> {
        let mut claimed = Vec::new();
        let entries = fs::read_dir(&self.folder).map_err(|source| Error::Io {
            operation: "list the key index",
            path: self.folder.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tpm")
                && let Ok(Some(index)) = read_index(&path)
            {
                claimed.push(index.handle);
            }
        }
        Ok(claimed)
    }

    fn generate_key(&self, label: &KeyLabel, spec: KeySpec) -> Result<TpmKey, CoreError> {
        let _one_at_a_time = self.generating.lock().unwrap_or_else(|e| e.into_inner());
        let index_path = self.index_path(label);
        if read_index(&index_path).map_err(device)?.is_some() {
            return Err(CoreError::KeyExists {
                label: label.to_string(),
            });
        }
        let in_use = self.tpm.persistent_handles().map_err(device)?;
        let claimed = self.claimed().map_err(device)?;
        let handle = self
            .handles
            .clone()
            .filter_map(|h| PersistentHandle::new(h).ok())
            .find(|h| !in_use.contains(h) && !claimed.contains(h))
            .ok_or_else(|| {
                device(Error::NoFreeHandle {
                    first: *self.handles.start(),
                    last: *self.handles.end(),
                })
            })?;
        // Claimed before the key exists: a crash after the create leaves the key findable.
        self.write(&index_path, &Index { handle, spki: None }.text())?;
        let key = match TpmKey::create_under(&self.tpm, self.srk, spec, handle) {
            Ok(key) => key,
            Err(e) => {
                let _ = fs::remove_file(&index_path);
                return Err(device(e));
            }
        };
        let index = Index {
            handle,
            spki: Some(sha256(key.public_key_der())),
        };
        self.write(&index_path, &index.text())?;
        Ok(key)
    }

    fn write(&self, path: &Path, contents: &str) -> Result<(), CoreError> {
        let failed = |source| {
            device(Error::Io {
                operation: "write the key index",
                path: path.to_owned(),
                source,
            })
        };
        let mut file = tempfile::NamedTempFile::new_in(&self.folder).map_err(failed)?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.as_file().sync_all())
            .map_err(failed)?;
        file.persist(path).map_err(|e| failed(e.error))?;
        sync_folder(&self.folder);
        Ok(())
    }
}

impl KeyStore for TpmKeyStore {
    fn generate(
        &self,
        label: &KeyLabel,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn KeyHandle>, CoreError> {
        let spec = match algorithm {
            KeyAlgorithm::EcdsaP256 => KeySpec::EcdsaP256,
            KeyAlgorithm::Rsa { bits: 2048 } => KeySpec::Rsa2048,
            _ => return Err(CoreError::CannotGenerate { algorithm }),
        };
        Ok(Arc::new(self.generate_key(label, spec)?))
    }

    fn find(&self, label: &KeyLabel) -> Result<Option<StoredKey>, CoreError> {
        let index_path = self.index_path(label);
        let Some(index) = read_index(&index_path).map_err(device)? else {
            return Ok(None);
        };
        let key = match TpmKey::open(&self.tpm, index.handle) {
            Ok(key) => key,
            // Claimed, never created (the process stopped in between): nothing to find.
            Err(Error::NotFound { .. }) if index.spki.is_none() => return Ok(None),
            Err(e) => return Err(device(e)),
        };
        let spki = sha256(key.public_key_der());
        match &index.spki {
            Some(recorded) if *recorded != spki => {
                return Err(device(Error::UnsuitableKey {
                    handle: index.handle,
                    reason: format!(
                        "it holds another key than the one labelled {label} (was it replaced?)"
                    ),
                }));
            }
            Some(_) => {}
            // Created, not yet recorded: adopt it.
            None => self.write(
                &index_path,
                &Index {
                    handle: index.handle,
                    spki: Some(spki),
                }
                .text(),
            )?,
        }
        let chain_path = self.chain_path(label);
        let chain = match read_small(&chain_path) {
            Ok(pem) => CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    device(Error::Io {
                        operation: "read a stored chain",
                        path: chain_path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(device(Error::Io {
                    operation: "read a stored chain",
                    path: chain_path,
                    source,
                }));
            }
        };
        Ok(Some(StoredKey {
            label: label.clone(),
            key: Arc::new(key),
            chain,
        }))
    }

    fn store_chain(
        &self,
        label: &KeyLabel,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), CoreError> {
        let stored = self.find(label)?.ok_or_else(|| CoreError::NoSuchKey {
            label: label.to_string(),
        })?;
        check_chain(stored.key.as_ref(), chain)?;
        self.write(&self.chain_path(label), &hsm_core::pem::chain(chain))
    }

    fn delete(&self, label: &KeyLabel) -> Result<bool, CoreError> {
        let index_path = self.index_path(label);
        let Some(index) = read_index(&index_path).map_err(device)? else {
            return Ok(false);
        };
        // Evict only what is ours: the key whose public key the index recorded.
        let ours = match TpmKey::open(&self.tpm, index.handle) {
            Ok(key) => index
                .spki
                .as_ref()
                .is_none_or(|recorded| *recorded == sha256(key.public_key_der())),
            Err(Error::NotFound { .. }) => false,
            Err(e) => return Err(device(e)),
        };
        if ours {
            self.tpm.evict(index.handle).map_err(device)?;
        }
        for path in [self.chain_path(label), index_path] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(device(Error::Io {
                        operation: "delete a key index entry",
                        path,
                        source,
                    }));
                }
            }
        }
        sync_folder(&self.folder);
        Ok(true)
    }
}

/// One label's index entry: `handle=0x81000200` and, once the key exists,
/// `spki-sha256={hex}`.
struct Index {
    handle: PersistentHandle,
    spki: Option<String>,
}

impl Index {
    fn text(&self) -> String {
        let mut text = format!("handle={}\n", self.handle);
        if let Some(spki) = &self.spki {
            text.push_str(&format!("spki-sha256={spki}\n"));
        }
        text
    }
}

/// Reads an index entry; `None` when there is none.
fn read_index(path: &Path) -> Result<Option<Index>, Error> {
    let bytes = match read_small(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                operation: "read the key index",
                path: path.to_owned(),
                source,
            });
        }
    };
    let malformed = || Error::Io {
        operation: "read the key index",
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a key index entry (handle=0x81...)",
        ),
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let mut handle = None;
    let mut spki = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("handle", value)) => handle = Some(value.parse().map_err(|_| malformed())?),
            Some(("spki-sha256", value))
                if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                spki = Some(value.to_owned());
            }
            _ => return Err(malformed()),
        }
    }
    Ok(Some(Index {
        handle: handle.ok_or_else(malformed)?,
        spki,
    }))
}

fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    const MAX: u64 = 1024 * 1024;
    let mut bytes = Vec::new();
    File::open(path)?.take(MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is larger than 1 MiB",
        ));
    }
    Ok(bytes)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn device(e: Error) -> CoreError {
    CoreError::device("TPM key store", e)
}

fn sync_folder(folder: &Path) {
    if let Ok(folder) = File::open(folder) {
        let _ = folder.sync_all();
    }
}

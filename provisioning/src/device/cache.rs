//! The assignment cache: what a device needs to reach its hub without asking DPS, in one JSON
//! file written atomically (a temporary file in the same folder, flushed, renamed over the
//! old one, the folder flushed; mode 0600) and read back with strict checks. It holds no
//! secret: names, public certificates, key labels and an identity fingerprint.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::Decode as _;
use hsm_core::{CertificateDer, KeyLabel, RegistrationId};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::endpoint::Endpoint;

/// The format version this client writes and reads.
const VERSION: u32 = 1;
/// The largest cache file read (a few certificates make a few KiB).
const MAX_FILE: u64 = 256 * 1024;
/// The longest device id IoT Hub takes.
const MAX_DEVICE_ID: usize = 128;

/// What the device knows of its assignment, as the cache keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct CachedAssignment {
    /// The format version (1).
    pub version: u32,
    /// `sha256:` and the hex SHA-256 of the DPS endpoint, ID scope, registration id and the
    /// attestation's fingerprint (never a secret): a cache written for another identity is
    /// not used.
    pub identity: String,
    /// The registration id.
    pub registration_id: String,
    /// The hub (`host` or `host:port`).
    pub assigned_hub: String,
    /// The device id on that hub.
    pub device_id: String,
    /// DPS's substatus at the registration that wrote it.
    #[serde(default)]
    pub substatus: Option<String>,
    /// How the device authenticates to the hub.
    pub credential: CredentialKind,
    /// The certificate DPS or the hub issued and the label of its key, for
    /// [`CredentialKind::Issued`].
    #[serde(default)]
    pub key: Option<IssuedKey>,
    /// A renewal under way: the new key's label, and its chain once issued. Until it has
    /// connected once, [`key`](Self::key) stays the credential.
    #[serde(default)]
    pub pending: Option<IssuedKey>,
    /// Keys replaced by a renewal, to delete (a deletion a restart interrupted).
    #[serde(default)]
    pub retired: Vec<String>,
    /// When DPS assigned the device (seconds since the Unix epoch, the service's time).
    pub registered_at: u64,
}

/// How a cached device authenticates to its hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum CredentialKind {
    /// With its attestation: the X.509 certificate, or SAS tokens signed by its symmetric key
    /// or the TPM's hub key.
    Attestation,
    /// With a certificate issued for a key in its key store.
    Issued,
}

/// An issued certificate and its key, by label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct IssuedKey {
    /// The key's label in the key store.
    pub label: String,
    /// The chain, base64 DER, leaf first (empty while a renewal waits for it).
    #[serde(default)]
    pub chain: Vec<String>,
    /// When to renew it (seconds since the Unix epoch): a fraction of its lifetime, with
    /// jitter, chosen once.
    #[serde(default)]
    pub renew_at: Option<u64>,
    /// When it expires (seconds since the Unix epoch).
    #[serde(default)]
    pub not_after: Option<u64>,
}

impl IssuedKey {
    /// The key's label.
    pub(crate) fn key_label(&self) -> Result<KeyLabel, String> {
        KeyLabel::new(self.label.as_str()).map_err(|e| e.to_string())
    }

    /// The chain, decoded.
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        self.chain
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let der = BASE64
                    .decode(text)
                    .map_err(|_| format!("certificate {i} is not base64"))?;
                x509_cert::Certificate::from_der(&der)
                    .map_err(|_| format!("certificate {i} is not a DER X.509 certificate"))?;
                Ok(CertificateDer::from(der))
            })
            .collect()
    }

    /// An entry for a key and its chain.
    pub(crate) fn new(
        label: &KeyLabel,
        chain: &[CertificateDer<'_>],
        renew_at: Option<u64>,
        not_after: Option<u64>,
    ) -> Self {
        Self {
            label: label.to_string(),
            chain: chain.iter().map(|c| BASE64.encode(c)).collect(),
            renew_at,
            not_after,
        }
    }
}

impl CachedAssignment {
    /// Checks what a file said: every name valid, every label a key label, every chain
    /// decodable.
    fn check(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "format version {} (this client reads {VERSION})",
                self.version
            ));
        }
        let hex = self.identity.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the identity is not sha256:<64 hex digits>".into());
        }
        RegistrationId::new(self.registration_id.as_str()).map_err(|e| e.to_string())?;
        Endpoint::parse_named("hub name", &self.assigned_hub, 8883).map_err(|e| e.to_string())?;
        if self.device_id.is_empty()
            || self.device_id.len() > MAX_DEVICE_ID
            || self.device_id.chars().any(char::is_control)
        {
            return Err("the device id is empty, too long or has control characters".into());
        }
        match (self.credential, &self.key) {
            (CredentialKind::Issued, None) => {
                return Err("an issued credential without its key".into());
            }
            (CredentialKind::Attestation, Some(_)) => {
                return Err("an attestation credential with an issued key".into());
            }
            _ => {}
        }
        if let Some(key) = &self.key {
            key.key_label()?;
            if key.certificates()?.is_empty() {
                return Err("the issued key has no certificate".into());
            }
        }
        if let Some(pending) = &self.pending {
            pending.key_label()?;
            pending.certificates()?;
        }
        for label in &self.retired {
            KeyLabel::new(label.as_str()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Parses and checks a cache file's contents; `Err` says why it is not a valid cache.
pub(crate) fn parse(bytes: &[u8]) -> Result<CachedAssignment, String> {
    // serde's message names the field and position, never a value worth hiding: the cache
    // holds no secret.
    let cached: CachedAssignment =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not a valid cache ({e})"))?;
    cached
        .check()
        .map_err(|reason| format!("it is not a valid cache: {reason}"))?;
    Ok(cached)
}

/// The cache file.
#[derive(Clone, Debug)]
pub(crate) struct CacheFile {
    path: PathBuf,
}

impl CacheFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks the cache; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`Error::Cache`] when it cannot be read or is not a valid cache (truncated, corrupt,
    /// another format version).
    pub(crate) fn load(&self) -> Result<Option<CachedAssignment>, Error> {
        let failed = |reason: String| Error::Cache {
            path: self.path.clone(),
            reason,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(format!("cannot read it: {e}"))),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| failed(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(failed(format!("it is larger than {} KiB", MAX_FILE / 1024)));
        }
        parse(&bytes).map(Some).map_err(failed)
    }

    /// Replaces the cache atomically, mode 0600. The folder is created (0700) if missing.
    ///
    /// # Errors
    /// [`Error::Cache`] when it cannot be written; the old cache is then unchanged.
    pub(crate) fn save(&self, cached: &CachedAssignment) -> Result<(), Error> {
        let failed = |e: std::io::Error| Error::Cache {
            path: self.path.clone(),
            reason: format!("cannot write it: {e}"),
        };
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&folder).map_err(failed)?;
        let text =
            serde_json::to_vec_pretty(cached).map_err(|e| failed(std::io::Error::other(e)))?;
        // tempfile creates its files 0600.
        let mut file = tempfile::NamedTempFile::new_in(&folder).map_err(failed)?;
        file.write_all(&text)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.as_file().sync_all())
            .map_err(failed)?;
        file.persist(&self.path).map_err(|e| failed(e.error))?;
        if let Ok(folder) = File::open(&folder) {
            let _ = folder.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> CachedAssignment {
        CachedAssignment {
            version: 1,
            identity: format!("sha256:{}", "ab".repeat(32)),
            registration_id: "dev-1".into(),
            assigned_hub: "hub-1.example.net".into(),
            device_id: "dev-1".into(),
            substatus: Some("initialAssignment".into()),
            credential: CredentialKind::Attestation,
            key: None,
            pending: None,
            retired: Vec::new(),
            registered_at: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip_and_strict_reading() {
        let dir = tempfile::tempdir().unwrap();
        let file = CacheFile::new(dir.path().join("state/assignment.json"));
        assert_eq!(file.load().unwrap(), None);
        file.save(&sample()).unwrap();
        assert_eq!(file.load().unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(file.path()).unwrap();
        let broken = |contents: &str| {
            std::fs::write(file.path(), contents).unwrap();
            match file.load() {
                Err(Error::Cache { reason, .. }) => reason,
                other => panic!("{contents:?}: expected Error::Cache, got {other:?}"),
            }
        };
        // Truncated, empty, not JSON, unknown fields, bad names, another version.
        assert!(broken(&text[..text.len() / 2]).contains("not a valid cache"));
        assert!(broken("").contains("not a valid cache"));
        assert!(broken("\u{0}\u{1}binary").contains("not a valid cache"));
        assert!(
            broken(&text.replace("\"version\": 1", "\"version\": 1, \"x\": 2"))
                .contains("unknown field")
        );
        assert!(
            broken(&text.replace("\"version\": 1", "\"version\": 9")).contains("format version 9")
        );
        assert!(broken(&text.replace("hub-1.example.net", "hub one")).contains("hub name"));
        assert!(broken(&text.replace("\"dev-1\"", "\"dev 1!\"")).contains("registration id"));
        assert!(broken(&text.replace(&"ab".repeat(32), "zz")).contains("identity"));
        assert!(broken(&text.replace("\"attestation\"", "\"issued\"")).contains("without its key"));
        let mut issued = sample();
        issued.credential = CredentialKind::Issued;
        issued.key = Some(IssuedKey {
            label: "bad/label".into(),
            chain: vec!["AAAA".into()],
            renew_at: None,
            not_after: None,
        });
        std::fs::write(file.path(), serde_json::to_vec(&issued).unwrap()).unwrap();
        assert!(matches!(file.load(), Err(Error::Cache { .. })));
        // A cache larger than the cap is refused before it is parsed.
        std::fs::write(file.path(), vec![b' '; 300 * 1024]).unwrap();
        assert!(
            matches!(file.load(), Err(Error::Cache { reason, .. }) if reason.contains("larger"))
        );
    }
}

//! Small helpers: secrets from arguments and files, hex, PEM, files, durations.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use data_encoding::HEXLOWER_PERMISSIVE;
use hsm_core::{CertificateDer, SecretBytes, SecretString};
use zeroize::Zeroizing;

use crate::Error;

/// A secret given as an argument or environment variable (a key, a seed): zeroized on drop,
/// `[redacted]` in `Debug`. Clap clones argument values, hence the `Arc`.
#[derive(Clone)]
pub(crate) struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    /// The text.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// As hsm-core's secret string.
    pub(crate) fn to_secret_string(&self) -> SecretString {
        SecretString::new(self.expose().to_owned())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(Arc::new(Zeroizing::new(text.to_owned()))))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Decodes hex (either case, surrounding whitespace ignored).
pub(crate) fn hex_decode(what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Error::usage(format!("the {what} is not valid hex")))
}

/// Decodes hex that must be `len` bytes long.
pub(crate) fn hex_exact(what: &str, text: &str, len: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bytes = hex_decode(what, text)?;
    if bytes.len() != len {
        return Err(Error::usage(format!(
            "the {what} must be {len} bytes ({} hex digits), got {} bytes",
            len * 2,
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Lowercase hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The largest input file the tool reads (a config file, a payload, a certificate, a key).
pub(crate) const MAX_INPUT: u64 = 1024 * 1024;

/// Reads a file of at most [`MAX_INPUT`] bytes (`--config /dev/zero` stops there).
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let failed = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {} KiB", MAX_INPUT / 1024),
        )));
    }
    Ok(bytes)
}

/// How a secret file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretFormat {
    /// Hex text.
    Hex,
    /// The raw bytes.
    Raw,
}

impl std::fmt::Display for SecretFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hex => "hex text",
            Self::Raw => "raw bytes",
        })
    }
}

/// Reads a secret of exactly `len` bytes from a file: `2 * len` hex digits (surrounding white
/// space ignored), or exactly `len` raw bytes. Anything else is refused, saying what the file
/// holds instead.
pub(crate) fn read_secret(
    what: &str,
    path: &Path,
    len: usize,
) -> Result<(SecretBytes, SecretFormat), Error> {
    let raw = Zeroizing::new(read(path)?);
    let text = std::str::from_utf8(&raw).ok().map(str::trim);
    if let Some(text) = text.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        if text.len() != 2 * len {
            return Err(Error::usage(format!(
                "the {what} file {} holds {} hex digits: a {what} is {len} bytes, {} hex digits \
                 or {len} raw bytes",
                path.display(),
                text.len(),
                2 * len
            )));
        }
        let bytes = hex_decode(what, text)?;
        return Ok((SecretBytes::copy_from(&bytes), SecretFormat::Hex));
    }
    if raw.len() != len {
        return Err(Error::usage(format!(
            "the {what} file {} holds {} bytes that are not hex: a {what} is {len} bytes, {} \
             hex digits or {len} raw bytes",
            path.display(),
            raw.len(),
            2 * len
        )));
    }
    Ok((SecretBytes::copy_from(&raw), SecretFormat::Raw))
}

/// Writes a file atomically: a temporary file next to it, renamed over it (so a symlink at
/// `path` is replaced, never followed).
pub(crate) fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    stage(path, contents)?.commit()
}

/// A file written next to its destination and not yet in place: [`commit`](Self::commit) moves
/// it there, dropping it removes it.
pub(crate) struct Staged {
    temporary: std::path::PathBuf,
    destination: std::path::PathBuf,
}

/// Writes `contents` to a temporary file in `path`'s folder (which fails early when the folder
/// is not writable), to be moved to `path` with [`Staged::commit`].
pub(crate) fn stage(path: &Path, contents: &[u8]) -> Result<Staged, Error> {
    use std::io::Write as _;
    let failed = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    if path.is_dir() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        )));
    }
    let name = path.file_name().ok_or_else(|| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let mut temporary = path.with_file_name(".");
    temporary.as_mut_os_string().push(name);
    temporary
        .as_mut_os_string()
        .push(format!(".{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let mut file = options.open(&temporary).map_err(failed)?;
    let staged = Staged {
        temporary,
        destination: path.to_owned(),
    };
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(staged)
}

impl Staged {
    /// Moves the file into place.
    pub(crate) fn commit(self) -> Result<(), Error> {
        std::fs::rename(&self.temporary, &self.destination).map_err(|source| Error::Write {
            path: self.destination.clone(),
            source,
        })
        // On success the temporary name no longer exists, so the drop below removes nothing.
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Writes a file only its owner can read (a secret seed), refusing to replace an existing one.
pub(crate) fn write_secret(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let failed = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(contents).map_err(failed)
}

/// PEM text of DER bytes with a label (`CERTIFICATE`, `PUBLIC KEY`, ...).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    hsm_core::pem::encode(label, der)
}

/// PEM text of a certificate chain, in order.
pub(crate) fn chain_pem(chain: &[CertificateDer<'_>]) -> String {
    hsm_core::pem::chain(chain)
}

/// Loads certificates (PEM or DER) from a file.
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certificates = hsm_x509::load_certificates(&bytes).map_err(|source| Error::X509 {
        operation: "cannot load certificates",
        source,
    })?;
    if certificates.is_empty() {
        return Err(Error::usage(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

/// Parses a duration: `90` (seconds), `90s`, `500ms`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| {
        format!(
            "invalid duration {} (expected e.g. 30, 30s, 500ms, 2m)",
            hsm_core::untrusted::quoted(text)
        )
    })?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => {
            return Err(format!(
                "invalid duration unit in {} (use ms, s or m)",
                hsm_core::untrusted::quoted(text)
            ));
        }
    };
    if duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn hex_and_pem() {
        assert_eq!(*hex_exact("x", "0x0A0b", 2).unwrap(), [10, 11]);
        assert!(hex_exact("x", "0a", 2).is_err());
        assert!(hex_decode("x", "zz").is_err());
        let text = pem("PUBLIC KEY", &[0u8; 60]);
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn secrets_are_redacted() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }
}

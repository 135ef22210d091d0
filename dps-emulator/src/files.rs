//! Files the emulator reads and writes: every read is capped, every write atomic (a temporary
//! file in the same folder, fsync'd, renamed over the target, the folder fsync'd), with an
//! explicit mode, and never through a symlink (a rename replaces the link, it does not follow
//! it).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::Error;

/// The largest configuration, certificate or key file the emulator reads.
pub const MAX_FILE: u64 = 1024 * 1024;

/// The largest state file the emulator reads back (a fleet's registrations).
pub(crate) const MAX_STATE_FILE: u64 = 256 * 1024 * 1024;

/// Reads a file of at most [`MAX_FILE`] bytes.
pub(crate) fn read(path: &Path, operation: &'static str) -> Result<Vec<u8>, Error> {
    read_at_most(path, MAX_FILE, operation)
}

/// Reads a file of at most `max` bytes.
pub(crate) fn read_at_most(
    path: &Path,
    max: u64,
    operation: &'static str,
) -> Result<Vec<u8>, Error> {
    let failed = |source| Error::File {
        operation,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(failed)?;
    if bytes.len() as u64 > max {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {} KiB", max / 1024),
        )));
    }
    Ok(bytes)
}

/// Reads a UTF-8 text file of at most [`MAX_FILE`] bytes.
pub(crate) fn read_text(path: &Path, operation: &'static str) -> Result<String, Error> {
    String::from_utf8(read(path, operation)?).map_err(|_| Error::File {
        operation,
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is not UTF-8"),
    })
}

/// Replaces `path` with `contents` atomically, with permissions `mode` (Unix).
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    operation: &'static str,
) -> Result<(), Error> {
    let failed = |source| Error::File {
        operation,
        path: path.to_owned(),
        source,
    };
    if path.is_dir() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory: give a file path",
        )));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let (temporary, mut file) = loop {
        let mut temporary = folder.join(".");
        temporary.as_mut_os_string().push(name);
        temporary
            .as_mut_os_string()
            .push(format!(".{}.tmp", crate::clock::random_hex(6)));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        match options.open(&temporary) {
            Ok(file) => break (temporary, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(e)),
        }
    };
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(e));
    }
    // The rename is durable once the folder is.
    if let Ok(folder) = File::open(&folder) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Where the CA certificate goes when nobody says: a folder only this user can create files
/// in (`$XDG_RUNTIME_DIR`, else `~/.cache/dps-emulator`, made 0700), never the shared
/// temporary folder, where another local user could plant a CA of their own first.
///
/// # Errors
/// [`Error::File`] when neither folder can be found or made.
pub fn default_ca_path() -> Result<PathBuf, Error> {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(runtime).join("dps-emulator-ca.pem"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::File {
            operation: "choose where to write the CA certificate",
            path: PathBuf::from("~/.cache/dps-emulator"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither XDG_RUNTIME_DIR nor HOME is set: give --write-ca",
            ),
        })?;
    let folder = PathBuf::from(home).join(".cache").join("dps-emulator");
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&folder).map_err(|source| Error::File {
        operation: "make the folder for the CA certificate",
        path: folder.clone(),
        source,
    })?;
    Ok(folder.join("ca.pem"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn writes_replace_atomically_with_the_mode_and_never_follow_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ca.pem");
        std::fs::write(&target, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        write_atomic(&target, b"new", 0o644, "write").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "the explicit mode, not the old file's");
            // A symlink planted at the path is replaced, its target untouched.
            let victim = dir.path().join("victim");
            std::fs::write(&victim, "do not touch").unwrap();
            let link = dir.path().join("planted.pem");
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            write_atomic(&link, b"ca", 0o644, "write").unwrap();
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
            assert!(
                !std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(std::fs::read_to_string(&link).unwrap(), "ca");
        }
        // No temporary file is left behind; a directory is refused.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{names:?}"
        );
        let error = write_atomic(dir.path(), b"x", 0o644, "write").unwrap_err();
        assert!(error.to_string().contains("directory"), "{error}");
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        let error = read(&big, "read").unwrap_err();
        assert!(
            error.to_string().contains("larger than 1024 KiB"),
            "{error}"
        );
        std::fs::write(&big, vec![b'x'; 10]).unwrap();
        assert_eq!(read(&big, "read").unwrap().len(), 10);
    }
}

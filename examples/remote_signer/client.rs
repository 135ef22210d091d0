//! The driver proper: a key handle and an X.509 attestation whose key is in the signer.

use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme, signature};

use super::Error;
use super::protocol::{self, OP_PUBLIC_KEY};

/// Read and write timeout of every exchange with the signer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for reuse; more are closed after use.
const MAX_IDLE: usize = 16;

/// A private key held by a signer process, used through its Unix socket.
///
/// Thread-safe: each call takes an idle connection from a small pool (or opens one), so threads
/// sign concurrently, each on its own connection. A pooled connection the signer has closed is
/// replaced once, transparently; signing has no state, so the retry is safe.
pub struct RemoteKey {
    socket: PathBuf,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    idle: Mutex<Vec<UnixStream>>,
    signatures: AtomicU64,
}

impl RemoteKey {
    /// Connects to the signer at `socket` and asks it for the key's algorithm and public key.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Io`], [`Error::Refused`], and [`Error::Protocol`] for an
    /// answer that names no known algorithm or carries no public key.
    pub fn connect(socket: impl Into<PathBuf>) -> Result<Self, Error> {
        let socket = socket.into();
        let mut stream = open(&socket)?;
        let answer = protocol::parse_response(exchange(&mut stream, &[OP_PUBLIC_KEY])?)?;
        let malformed = |reason| Error::Protocol {
            what: "public key answer",
            reason,
        };
        let (&code, spki) = answer
            .split_first()
            .ok_or_else(|| malformed("it is empty"))?;
        let algorithm =
            protocol::algorithm_from_code(code).ok_or_else(|| malformed("unknown algorithm"))?;
        if spki.is_empty() {
            return Err(malformed("no public key"));
        }
        Ok(Self {
            socket,
            algorithm,
            spki: spki.to_vec(),
            idle: Mutex::new(vec![stream]),
            signatures: AtomicU64::new(0),
        })
    }

    /// The signer's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// How many signatures the signer has made for this handle.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// Sends one request and returns the body of the signer's OK answer.
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        let frame = match self.take_idle() {
            Some(mut stream) => match exchange(&mut stream, request) {
                Ok(frame) => {
                    self.put_idle(stream);
                    frame
                }
                // The signer may have closed this idle connection (restarted, timed out).
                Err(Error::Io { .. }) => self.call_on_new_connection(request)?,
                Err(e) => return Err(e),
            },
            None => self.call_on_new_connection(request)?,
        };
        protocol::parse_response(frame)
    }

    fn call_on_new_connection(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        let mut stream = open(&self.socket)?;
        let frame = exchange(&mut stream, request)?;
        self.put_idle(stream);
        Ok(frame)
    }

    fn take_idle(&self) -> Option<UnixStream> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, stream: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }

    /// Checks the length of a signature the signer returned and brings it into the contract's
    /// format.
    fn finish(&self, signature: Vec<u8>) -> Result<Vec<u8>, Error> {
        let expected = match self.algorithm {
            KeyAlgorithm::Rsa { bits } => usize::from(bits / 8),
            KeyAlgorithm::Ed25519 => 64,
            other => other.ecdsa_scalar_len().map_or(0, |n| 2 * n),
        };
        if signature.len() != expected {
            return Err(Error::Protocol {
                what: "signature",
                reason: "wrong length for the key",
            });
        }
        Ok(signature)
    }
}

impl KeyHandle for RemoteKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        hsm_core::check_scheme(self, scheme)?;
        let device = |e| hsm_core::Error::device("remote sign", e);
        let request = protocol::sign_request(scheme, message).map_err(device)?;
        let signature = self
            .call(&request)
            .and_then(|s| self.finish(s))
            .map_err(device)?;
        self.signatures.fetch_add(1, Ordering::Relaxed);
        match self.algorithm {
            // The signer answers raw r||s; the contract wants DER, converted in hsm-core only.
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                signature::ecdsa_raw_to_der(self.algorithm, &signature)
            }
            _ => Ok(signature),
        }
    }
}

impl fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKey")
            .field("socket", &self.socket)
            .field("algorithm", &self.algorithm)
            .field("signatures", &self.signatures())
            .finish_non_exhaustive()
    }
}

fn open(socket: &Path) -> Result<UnixStream, Error> {
    let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
        path: socket.to_owned(),
        source,
    })?;
    let timeouts = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    timeouts.map_err(|source| Error::Io {
        operation: "set the socket timeouts",
        source,
    })?;
    Ok(stream)
}

/// One request and its response frame on `stream`.
fn exchange(stream: &mut UnixStream, request: &[u8]) -> Result<Vec<u8>, Error> {
    protocol::write_frame(stream, request)?;
    protocol::read_frame(stream)?.ok_or(Error::Io {
        operation: "read a response",
        source: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the signer closed the connection",
        ),
    })
}

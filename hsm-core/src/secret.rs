use std::fmt;

use zeroize::Zeroizing;

/// Secret bytes (a symmetric key, a CDI, a PEM private key): zeroized on drop, never `Clone`,
/// printed as `[redacted]`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the buffer is zeroized when the secret is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes. Do not log, format or persist them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// A secret string (a PIN, a passphrase, a base64 key): zeroized on drop, never `Clone`,
/// printed as `[redacted]`.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `secret`; the buffer is zeroized when the secret is dropped.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret text. Do not log, format or persist it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> Self {
        Self::new(secret.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let bytes = SecretBytes::copy_from(b"hunter2-bytes");
        let text = SecretString::from("hunter2-text");
        let shown = format!("{bytes:?} {text:?} {bytes:#?} {text:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert_eq!(bytes.expose(), b"hunter2-bytes");
        assert_eq!(text.expose(), "hunter2-text");
    }
}

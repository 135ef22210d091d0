//! The one error type of the tool, its exit codes, and how an error is printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit codes, documented in `--help` and the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 1: the operation ran and failed: DPS or the hub refused or rejected the device, the
    /// registration ended `failed` or `disabled`, a certificate could not be made.
    Failed = 1,
    /// 2: bad arguments or configuration: a missing or invalid config file, an unreadable or
    /// invalid input file, a malformed key, URI, TCTI or payload (clap's own usage errors
    /// are 2 as well).
    Usage = 2,
    /// 3: the device or HSM failed: a PKCS#11 token (wrong PIN, missing object), the TPM
    /// (unreachable, a refused command), a driver operation during registration.
    Device = 3,
    /// 4: network or timeout: DPS unreachable, TLS failure, throttling or server errors that
    /// outlasted the retries, the overall deadline, a port that cannot be bound.
    Network = 4,
}

/// The `EXIT CODES` section every command's help ends with.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the operation failed (DPS or the hub refused or rejected the device, registration failed
     or disabled)
  2  usage or configuration error (bad arguments, missing or invalid config or input file)
  3  device or HSM error (PKCS#11 token, wrong PIN, TPM, driver failure)
  4  network or timeout (DPS unreachable, TLS failure, retries exhausted, deadline passed)";

/// Everything that can go wrong in a command. Each variant names what was being done and keeps
/// the library's error as its source, so the cause chain can be printed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// Bad arguments or configuration, found by the tool itself.
    #[error("{0}")]
    Usage(String),

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The configuration file is not valid TOML for this tool.
    #[error("invalid configuration file {}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (the TOML parser's message, one line).
        reason: String,
    },

    /// A CSR was sent but DPS issued no certificate.
    #[error("the device is registered, but DPS issued no certificate to write to {}", path.display())]
    NotIssued {
        /// Where it was to be written.
        path: PathBuf,
    },

    /// `conformance` ran and these checks failed.
    #[error("{} conformance check(s) failed: {}", failed.len(), failed.join(", "))]
    Conformance {
        /// The failed checks' names.
        failed: Vec<&'static str>,
    },

    /// `status` found no cached assignment.
    #[error("no cached assignment in {} (run `connect --state-dir` first)", dir.display())]
    NoAssignment {
        /// The state folder.
        dir: PathBuf,
    },

    /// The tokio runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),

    /// Registration (or building the client) failed.
    #[error("{operation}: {}", describe_provisioning(source))]
    Provisioning {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: provisioning::Error,
    },

    /// The dps-emulator failed to start.
    #[error("{}", joined(operation, source))]
    Emulator {
        /// What was being done.
        operation: &'static str,
        /// The emulator's error.
        #[source]
        source: dps_emulator::Error,
    },

    /// Loading an X.509 certificate or key from files failed.
    #[error("{}", joined(operation, source))]
    X509 {
        /// What was being done.
        operation: &'static str,
        /// hsm-x509's error.
        #[source]
        source: hsm_x509::Error,
    },

    /// Deriving a DICE identity, a root or a certificate failed.
    #[error("{}", joined(operation, source))]
    Riot {
        /// What was being done.
        operation: &'static str,
        /// hsm-riot's error.
        #[source]
        source: hsm_riot::Error,
    },

    /// A symmetric key was unusable.
    #[error("{}", joined(operation, source))]
    SymmetricKey {
        /// What was being done.
        operation: &'static str,
        /// hsm-symmkey's error.
        #[source]
        source: hsm_symmkey::Error,
    },

    /// A PKCS#11 operation failed.
    #[error("{}", joined(operation, source))]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// hsm-pkcs11's error.
        #[source]
        source: hsm_pkcs11::Error,
    },

    /// A TPM operation failed.
    #[cfg(feature = "tpm")]
    #[error("{}", joined(operation, source))]
    Tpm {
        /// What was being done.
        operation: &'static str,
        /// hsm-tpm's error.
        #[source]
        source: hsm_tpm::Error,
    },

    /// An hsm-core operation failed (a registration id, a SAS token, a key handle).
    #[error("{}", joined(operation, source))]
    Core {
        /// What was being done.
        operation: &'static str,
        /// hsm-core's error.
        #[source]
        source: hsm_core::Error,
    },
}

impl Error {
    /// A usage error with this message.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// The exit code for this error (see [`Exit`]).
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) | Self::Read { .. } | Self::Config { .. } => Exit::Usage,
            Self::Write { .. }
            | Self::Runtime(_)
            | Self::NotIssued { .. }
            | Self::NoAssignment { .. }
            | Self::Conformance { .. } => Exit::Failed,
            Self::Provisioning { source, .. } => provisioning_exit(source),
            Self::Emulator { source, .. } => match source {
                dps_emulator::Error::File { .. }
                | dps_emulator::Error::Config { .. }
                | dps_emulator::Error::Enrollment { .. }
                | dps_emulator::Error::Store { .. } => Exit::Usage,
                dps_emulator::Error::Bind { .. } => Exit::Network,
                _ => Exit::Failed,
            },
            Self::X509 { .. } | Self::SymmetricKey { .. } => Exit::Usage,
            Self::Riot { source, .. } => match source {
                hsm_riot::Error::WrongLength { .. }
                | hsm_riot::Error::ZeroUds
                | hsm_riot::Error::InvalidCommonName { .. }
                | hsm_riot::Error::UnsupportedRootKey(_)
                | hsm_riot::Error::RootCertificate(_) => Exit::Usage,
                _ => Exit::Failed,
            },
            Self::Pkcs11 { source, .. } => pkcs11_exit(source),
            #[cfg(feature = "tpm")]
            Self::Tpm { source, .. } => match source {
                hsm_tpm::Error::Tcti(_) | hsm_tpm::Error::NotPersistent { .. } => Exit::Usage,
                _ => Exit::Device,
            },
            Self::Core { source, .. } => match source {
                hsm_core::Error::Device { .. } => Exit::Device,
                _ => Exit::Usage,
            },
        }
    }

    /// Prints `error: ...` and one `  caused by: ...` line per further cause to stderr, and
    /// returns the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        let mut stderr = std::io::stderr().lock();
        for line in self.lines() {
            // Nothing sensible is left to do when stderr is gone.
            let _ = writeln!(stderr, "{line}");
        }
        ExitCode::from(self.exit() as u8)
    }

    /// The lines [`report`](Self::report) prints. A cause whose text the line before already
    /// shows is left out (many errors print their source in their own message).
    pub(crate) fn lines(&self) -> Vec<String> {
        let first = one_line(&self.to_string());
        let mut shown = first.clone();
        let mut lines = vec![format!("error: {}", fit(&first))];
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = one_line(&cause.to_string());
            if !text.is_empty() && !shown.contains(&text) {
                lines.push(format!("  caused by: {}", fit(&text)));
                shown = text;
            }
            source = cause.source();
        }
        lines
    }
}

/// `operation: source` as one sentence, without saying the same thing twice when the source's
/// own message already starts with it ("invalid registration id: invalid registration id: ...").
fn joined(operation: &str, source: &dyn std::fmt::Display) -> String {
    let source = source.to_string();
    let plain = |text: &str| text.to_ascii_lowercase().replace("the ", "");
    if plain(&source).starts_with(&plain(operation)) {
        source
    } else {
        format!("{operation}: {source}")
    }
}

/// The provisioning client's message, with a registration's final status spelled out (its own
/// message shows DPS's optional fields in `Debug` form).
fn describe_provisioning(error: &provisioning::Error) -> String {
    match error {
        provisioning::Error::Failed {
            status,
            error_code,
            message,
        } => {
            let mut text = format!("registration {}", status.as_str());
            if let Some(code) = error_code {
                text.push_str(&format!(" (error code {code})"));
            }
            if let Some(message) = message {
                text.push_str(&format!(": {message}"));
            }
            text
        }
        other => other.to_string(),
    }
}

/// Exit codes of the provisioning client's errors.
fn provisioning_exit(error: &provisioning::Error) -> Exit {
    use provisioning::Error as E;
    if error.is_hub_refusal() {
        return Exit::Failed;
    }
    match error {
        E::Config { .. }
        | E::UnsupportedOverMqtt { .. }
        | E::MessageTooLarge { .. }
        | E::CannotRenew { .. }
        | E::Cache { .. } => Exit::Usage,
        E::Unauthorized { .. }
        | E::Rejected { .. }
        | E::Failed { .. }
        | E::HubRequest { .. }
        | E::HubSubscription { .. }
        | E::IssuedCertificate { .. }
        | E::RenewalStopped { .. } => Exit::Failed,
        E::Driver { .. } | E::Csr { .. } => Exit::Device,
        E::Throttled { .. }
        | E::Transient { .. }
        | E::Timeout { .. }
        | E::MalformedResponse { .. }
        | E::ResponseTooLarge { .. }
        | E::Tls { .. }
        | E::Io { .. }
        | E::Mqtt { .. }
        | E::NotMqtt { .. }
        | E::HubUnavailable { .. }
        | E::HubTimeout { .. }
        | E::HubConnectionLost { .. }
        | E::Hub { .. }
        | E::WebSocket { .. }
        | E::Proxy {
            status: None | Some(502..=504),
            ..
        } => Exit::Network,
        // The proxy refused: credentials, or a target it does not allow.
        E::Proxy { .. } => Exit::Failed,
        _ => Exit::Failed,
    }
}

/// Exit codes of PKCS#11 errors: what the user typed is a usage error, the rest the token's.
fn pkcs11_exit(error: &hsm_pkcs11::Error) -> Exit {
    use hsm_pkcs11::Error as E;
    match error {
        E::Uri(_)
        | E::NoModule
        | E::ModuleNotFound { .. }
        | E::ModuleFile { .. }
        | E::NoObjectSelector
        | E::LoadModule { .. }
        | E::PinFile { .. }
        | E::CertificateFile(_)
        | E::MalformedCertificate { .. } => Exit::Usage,
        _ => Exit::Device,
    }
}

/// The longest error line printed, in characters.
const MAX_LINE: usize = 1000;

/// A line as printed: control characters escaped (messages can carry a server's text) and
/// cut at [`MAX_LINE`] characters (and an input the tool quotes back can be huge).
fn fit(text: &str) -> String {
    let text = hsm_core::untrusted::printable(text);
    match text.char_indices().nth(MAX_LINE) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Joins a multi-line message (TOML parser errors draw a caret diagram) into one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| matches!(c, '|' | '^' | ' ')))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_shown_are_left_out() {
        let error = Error::Read {
            path: "/nope".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(error.lines(), ["error: cannot read /nope: no such file"]);
        assert_eq!(error.exit(), Exit::Usage);
    }

    #[test]
    fn provisioning_errors_map_to_the_documented_codes() {
        let refused = Error::Provisioning {
            operation: "register",
            source: provisioning::Error::Unauthorized {
                error: provisioning::ServiceError::default(),
            },
        };
        assert_eq!(refused.exit(), Exit::Failed);
        let lines = refused.lines();
        assert_eq!(
            lines[0],
            "error: register: DPS refused the device's credentials"
        );
        assert_eq!(lines[1], "  caused by: status 0");
        let timeout = Error::Provisioning {
            operation: "register",
            source: provisioning::Error::Timeout {
                after: std::time::Duration::from_secs(1),
                last: None,
            },
        };
        assert_eq!(timeout.exit(), Exit::Network);
    }

    #[test]
    fn a_cause_that_starts_with_the_operation_is_not_said_twice() {
        let error = Error::Core {
            operation: "invalid registration id",
            source: hsm_core::RegistrationId::new("a b").unwrap_err(),
        };
        let line = &error.lines()[0];
        assert_eq!(line.matches("invalid registration id").count(), 1, "{line}");
        let sas = Error::Core {
            operation: "cannot build the SAS token",
            source: hsm_core::Error::InvalidSasToken {
                reason: "the resource is empty",
            },
        };
        assert_eq!(
            sas.lines(),
            ["error: cannot build SAS token: the resource is empty"]
        );
        let other = Error::Core {
            operation: "cannot open the key",
            source: hsm_core::Error::InvalidSasToken { reason: "x" },
        };
        assert_eq!(
            other.lines()[0],
            "error: cannot open the key: cannot build SAS token: x"
        );
    }

    #[test]
    fn printed_lines_are_escaped_and_bounded() {
        let error = Error::Usage(format!("\u{1b}[2J{}", "y".repeat(5000)));
        let line = &error.lines()[0];
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.starts_with("error: \\u{1b}[2J"), "{line}");
        assert!(
            line.len() < MAX_LINE + 40 && line.ends_with("..."),
            "{}",
            line.len()
        );
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(one_line("a\n  |\n1 | x\n  | ^\nb"), "a 1 | x b");
    }
}

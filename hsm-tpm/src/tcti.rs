//! TCTI configuration strings, as tpm2-tools (`TPM2TOOLS_TCTI`, `--tcti`) writes them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The port the `swtpm` and `mssim` TCTIs use when the string gives none.
pub const DEFAULT_SIMULATOR_PORT: u16 = 2321;
/// The host the `swtpm` and `mssim` TCTIs use when the string gives none.
pub const DEFAULT_SIMULATOR_HOST: &str = "localhost";
/// The device the `device` TCTI opens when the string gives none (tpm2-tss's default).
pub const DEFAULT_DEVICE: &str = "/dev/tpm0";
/// The D-Bus name of tpm2-abrmd when the string gives none.
pub const DEFAULT_TABRMD_BUS_NAME: &str = "com.intel.tss2.Tabrmd";
/// The environment variables [`Tcti::from_env`] reads, in order.
pub const TCTI_ENV: [&str; 2] = ["TPM2TOOLS_TCTI", "TCTI"];

/// How to reach the TPM: a TCTI ("TPM Command Transmission Interface") and its configuration.
///
/// Parsed from the strings tpm2-tools takes in `TPM2TOOLS_TCTI` or `--tcti`, and printed back in
/// the same form (with defaults filled in):
///
/// | string | meaning |
/// |---|---|
/// | `device:/dev/tpmrm0` | the kernel's resource manager (the usual choice on Linux) |
/// | `device` | `/dev/tpm0`, the raw device |
/// | `swtpm:host=127.0.0.1,port=2321` | swtpm's TCP socket interface (control channel on port + 1) |
/// | `swtpm` | `localhost`, port 2321 |
/// | `mssim:host=127.0.0.1,port=2321` | the Microsoft/IBM simulator protocol |
/// | `tabrmd`, `tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=session` | tpm2-abrmd over D-Bus |
///
/// ```
/// use hsm_tpm::Tcti;
///
/// let tcti: Tcti = "swtpm:port=2321".parse()?;
/// assert_eq!(tcti.to_string(), "swtpm:host=localhost,port=2321");
/// assert_eq!("device".parse::<Tcti>()?, Tcti::device("/dev/tpm0"));
/// # Ok::<(), hsm_tpm::TctiError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tcti {
    /// A TPM character device (`/dev/tpmrm0`, `/dev/tpm0`).
    Device {
        /// The device node.
        path: PathBuf,
    },
    /// swtpm's socket interface (TPM commands on `port`, control channel on `port + 1`).
    Swtpm {
        /// Host name or IP address.
        host: String,
        /// The TPM command port.
        port: u16,
    },
    /// The Microsoft/IBM TPM simulator protocol (also spoken by swtpm).
    Mssim {
        /// Host name or IP address.
        host: String,
        /// The TPM command port.
        port: u16,
    },
    /// The TPM2 access broker and resource manager daemon (tpm2-abrmd) over D-Bus.
    Tabrmd {
        /// The D-Bus name.
        bus_name: String,
        /// The bus.
        bus_type: BusType,
    },
}

/// The D-Bus bus tpm2-abrmd listens on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BusType {
    /// The system bus (the default).
    #[default]
    System,
    /// The session bus.
    Session,
}

impl BusType {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Session => "session",
        }
    }
}

/// Why a TCTI string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TctiError {
    /// The string is empty.
    #[error(
        "empty TCTI string (expected e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321)"
    )]
    Empty,
    /// The part before `:` names no TCTI this driver knows.
    #[error("unknown TCTI \"{name}\" (expected device, swtpm, mssim or tabrmd)")]
    UnknownInterface {
        /// The name given.
        name: String,
    },
    /// A `key=value` option the TCTI does not take.
    #[error("the {interface} TCTI takes no option \"{key}\"")]
    UnknownOption {
        /// `swtpm`, `mssim` or `tabrmd`.
        interface: &'static str,
        /// The option given.
        key: String,
    },
    /// An option without `=value`, or with an empty value.
    #[error("TCTI option \"{key}\" needs a value ({key}=...)")]
    MissingValue {
        /// The option.
        key: String,
    },
    /// The same option twice.
    #[error("TCTI option \"{key}\" given twice")]
    DuplicateOption {
        /// The option.
        key: String,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("invalid TCTI port \"{value}\" (expected 1-65535)")]
    InvalidPort {
        /// The value given.
        value: String,
    },
    /// A host that is neither an IP address nor a DNS host name.
    #[error("invalid TCTI host \"{value}\" (expected an IP address or a host name)")]
    InvalidHost {
        /// The value given.
        value: String,
    },
    /// A tabrmd `bus_type` other than `system` or `session`.
    #[error("invalid tabrmd bus_type \"{value}\" (expected system or session)")]
    InvalidBusType {
        /// The value given.
        value: String,
    },
    /// A tabrmd `bus_name` with characters D-Bus names cannot hold.
    #[error("invalid tabrmd bus_name \"{value}\"")]
    InvalidBusName {
        /// The value given.
        value: String,
    },
    /// [`Tcti::from_env`] found neither `TPM2TOOLS_TCTI` nor `TCTI`.
    #[error("no TCTI configured: set TPM2TOOLS_TCTI (e.g. device:/dev/tpmrm0)")]
    NotConfigured,
    /// The environment variable is not valid Unicode.
    #[error("the {variable} environment variable is not valid Unicode")]
    NotUnicode {
        /// The variable.
        variable: &'static str,
    },
}

impl Tcti {
    /// A TPM character device, e.g. `/dev/tpmrm0`.
    pub fn device(path: impl Into<PathBuf>) -> Self {
        Self::Device { path: path.into() }
    }

    /// swtpm's socket interface on `host:port` (control channel on `port + 1`).
    pub fn swtpm(host: impl Into<String>, port: u16) -> Self {
        Self::Swtpm {
            host: host.into(),
            port,
        }
    }

    /// Reads the TCTI from `TPM2TOOLS_TCTI`, else `TCTI`, as tpm2-tools does. Only when called:
    /// nothing in this crate reads the environment on its own.
    ///
    /// # Errors
    /// [`TctiError::NotConfigured`] when neither variable is set, [`TctiError::NotUnicode`], or
    /// the parse errors of [`FromStr`].
    pub fn from_env() -> Result<Self, TctiError> {
        for variable in TCTI_ENV {
            match std::env::var(variable) {
                Ok(value) => return value.parse(),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(TctiError::NotUnicode { variable });
                }
            }
        }
        Err(TctiError::NotConfigured)
    }

    /// The TCTI's name: `device`, `swtpm`, `mssim` or `tabrmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Device { .. } => "device",
            Self::Swtpm { .. } => "swtpm",
            Self::Mssim { .. } => "mssim",
            Self::Tabrmd { .. } => "tabrmd",
        }
    }

    /// tss-esapi's form of this configuration.
    pub(crate) fn name_conf(&self) -> Result<tss_esapi::tcti_ldr::TctiNameConf, tss_esapi::Error> {
        tss_esapi::tcti_ldr::TctiNameConf::from_str(&self.to_string())
    }
}

impl fmt::Display for Tcti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { path } => write!(f, "device:{}", path.display()),
            Self::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
            Self::Mssim { host, port } => write!(f, "mssim:host={host},port={port}"),
            Self::Tabrmd { bus_name, bus_type } => write!(
                f,
                "tabrmd:bus_name={bus_name},bus_type={}",
                bus_type.as_str()
            ),
        }
    }
}

impl FromStr for Tcti {
    type Err = TctiError;

    fn from_str(text: &str) -> Result<Self, TctiError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TctiError::Empty);
        }
        let (name, conf) = text.split_once(':').unwrap_or((text, ""));
        match name {
            "device" => Ok(Self::Device {
                path: PathBuf::from(if conf.is_empty() {
                    DEFAULT_DEVICE
                } else {
                    conf
                }),
            }),
            "swtpm" | "mssim" => {
                let interface = if name == "swtpm" { "swtpm" } else { "mssim" };
                let (mut host, mut port) = (None, None);
                for (key, value) in options(conf)? {
                    match key {
                        "host" => set_once(&mut host, key, parse_host(value)?)?,
                        "port" => set_once(&mut port, key, parse_port(value)?)?,
                        _ => {
                            return Err(TctiError::UnknownOption {
                                interface,
                                key: key.to_owned(),
                            });
                        }
                    }
                }
                let host = host.unwrap_or_else(|| DEFAULT_SIMULATOR_HOST.to_owned());
                let port = port.unwrap_or(DEFAULT_SIMULATOR_PORT);
                Ok(if interface == "swtpm" {
                    Self::Swtpm { host, port }
                } else {
                    Self::Mssim { host, port }
                })
            }
            "tabrmd" => {
                let (mut bus_name, mut bus_type) = (None, None);
                for (key, value) in options(conf)? {
                    match key {
                        "bus_name" => set_once(&mut bus_name, key, parse_bus_name(value)?)?,
                        "bus_type" => set_once(&mut bus_type, key, parse_bus_type(value)?)?,
                        _ => {
                            return Err(TctiError::UnknownOption {
                                interface: "tabrmd",
                                key: key.to_owned(),
                            });
                        }
                    }
                }
                Ok(Self::Tabrmd {
                    bus_name: bus_name.unwrap_or_else(|| DEFAULT_TABRMD_BUS_NAME.to_owned()),
                    bus_type: bus_type.unwrap_or_default(),
                })
            }
            _ => Err(TctiError::UnknownInterface {
                name: name.to_owned(),
            }),
        }
    }
}

/// `key=value` pairs separated by commas; an empty string has none.
fn options(conf: &str) -> Result<Vec<(&str, &str)>, TctiError> {
    if conf.is_empty() {
        return Ok(Vec::new());
    }
    conf.split(',')
        .map(|option| match option.split_once('=') {
            Some((key, value)) if !value.is_empty() => Ok((key, value)),
            _ => Err(TctiError::MissingValue {
                key: option.split('=').next().unwrap_or_default().to_owned(),
            }),
        })
        .collect()
}

fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), TctiError> {
    if slot.replace(value).is_some() {
        return Err(TctiError::DuplicateOption {
            key: key.to_owned(),
        });
    }
    Ok(())
}

fn parse_port(value: &str) -> Result<u16, TctiError> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(TctiError::InvalidPort {
            value: value.to_owned(),
        }),
    }
}

/// An IP address or a DNS host name (RFC 1123 labels).
fn parse_host(value: &str) -> Result<String, TctiError> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.parse::<IpAddr>().is_ok() || (value.len() <= 253 && value.split('.').all(label_ok)) {
        Ok(value.to_owned())
    } else {
        Err(TctiError::InvalidHost {
            value: value.to_owned(),
        })
    }
}

fn parse_bus_type(value: &str) -> Result<BusType, TctiError> {
    match value {
        "system" => Ok(BusType::System),
        "session" => Ok(BusType::Session),
        _ => Err(TctiError::InvalidBusType {
            value: value.to_owned(),
        }),
    }
}

/// A D-Bus well-known name: dot-separated elements of `[A-Za-z0-9_-]`, not starting with a digit.
fn parse_bus_name(value: &str) -> Result<String, TctiError> {
    let element_ok = |e: &str| {
        !e.is_empty()
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !e.as_bytes()[0].is_ascii_digit()
    };
    if value.len() <= 255 && value.contains('.') && value.split('.').all(element_ok) {
        Ok(value.to_owned())
    } else {
        Err(TctiError::InvalidBusName {
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tpm2_tools_strings() {
        let cases: [(&str, Tcti); 9] = [
            ("device:/dev/tpmrm0", Tcti::device("/dev/tpmrm0")),
            ("device", Tcti::device("/dev/tpm0")),
            ("device:", Tcti::device("/dev/tpm0")),
            (
                "swtpm:host=127.0.0.1,port=2321",
                Tcti::swtpm("127.0.0.1", 2321),
            ),
            ("swtpm", Tcti::swtpm("localhost", 2321)),
            ("swtpm:port=40001", Tcti::swtpm("localhost", 40001)),
            (
                "mssim:port=5000,host=tpm.example.net",
                Tcti::Mssim {
                    host: "tpm.example.net".into(),
                    port: 5000,
                },
            ),
            (
                "tabrmd",
                Tcti::Tabrmd {
                    bus_name: DEFAULT_TABRMD_BUS_NAME.into(),
                    bus_type: BusType::System,
                },
            ),
            (
                "tabrmd:bus_name=com.example.Tabrmd2,bus_type=session",
                Tcti::Tabrmd {
                    bus_name: "com.example.Tabrmd2".into(),
                    bus_type: BusType::Session,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Tcti>().unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn display_fills_in_defaults() {
        assert_eq!(
            "swtpm".parse::<Tcti>().unwrap().to_string(),
            "swtpm:host=localhost,port=2321"
        );
        assert_eq!(
            "tabrmd".parse::<Tcti>().unwrap().to_string(),
            "tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=system"
        );
        assert_eq!(
            "device".parse::<Tcti>().unwrap().to_string(),
            "device:/dev/tpm0"
        );
        assert_eq!(Tcti::swtpm("::1", 9).to_string(), "swtpm:host=::1,port=9");
    }

    #[test]
    fn bad_strings_are_typed_errors() {
        let cases: [(&str, TctiError); 11] = [
            ("", TctiError::Empty),
            (
                "libtpms",
                TctiError::UnknownInterface {
                    name: "libtpms".into(),
                },
            ),
            (
                "swtpm:hots=x",
                TctiError::UnknownOption {
                    interface: "swtpm",
                    key: "hots".into(),
                },
            ),
            ("swtpm:port", TctiError::MissingValue { key: "port".into() }),
            (
                "mssim:host=",
                TctiError::MissingValue { key: "host".into() },
            ),
            (
                "swtpm:port=1,port=2",
                TctiError::DuplicateOption { key: "port".into() },
            ),
            (
                "swtpm:port=70000",
                TctiError::InvalidPort {
                    value: "70000".into(),
                },
            ),
            (
                "swtpm:port=+1",
                TctiError::InvalidPort { value: "+1".into() },
            ),
            (
                "mssim:host=-bad-",
                TctiError::InvalidHost {
                    value: "-bad-".into(),
                },
            ),
            (
                "tabrmd:bus_type=user",
                TctiError::InvalidBusType {
                    value: "user".into(),
                },
            ),
            (
                "tabrmd:bus_name=1abc",
                TctiError::InvalidBusName {
                    value: "1abc".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Tcti>().unwrap_err(), expected, "{text}");
        }
        assert!(
            TctiError::InvalidPort { value: "x".into() }
                .to_string()
                .contains("1-65535")
        );
    }

    #[test]
    fn tss_esapi_accepts_what_we_print() {
        for text in [
            "device:/dev/tpmrm0",
            "swtpm:host=127.0.0.1,port=2321",
            "mssim:host=localhost,port=1",
            "tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=session",
        ] {
            let tcti: Tcti = text.parse().unwrap();
            assert_eq!(tcti.to_string(), text);
            tcti.name_conf()
                .unwrap_or_else(|e| panic!("tss-esapi refuses {text}: {e}"));
        }
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){0,3}",
        ]
    }

    fn tcti() -> impl Strategy<Value = Tcti> {
        prop_oneof![
            "/dev/[a-z0-9/_.-]{1,20}".prop_map(Tcti::device),
            (host(), 1u16..).prop_map(|(host, port)| Tcti::Swtpm { host, port }),
            (host(), 1u16..).prop_map(|(host, port)| Tcti::Mssim { host, port }),
            (
                "[a-zA-Z_][a-zA-Z0-9_-]{0,8}(\\.[a-zA-Z_][a-zA-Z0-9_]{0,8}){1,3}",
                prop_oneof![Just(BusType::System), Just(BusType::Session)]
            )
                .prop_map(|(bus_name, bus_type)| Tcti::Tabrmd { bus_name, bus_type }),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(tcti in tcti()) {
            let text = tcti.to_string();
            prop_assert_eq!(text.parse::<Tcti>().unwrap(), tcti);
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in "\\PC{0,60}") {
            if let Ok(tcti) = text.parse::<Tcti>() {
                // Whatever parses prints to a string that parses to the same configuration.
                prop_assert_eq!(tcti.to_string().parse::<Tcti>().unwrap(), tcti);
            }
        }

        #[test]
        fn option_order_does_not_matter(host in host(), port in 1u16..) {
            let a: Tcti = format!("swtpm:host={host},port={port}").parse().unwrap();
            let b: Tcti = format!("swtpm:port={port},host={host}").parse().unwrap();
            prop_assert_eq!(a, b);
        }
    }
}

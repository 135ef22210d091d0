//! HTTP proxies: [`Proxy`] (`http://[user:password@]host[:port]`, its password a secret) and
//! [`ProxySetting`], which says whether the client uses one: none, a given one, or the
//! environment's (`HTTPS_PROXY`/`https_proxy`, minus the hosts `NO_PROXY`/`no_proxy` names,
//! as curl and Azure's identity service read them).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hsm_core::SecretString;
use zeroize::Zeroizing;

use crate::Error;
use crate::endpoint::Endpoint;

/// The port of a proxy URL without one (curl's default).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// An HTTP proxy that tunnels with `CONNECT host:port` (the TLS session to DPS or the hub runs
/// inside the tunnel: the proxy sees only encrypted bytes), with optional basic
/// authentication.
///
/// Parsed from `http://[user:password@]host[:port]` (percent-encoded user and password; the
/// port defaults to 1080). The password is a secret: `Debug` and `Display` never show it (nor
/// the user), and no error quotes the URL it came from.
#[derive(Clone)]
pub struct Proxy {
    endpoint: Endpoint,
    credentials: Option<(String, Arc<SecretString>)>,
}

impl Proxy {
    /// Parses a proxy URL.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong, never quoting the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::config(format!("invalid proxy URL: {why}"));
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => {
                return Err(bad(
                    "only http:// proxies are supported (the tunnel to DPS or the hub is TLS inside it)",
                ));
            }
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path or query"));
        }
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let decode = |text: &str, what: &str| {
                    hsm_core::percent::decode_utf8(text)
                        .ok_or_else(|| bad(&format!("the {what} is not percent-encoded UTF-8")))
                };
                let user = decode(user, "user")?;
                let password = Zeroizing::new(decode(password, "password")?);
                if user.is_empty() {
                    return Err(bad("the user is empty"));
                }
                Some((user, Arc::new(SecretString::from(password.as_str()))))
            }
        };
        let endpoint = Endpoint::parse_named("proxy", host, DEFAULT_PROXY_PORT)
            .map_err(|_| bad("not a host name or address, with an optional port"))?;
        Ok(Self {
            endpoint,
            credentials,
        })
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.endpoint.port
    }

    /// Whether it has credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `Basic base64(user:password)`, for `Proxy-Authorization`.
    pub(crate) fn authorization(&self) -> Option<Zeroizing<String>> {
        self.credentials.as_ref().map(|(user, password)| {
            let plain = Zeroizing::new(format!("{user}:{}", password.expose()));
            Zeroizing::new(format!("Basic {}", BASE64.encode(plain.as_bytes())))
        })
    }
}

impl fmt::Display for Proxy {
    /// `http://host:port`, without the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.endpoint.authority_with_port())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.endpoint.authority_with_port())
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl std::str::FromStr for Proxy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Whether the client's connections go through an HTTP proxy.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ProxySetting {
    /// `HTTPS_PROXY` (else `https_proxy`) when set and not empty, except for the hosts
    /// `NO_PROXY` (else `no_proxy`) names: comma-separated host names, each matching itself
    /// and its subdomains (a leading `.` is ignored), IP addresses, or `*` for all; ports
    /// are ignored. Read when the client is built. The default, as curl and Azure's identity
    /// service do.
    #[default]
    FromEnvironment,
    /// Always direct, whatever the environment says.
    Direct,
    /// This proxy, for every host.
    Proxy(Proxy),
}

/// The proxy decision for one client: a proxy and the hosts it is bypassed for.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyRoute {
    proxy: Option<Proxy>,
    bypass: Vec<String>,
}

impl ProxySetting {
    /// Reads the setting (and the environment, for [`FromEnvironment`](Self::FromEnvironment)).
    pub(crate) fn resolve(&self) -> Result<ProxyRoute, Error> {
        match self {
            Self::Direct => Ok(ProxyRoute::default()),
            Self::Proxy(proxy) => Ok(ProxyRoute {
                proxy: Some(proxy.clone()),
                bypass: Vec::new(),
            }),
            Self::FromEnvironment => {
                let var = |names: [&str; 2]| {
                    names
                        .iter()
                        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
                };
                let Some(url) = var(["HTTPS_PROXY", "https_proxy"]) else {
                    return Ok(ProxyRoute::default());
                };
                let proxy = Proxy::parse(&url).map_err(|e| match e {
                    Error::Config { reason } => Error::config(format!("HTTPS_PROXY: {reason}")),
                    other => other,
                })?;
                Ok(ProxyRoute {
                    proxy: Some(proxy),
                    bypass: var(["NO_PROXY", "no_proxy"])
                        .map(|list| parse_no_proxy(&list))
                        .unwrap_or_default(),
                })
            }
        }
    }
}

impl ProxyRoute {
    /// The proxy for connections to `host`, if any.
    pub(crate) fn for_host(&self, host: &str) -> Option<&Proxy> {
        let proxy = self.proxy.as_ref()?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bypassed = self.bypass.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        });
        (!bypassed).then_some(proxy)
    }
}

/// `NO_PROXY`'s entries, lowercase, without a leading `.` or a port.
fn parse_no_proxy(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            // `[v6]:port`, `host:port`; a bare IPv6 address has several colons.
            let entry = match entry.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or(entry),
                None => entry,
            };
            entry.trim_end_matches('.').to_ascii_lowercase()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        let proxy = Proxy::parse("http://user:p%40ss@proxy.example.net:3128").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("proxy.example.net", 3128));
        assert_eq!(
            proxy.authorization().unwrap().as_str(),
            format!("Basic {}", BASE64.encode("user:p@ss"))
        );
        assert_eq!(proxy.to_string(), "http://proxy.example.net:3128");
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("user"),
            "{debug}"
        );
        assert_eq!(Proxy::parse("10.0.0.1").unwrap().port(), 1080);
        assert_eq!(Proxy::parse("http://[::1]:8080/").unwrap().host(), "::1");
        assert!(
            Proxy::parse("http://h:1")
                .unwrap()
                .authorization()
                .is_none()
        );
        for bad in [
            "https://h:1",
            "socks5://h",
            "http://h/path",
            "http://:pw@h",
            "http://u:secret-pw@",
            "http://u:secret-pw@h:99999",
            "http://u:%ff@h",
        ] {
            let error = Proxy::parse(bad).unwrap_err().to_string();
            assert!(error.contains("invalid proxy URL: "), "{bad}: {error}");
            assert!(!error.contains("secret-pw"), "{error}");
        }
    }

    #[test]
    fn no_proxy() {
        let route = ProxyRoute {
            proxy: Some(Proxy::parse("http://p:1").unwrap()),
            bypass: parse_no_proxy(
                "localhost, .internal.example,10.1.2.3,*.corp.net, host:8443,[::1]:80",
            ),
        };
        for direct in [
            "localhost",
            "LOCALHOST",
            "a.internal.example",
            "internal.example",
            "10.1.2.3",
            "x.corp.net",
            "host",
            "::1",
        ] {
            assert!(route.for_host(direct).is_none(), "{direct}");
        }
        for proxied in [
            "global.azure-devices-provisioning.net",
            "notinternal.example",
            "10.1.2.30",
        ] {
            assert!(route.for_host(proxied).is_some(), "{proxied}");
        }
        let all = ProxyRoute {
            proxy: route.proxy.clone(),
            bypass: parse_no_proxy("*"),
        };
        assert!(all.for_host("anything").is_none());
        assert!(ProxyRoute::default().for_host("x").is_none());
    }
}

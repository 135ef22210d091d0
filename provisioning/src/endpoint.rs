//! Where the client connects: a host and a port, parsed once from what the user wrote.

use http::uri::{Authority, Uri};
use rustls::pki_types::ServerName;

use crate::Error;

/// A host (DNS name or IP address) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The host as TLS sees it: a DNS name or an IP address, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`, optionally as an `https://` or
    /// `mqtts://` URI with an empty path; `default_port` applies when none is given.
    pub(crate) fn parse(text: &str, default_port: u16) -> Result<Self, Error> {
        Self::parse_named("global endpoint", text, default_port)
    }

    /// As [`parse`](Self::parse), naming the text `what` in errors (`"hub name"`).
    pub(crate) fn parse_named(what: &str, text: &str, default_port: u16) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::config(format!(
                "{what} {}: {why}",
                hsm_core::untrusted::quoted(text)
            ))
        };
        let text = text.trim();
        let authority = if text.contains("://") {
            let uri: Uri = text.parse().map_err(|_| bad("not a valid URI"))?;
            if !matches!(uri.scheme_str(), Some("https" | "mqtts")) {
                return Err(bad("the scheme must be https:// (or mqtts://), or none"));
            }
            if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                return Err(bad("a host has no path or query"));
            }
            uri.authority().cloned().ok_or_else(|| bad("no host"))?
        } else {
            text.trim_end_matches('/')
                .parse::<Authority>()
                .map_err(|_| bad("not a host name or address, with an optional port"))?
        };
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let port = match authority.port_u16() {
            Some(port) => port,
            // Something after the host that is not a port (`host:`, `host:99999`).
            None if authority.as_str() != authority.host() => return Err(bad("invalid port")),
            None => default_port,
        };
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        ServerName::try_from(host.to_owned()).map_err(|_| bad("not a DNS name or IP address"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The same host on another port (DPS's MQTT port on the global endpoint's host).
    pub(crate) fn with_port(&self, port: u16) -> Self {
        Self {
            host: self.host.clone(),
            port,
        }
    }

    /// The `Host` header value: the host (IPv6 in brackets) and the port unless it is 443.
    pub(crate) fn authority(&self) -> String {
        if self.port == 443 {
            self.bracketed_host()
        } else {
            self.authority_with_port()
        }
    }

    /// `host:port` (IPv6 in brackets), as `CONNECT` names a tunnel's end.
    pub(crate) fn authority_with_port(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("global.azure-devices-provisioning.net", 443).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port),
            ("global.azure-devices-provisioning.net", 443)
        );
        assert_eq!(e.authority(), "global.azure-devices-provisioning.net");
        let e = Endpoint::parse("https://localhost:8443/", 443).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8443));
        assert_eq!(e.authority(), "localhost:8443");
        let e = Endpoint::parse("[::1]:9", 443).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(e.authority(), "[::1]:9");
        let e = Endpoint::parse(" mqtts://10.0.0.1 ", 8883).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.1", 8883));
        assert_eq!(e.with_port(1).authority(), "10.0.0.1:1");
        for bad in [
            "",
            "host:port",
            "a/b",
            "[::1",
            "host:99999",
            "[::1]x",
            "host:",
            "user@host",
            "http://host",
            "https://host/path",
            "https://host?x=1",
            "ho st",
        ] {
            assert!(Endpoint::parse(bad, 443).is_err(), "{bad}");
        }
    }
}

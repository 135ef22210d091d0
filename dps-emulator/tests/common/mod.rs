//! A small DPS test client: raw HTTP/1.1 and MQTT over TLS, so the emulator's tests do not depend
//! on the provisioning crate.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dps_emulator::Emulator;
use hmac::{Hmac, KeyInit, Mac};
use hsm_core::{Expiry, RegistrationId, ResourceEncoding, SasTokenBuilder};
use hsm_testkit::pki::Identity;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, Publish, Subscribe};
use rustls::pki_types::ServerName;
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const API: &str = "2021-06-01";

pub fn tls_config(
    emulator: &Emulator,
    identity: Option<&Identity>,
    alpn: &[u8],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(emulator.ca_certificate().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.private_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

pub async fn tls(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS connection to the emulator.
pub struct Https {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub scope: String,
}

/// A response: status, Retry-After, body (JSON when it parses).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl Https {
    pub async fn connect(emulator: &Emulator, identity: Option<&Identity>) -> Self {
        let stream = tls(
            emulator.https_addr(),
            tls_config(emulator, identity, b"http/1.1"),
        )
        .await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            sender,
            scope: emulator.id_scope().to_owned(),
        }
    }

    /// Sends a request; `Err` when the connection failed (e.g. dropped by the server).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Response, hyper::Error> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json; charset=utf-8");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }

    pub async fn register_raw(
        &mut self,
        id: &str,
        auth: Option<&str>,
        body: Value,
        api: &str,
    ) -> Response {
        let path = format!(
            "/{}/registrations/{id}/register?api-version={api}",
            self.scope
        );
        self.send("PUT", &path, auth, Some(serde_json::to_vec(&body).unwrap()))
            .await
            .unwrap()
    }

    pub async fn poll(
        &mut self,
        id: &str,
        operation: &str,
        auth: Option<&str>,
        api: &str,
    ) -> Response {
        let path = format!(
            "/{}/registrations/{id}/operations/{operation}?api-version={api}",
            self.scope
        );
        self.send("GET", &path, auth, None).await.unwrap()
    }

    /// Registers and polls until a final status; returns the last response.
    pub async fn register(
        &mut self,
        id: &str,
        auth: Option<&str>,
        body: Value,
        api: &str,
    ) -> Response {
        let first = self.register_raw(id, auth, body, api).await;
        if first.status != 202 {
            return first;
        }
        let operation = first.json()["operationId"].as_str().unwrap().to_owned();
        for _ in 0..20 {
            let r = self.poll(id, &operation, auth, api).await;
            if r.status != 202 {
                return r;
            }
        }
        panic!("still assigning after 20 polls");
    }
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A SAS token for a registration, signed with `key`, valid for an hour.
pub fn sas(scope: &str, id: &str, key: &[u8]) -> String {
    sas_with(
        scope,
        id,
        key,
        Expiry::In(std::time::Duration::from_secs(3600)),
        ResourceEncoding::LowercasePercent,
    )
}

pub fn sas_with(
    scope: &str,
    id: &str,
    key: &[u8],
    expiry: Expiry,
    encoding: ResourceEncoding,
) -> String {
    SasTokenBuilder::for_registration(scope, &RegistrationId::new(id).unwrap())
        .key_name("registration")
        .expiry(expiry)
        .encoding(encoding)
        .sign(|d| Ok(hmac(key, d)))
        .unwrap()
        .expose()
        .to_owned()
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// One MQTT connection to the emulator.
pub struct Mqtt {
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
}

impl Mqtt {
    pub async fn open(emulator: &Emulator, identity: Option<&Identity>) -> Self {
        let stream = tls(
            emulator.mqtt_addr().unwrap(),
            tls_config(emulator, identity, b"mqtt"),
        )
        .await;
        Self {
            stream,
            buffer: BytesMut::new(),
        }
    }

    pub async fn write(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buffer, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the emulator: {e}"),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// CONNECT with DPS's username; returns the CONNACK code.
    pub async fn connect(
        &mut self,
        scope: &str,
        id: &str,
        password: &str,
        api: &str,
    ) -> rumqttc::mqttbytes::v4::ConnectReturnCode {
        let mut connect = Connect::new(id);
        connect.keep_alive = 30;
        connect.login = Some(Login::new(
            format!("{scope}/registrations/{id}/api-version={api}&ClientVersion=test"),
            password,
        ));
        self.write(Packet::Connect(connect)).await;
        match self.read().await {
            Some(Packet::ConnAck(ack)) => ack.code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self) {
        self.write(Packet::Subscribe(Subscribe::new(
            "$dps/registrations/res/#",
            QoS::AtLeastOnce,
        )))
        .await;
        assert!(matches!(self.read().await, Some(Packet::SubAck(_))));
    }

    /// Publishes to a topic and returns (status, retry-after, body) of the response.
    pub async fn request(
        &mut self,
        topic: &str,
        body: Vec<u8>,
        rid: u32,
    ) -> (u16, Option<u32>, Value) {
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, body);
        publish.pkid = 1;
        self.write(Packet::Publish(publish)).await;
        loop {
            match self.read().await {
                Some(Packet::PubAck(_)) => {}
                Some(Packet::Publish(p)) => {
                    let rest = p.topic.strip_prefix("$dps/registrations/res/").unwrap();
                    let (status, query) = rest.split_once("/?").unwrap();
                    let mut retry = None;
                    let mut got_rid = None;
                    for pair in query.split('&') {
                        let (k, v) = pair.split_once('=').unwrap();
                        match k {
                            "$rid" => got_rid = Some(v.parse::<u32>().unwrap()),
                            "retry-after" => retry = Some(v.parse().unwrap()),
                            _ => {}
                        }
                    }
                    assert_eq!(got_rid, Some(rid), "response correlates by $rid");
                    let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    return (status.parse().unwrap(), retry, body);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn register(&mut self, id: &str, body: Value) -> (u16, Value) {
        let (status, _, first) = self
            .request(
                "$dps/registrations/PUT/iotdps-register/?$rid=1",
                serde_json::to_vec(&body).unwrap(),
                1,
            )
            .await;
        if status != 202 {
            return (status, first);
        }
        let op = first["operationId"].as_str().unwrap().to_owned();
        for rid in 2..20 {
            let (status, _, body) = self
                .request(
                    &format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}"),
                    Vec::new(),
                    rid,
                )
                .await;
            if status != 202 {
                return (status, body);
            }
        }
        panic!("{id}: still assigning after 20 polls");
    }
}

/// A hub SAS token for `{hub}/devices/{device}` signed with `key` (no key name, as device
/// tokens have).
pub fn hub_sas(hub: &str, device: &str, key: &[u8], expiry: Expiry) -> String {
    SasTokenBuilder::new(format!("{hub}/devices/{device}"))
        .expiry(expiry)
        .sign(|d| Ok(hmac(key, d)))
        .unwrap()
        .expose()
        .to_owned()
}

impl Mqtt {
    /// CONNECT as a hub device (`{hub}/{device}/?api-version={api}`); returns the CONNACK.
    pub async fn connect_hub(
        &mut self,
        client_id: &str,
        username: &str,
        password: &str,
        clean: bool,
    ) -> rumqttc::mqttbytes::v4::ConnAck {
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 30;
        connect.clean_session = clean;
        connect.login = Some(Login::new(username, password));
        self.write(Packet::Connect(connect)).await;
        match self.read().await {
            Some(Packet::ConnAck(ack)) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

//! The protocol floor: what a registration costs on the wire with no client around it. One TCP
//! connection, one TLS handshake with the same client authentication (rustls called directly,
//! the same provider, no resumption), then the same requests with the same bytes as the
//! client sends: over HTTPS (hyper's HTTP/1.1 connection, polled in this task) the register
//! `PUT` and the status `GET`s until the device is assigned; over MQTT (rumqttc's codec)
//! CONNECT, SUBSCRIBE, the register PUBLISH and the status PUBLISHes, each answer read and
//! acknowledged. No builder, no retry policy, no attestation abstraction, no error mapping: the
//! ratio ours / floor is what the client adds.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hsm_core::{SasTokenBuilder, SymmetricKeyAttestation as _};
use hsm_symmkey::SymmetricKey;
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// The same `User-Agent` and API version as the client's.
const USER_AGENT: &str = concat!("hsm-provisioning/", env!("CARGO_PKG_VERSION"));
const API_VERSION: &str = provisioning::DEFAULT_API_VERSION;

/// How the floor authenticates: a SAS token from the key (signed for every registration, as
/// the client does) or the TLS client certificate.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    Sas(&'a SymmetricKey),
    Certificate,
}

pub(crate) struct Floor {
    host: String,
    https_port: u16,
    mqtt_port: u16,
    scope: String,
    server_name: ServerName<'static>,
    https: TlsConnector,
    https_x509: TlsConnector,
    mqtt: TlsConnector,
    mqtt_x509: TlsConnector,
}

impl Floor {
    /// A floor for the DPS at `host`, trusting `anchors`; `x509` is the device's chain and
    /// PKCS#8 key (the same the client's X.509 driver holds).
    pub(crate) fn new(
        host: &str,
        https_port: u16,
        mqtt_port: u16,
        scope: &str,
        anchors: &[CertificateDer<'static>],
        x509: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for anchor in anchors {
            roots.add(anchor.clone()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .unwrap()
                .with_root_certificates(roots.clone())
        };
        let connector = |mut config: ClientConfig, alpn: bool| {
            if alpn {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            config.resumption = rustls::client::Resumption::disabled();
            TlsConnector::from(Arc::new(config))
        };
        let with_cert = || {
            builder()
                .with_client_auth_cert(x509.0.clone(), x509.1.clone_key())
                .unwrap()
        };
        Self {
            host: host.to_owned(),
            https_port,
            mqtt_port,
            scope: scope.to_owned(),
            server_name: ServerName::try_from(host.to_owned()).unwrap(),
            https: connector(builder().with_no_client_auth(), true),
            https_x509: connector(with_cert(), true),
            mqtt: connector(builder().with_no_client_auth(), false),
            mqtt_x509: connector(with_cert(), false),
        }
    }

    async fn tls(&self, connector: &TlsConnector, port: u16) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect((self.host.as_str(), port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        connector
            .connect(self.server_name.clone(), tcp)
            .await
            .unwrap()
    }

    fn token(&self, registration_id: &str, key: &SymmetricKey) -> String {
        let id = hsm_core::RegistrationId::new(registration_id).unwrap();
        SasTokenBuilder::for_registration(&self.scope, &id)
            .sign(|data| key.hmac_sha256(data))
            .unwrap()
            .expose()
            .to_owned()
    }

    fn body(registration_id: &str) -> Bytes {
        Bytes::from(format!(r#"{{"registrationId":"{registration_id}"}}"#))
    }

    /// One registration over HTTPS; returns the assigned hub.
    pub(crate) async fn https(&self, registration_id: &str, auth: Auth<'_>) -> String {
        let authorization = match auth {
            Auth::Sas(key) => Some(self.token(registration_id, key)),
            Auth::Certificate => None,
        };
        let connector = match auth {
            Auth::Sas(_) => &self.https,
            Auth::Certificate => &self.https_x509,
        };
        let stream = self.tls(connector, self.https_port).await;
        let (mut sender, connection) = http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .unwrap();
        let host = if self.https_port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.https_port)
        };
        let base = format!("/{}/registrations/{registration_id}", self.scope);
        let request = |method: hyper::Method, path: String, body: Option<Bytes>| {
            let mut builder = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", &host)
                .header("accept", "application/json")
                .header("user-agent", USER_AGENT);
            if let Some(token) = &authorization {
                builder = builder.header("authorization", token);
            }
            let body: Body = match body {
                Some(bytes) => {
                    builder = builder
                        .header("content-type", "application/json; charset=utf-8")
                        .header("content-length", bytes.len());
                    Full::new(bytes).boxed()
                }
                None => Empty::new().boxed(),
            };
            builder.body(body).unwrap()
        };
        let exchanges = async {
            let put = request(
                hyper::Method::PUT,
                format!("{base}/register?api-version={API_VERSION}"),
                Some(Self::body(registration_id)),
            );
            let mut reply = send(&mut sender, put).await;
            while reply["status"] != "assigned" {
                let operation = reply["operationId"].as_str().unwrap().to_owned();
                let get = request(
                    hyper::Method::GET,
                    format!("{base}/operations/{operation}?api-version={API_VERSION}"),
                    None,
                );
                reply = send(&mut sender, get).await;
            }
            hub(&reply)
        };
        // The connection is polled in this task, beside the exchanges (no spawned task).
        tokio::select! {
            hub = exchanges => hub,
            ended = connection => panic!("DPS closed the connection: {ended:?}"),
        }
    }

    /// One registration over MQTT; returns the assigned hub.
    pub(crate) async fn mqtt(&self, registration_id: &str, auth: Auth<'_>) -> String {
        let (connector, password) = match auth {
            Auth::Sas(key) => (&self.mqtt, self.token(registration_id, key)),
            Auth::Certificate => (&self.mqtt_x509, String::new()),
        };
        let mut link = Link {
            stream: self.tls(connector, self.mqtt_port).await,
            buffer: BytesMut::with_capacity(4096),
        };
        let mut connect = Connect::new(registration_id);
        connect.keep_alive = 30;
        connect.clean_session = true;
        connect.set_login(
            format!(
                "{}/registrations/{registration_id}/api-version={API_VERSION}&ClientVersion={}",
                self.scope,
                hsm_core::percent::encode(USER_AGENT.as_bytes())
            ),
            password,
        );
        link.write(Packet::Connect(connect)).await;
        let Packet::ConnAck(ack) = link.read().await else {
            panic!("no CONNACK")
        };
        assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
        let mut subscribe = Subscribe::new("$dps/registrations/res/#", QoS::AtLeastOnce);
        subscribe.pkid = 1;
        link.write(Packet::Subscribe(subscribe)).await;
        while !matches!(link.read().await, Packet::SubAck(_)) {}
        let mut rid = 1;
        let mut topic = format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}");
        let mut payload = Self::body(registration_id);
        loop {
            let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
            publish.pkid = u16::try_from(rid + 1).unwrap();
            link.write(Packet::Publish(publish)).await;
            let answer = loop {
                if let Packet::Publish(answer) = link.read().await {
                    break answer;
                }
            };
            link.write(Packet::PubAck(PubAck::new(answer.pkid))).await;
            assert!(
                answer.topic.contains(&format!("$rid={rid}")),
                "{}",
                answer.topic
            );
            let reply: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
            if reply["status"] == "assigned" {
                return hub(&reply);
            }
            rid += 1;
            topic = format!(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={}",
                reply["operationId"].as_str().unwrap()
            );
            payload = Bytes::new();
        }
    }
}

async fn send(
    sender: &mut http1::SendRequest<Body>,
    request: hyper::Request<Body>,
) -> serde_json::Value {
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn hub(reply: &serde_json::Value) -> String {
    reply["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// MQTT packets on a TLS stream, framed by rumqttc's codec.
struct Link {
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
}

impl Link {
    async fn write(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn read(&mut self) -> Packet {
        loop {
            match Packet::read(&mut self.buffer, 1 << 20) {
                Ok(packet) => return packet,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("not MQTT: {e}"),
            }
            assert!(
                self.stream.read_buf(&mut self.buffer).await.unwrap() > 0,
                "DPS closed the connection"
            );
        }
    }
}

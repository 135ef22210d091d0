//! The AMQP transports: AMQP 1.0 over TLS on DPS's AMQP port (5671), or over a WebSocket on
//! its HTTPS port (`/$iothub/websocket`, subprotocol `AMQPWSB10`), either through an HTTP
//! proxy's tunnel ([`crate::net`]). fe2o3-amqp frames and encodes everything and runs the
//! connection, session and link state machines; this module speaks DPS on top: the SASL
//! exchange each attestation needs ([`sasl`]: none for X.509, `PLAIN` with the SAS token for
//! a symmetric key, `TPM` for a TPM), the two links on `{idScope}/registrations/{id}`, the
//! `iotdps-*` application properties of each request, and DPS's answers: a message whose data
//! section is the JSON operation (matched by correlation id), or a rejected delivery whose
//! error carries the status and `retry-after`.

mod sasl;

use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{RecvError, SendError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, Fields};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp::{Receiver, Sender};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use super::{BoxFuture, Connection, Failure, Request, RequestKind, Session};
use crate::client::USER_AGENT_VALUE;
use crate::endpoint::Endpoint;
use crate::net::{self, Service};
use crate::proxy::Proxy;
use crate::wire::{MAX_RESPONSE, RawResponse};
use crate::{Error, ServiceError};

/// The WebSocket subprotocol of AMQP.
const WEBSOCKET_PROTOCOL: &str = "AMQPWSB10";
/// How long connecting (TCP, tunnel, TLS, WebSocket), the SASL exchange and opening the
/// connection and its links may take, each.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest AMQP frame either side sends (DPS's answers are a few KiB).
const MAX_FRAME: u32 = 64 * 1024;
/// The application property naming the operation.
const OPERATION_TYPE: &str = "iotdps-operation-type";
/// The application property naming the operation polled.
const OPERATION_ID: &str = "iotdps-operation-id";
/// The application property asking DPS to register again even when nothing changed.
const FORCE_REGISTRATION: &str = "iotdps-forceRegistration";
/// The application property (on answers) or error-info key (on rejections) with the seconds
/// to wait.
const RETRY_AFTER: &str = "retry-after";
/// The link property with the API version.
const API_VERSION: &str = "com.microsoft:api-version";
/// The link property naming the client.
const CLIENT_VERSION: &str = "com.microsoft:client-version";

pub(crate) struct AmqpConnection {
    endpoint: Endpoint,
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<Proxy>,
    websocket: bool,
    id_scope: String,
    registration_id: String,
    api_version: String,
    open: Option<Open>,
    next_correlation: u64,
}

/// An open connection with its session and links.
struct Open {
    // Dropping the handles ends them; the connection goes last.
    sender: Sender,
    receiver: Receiver,
    session: SessionHandle<()>,
    connection: ConnectionHandle<()>,
    /// The SASL `PLAIN` password (the SAS token) it was opened with, if any.
    password: Option<Zeroizing<String>>,
}

impl Connection for AmqpConnection {
    fn send<'a>(
        &'a mut self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<RawResponse, Failure>> {
        Box::pin(async move {
            let result = self.exchange(request).await;
            if result.is_err() {
                self.close().await;
            }
            result
        })
    }

    fn reset(&mut self) {
        self.open = None;
    }
}

impl AmqpConnection {
    /// AMQP over TLS on the AMQP port (`websocket` false), or over a WebSocket on the
    /// endpoint's HTTPS port.
    pub(crate) fn new(session: Session, websocket: bool) -> Self {
        let Session {
            endpoint,
            amqp_port,
            tls,
            proxy,
            id_scope,
            registration_id,
            api_version,
            ..
        } = session;
        Self {
            endpoint: if websocket {
                endpoint
            } else {
                endpoint.with_port(amqp_port)
            },
            tls,
            proxy,
            websocket,
            id_scope,
            registration_id: registration_id.as_str().to_owned(),
            api_version,
            open: None,
            next_correlation: 1,
        }
    }

    /// `{idScope}/registrations/{registrationId}`: the links' address, the `PLAIN` user name.
    fn address(&self) -> String {
        format!("{}/registrations/{}", self.id_scope, self.registration_id)
    }

    /// Ends the connection politely (within a second), then forgets it.
    async fn close(&mut self) {
        if let Some(mut open) = self.open.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = open.sender.close().await;
                let _ = open.receiver.close().await;
                let _ = open.session.end().await;
                let _ = open.connection.close().await;
            })
            .await;
        }
    }

    /// Opens a connection for `request` unless one that fits it is open: one authenticated
    /// with the same SAS token, or by the TLS certificate or the TPM.
    async fn connect(&mut self, request: &Request<'_>) -> Result<(), Failure> {
        if let Some(open) = &self.open {
            if open.password.as_deref().map(String::as_str) == request.authorization {
                return Ok(());
            }
            // A new token (after a clock correction): DPS reads credentials at SASL only.
            self.close().await;
        }
        tracing::debug!(host = %self.endpoint.host, port = self.endpoint.port, websocket = self.websocket, "connect (AMQP)");
        let route = net::Route {
            service: Service::Dps,
            server_name: &self.endpoint.host,
            host: &self.endpoint.host,
            port: self.endpoint.port,
            tls: &self.tls,
            proxy: self.proxy.as_ref(),
            websocket: self.websocket.then_some(WEBSOCKET_PROTOCOL),
            timeout: Some(STEP_TIMEOUT),
        };
        let stream = net::open(&route, &|operation| Error::Io {
            operation,
            source: format!("no answer within {STEP_TIMEOUT:?}").into(),
        })
        .await
        .map_err(|e| {
            if e.is_transient() {
                Failure::Retry(e)
            } else {
                Failure::Fatal(e)
            }
        })?;
        let address = self.address();
        let mechanism = match (request.authorization, request.tpm) {
            (Some(token), _) => sasl::Mechanism::Plain {
                username: &address,
                password: token,
            },
            (None, Some(tpm)) => sasl::Mechanism::Tpm {
                id_scope: &self.id_scope,
                registration_id: &self.registration_id,
                tpm,
            },
            (None, None) => sasl::Mechanism::None,
        };
        let stream = within("authenticate (SASL)", sasl::authenticate(stream, mechanism)).await??;
        let mut connection = within(
            "open the AMQP connection",
            fe2o3_amqp::Connection::builder()
                .container_id(format!("hsm-provisioning-{}", self.registration_id))
                .hostname(self.endpoint.host.as_str())
                .max_frame_size(MAX_FRAME)
                .open_with_stream(stream),
        )
        .await?
        .map_err(|e| open_failure("open the AMQP connection", &e))?;
        let mut session = within(
            "begin the AMQP session",
            fe2o3_amqp::Session::begin(&mut connection),
        )
        .await?
        .map_err(|e| open_failure("begin the AMQP session", &e))?;
        let properties = || {
            let mut fields = Fields::new();
            fields.insert(
                Symbol::from(API_VERSION),
                Value::String(self.api_version.clone()),
            );
            fields.insert(
                Symbol::from(CLIENT_VERSION),
                Value::String(USER_AGENT_VALUE.to_owned()),
            );
            fields
        };
        // The receiver first: DPS's answer must have somewhere to go.
        let receiver = within(
            "attach the receiving link",
            Receiver::builder()
                .name(format!("receiver-{}", self.registration_id))
                .source(address.clone())
                .target("local_endpoint")
                .properties(properties())
                .max_message_size(MAX_RESPONSE as u64 + 1024)
                .attach(&mut session),
        )
        .await?
        .map_err(|e| open_failure("attach the receiving link", &e))?;
        let sender = within(
            "attach the sending link",
            Sender::builder()
                .name(format!("sender-{}", self.registration_id))
                .source("remote_endpoint")
                .target(address)
                .properties(properties())
                .attach(&mut session),
        )
        .await?
        .map_err(|e| open_failure("attach the sending link", &e))?;
        tracing::debug!("connected (AMQP)");
        self.open = Some(Open {
            sender,
            receiver,
            session,
            connection,
            password: request.authorization.map(|p| Zeroizing::new(p.to_owned())),
        });
        Ok(())
    }

    async fn exchange(&mut self, request: &Request<'_>) -> Result<RawResponse, Failure> {
        let (operation_type, operation_id, body) = match request.kind {
            RequestKind::Register { body } => ("iotdps-register", None, body.clone()),
            RequestKind::Poll { operation_id } => (
                "iotdps-get-operationstatus",
                Some(operation_id),
                Bytes::new(),
            ),
            RequestKind::Time => {
                return Err(Failure::Fatal(Error::config(
                    "the service's time is read over HTTPS",
                )));
            }
        };
        self.connect(request).await?;
        let correlation = format!("{}-{}", self.registration_id, self.next_correlation);
        self.next_correlation += 1;
        let mut properties =
            ApplicationProperties::builder().insert(OPERATION_TYPE, operation_type);
        properties = match operation_id {
            Some(id) => properties.insert(OPERATION_ID, id),
            None => properties.insert(FORCE_REGISTRATION, false),
        };
        let message = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::String(correlation.clone())),
                correlation_id: Some(MessageId::String(correlation.clone())),
                ..Properties::default()
            })
            .application_properties(properties.build())
            .data(Binary::from(body.to_vec()))
            .build();
        let operation = request.name();
        let Some(open) = self.open.as_mut() else {
            return Err(Failure::Fatal(Error::config("AMQP connection state lost")));
        };
        let Open {
            sender,
            receiver,
            connection,
            ..
        } = open;
        // fe2o3-amqp's send and receive wait on when the connection is gone; so wait on it too.
        let outcome = while_open(connection, operation, sender.send(message))
            .await?
            .map_err(|e| send_failure(operation, e))?;
        match outcome {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(rejected) => return Ok(rejection(rejected.error)),
            other => {
                return Err(Failure::Retry(Error::Transient {
                    attempts: 1,
                    error: ServiceError {
                        status: 503,
                        message: Some(format!("DPS did not take the request ({other:?})")),
                        ..ServiceError::default()
                    },
                }));
            }
        }
        loop {
            // serde_amqp 0.18 can panic on a hostile message (an element count that
            // overflows): a malformed answer, not a crash of the device.
            let received = AssertUnwindSafe(receiver.recv::<Body<Value>>()).catch_unwind();
            let delivery = while_open(connection, operation, received)
                .await?
                .map_err(|_| {
                    Failure::Fatal(malformed(
                        operation,
                        "its answer is not an AMQP message (the AMQP decoder failed on it)".into(),
                    ))
                })?
                .map_err(|e| recv_failure(operation, e))?;
            let _ = receiver.accept(&delivery).await;
            let answer = Answer::read(delivery.into_message())
                .map_err(|reason| Failure::Fatal(malformed(operation, reason)))?;
            if answer.body.len() > MAX_RESPONSE {
                return Err(Failure::Fatal(Error::ResponseTooLarge {
                    operation,
                    limit: MAX_RESPONSE,
                }));
            }
            if answer
                .correlation
                .as_deref()
                .is_some_and(|c| c != correlation)
            {
                tracing::debug!(correlation = ?answer.correlation, expected = %correlation, "ignoring an answer to another request");
                continue;
            }
            return Ok(RawResponse {
                status: 200,
                retry_after: answer.retry_after,
                date: None,
                body: answer.body,
            });
        }
    }
}

/// What a DPS answer message carries.
#[derive(Debug)]
struct Answer {
    correlation: Option<String>,
    retry_after: Option<Duration>,
    body: Bytes,
}

impl Answer {
    /// Reads an answer: its correlation id, its `retry-after` (any case; a number or a
    /// numeric string), its body (data sections, joined; or a string or binary value).
    fn read(message: Message<Body<Value>>) -> Result<Self, String> {
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.as_ref())
            .map(message_id_text);
        let retry_after = match message.application_properties.as_ref().and_then(|p| {
            p.0.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(RETRY_AFTER))
                .map(|(_, v)| v)
        }) {
            None => None,
            Some(value) => Some(
                seconds(&Value::from(value.clone()))
                    .ok_or_else(|| "its retry-after is not a number of seconds".to_owned())?,
            ),
        };
        let body = match message.body {
            Body::Data(batch) => {
                let mut body = Vec::new();
                for data in batch.iter() {
                    if body.len() + data.0.len() > MAX_RESPONSE + 1 {
                        break;
                    }
                    body.extend_from_slice(&data.0);
                }
                Bytes::from(body)
            }
            Body::Value(value) => match value.0 {
                Value::String(text) => Bytes::from(text.into_bytes()),
                Value::Binary(bytes) => Bytes::from(bytes.into_vec()),
                _ => return Err("its body is neither data nor a string".into()),
            },
            Body::Sequence(_) => return Err("its body is an AMQP sequence, not data".into()),
            Body::Empty => return Err("it has no body".into()),
        };
        Ok(Self {
            correlation,
            retry_after,
            body,
        })
    }
}

/// A message id as text.
fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => format!("{b:?}"),
    }
}

/// A number of seconds: any unsigned or non-negative integer, or a string of digits.
fn seconds(value: &Value) -> Option<Duration> {
    let n: u64 = match value {
        Value::Ubyte(n) => u64::from(*n),
        Value::Ushort(n) => u64::from(*n),
        Value::Uint(n) => u64::from(*n),
        Value::Ulong(n) => *n,
        Value::Byte(n) => u64::try_from(*n).ok()?,
        Value::Short(n) => u64::try_from(*n).ok()?,
        Value::Int(n) => u64::try_from(*n).ok()?,
        Value::Long(n) => u64::try_from(*n).ok()?,
        Value::String(s) => s.trim().parse().ok()?,
        Value::Symbol(s) => s.0.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(n))
}

/// A rejected request as DPS's HTTP-like answer: the status from the error's JSON description
/// (`errorCode` / 1000, as the C# SDK reads it) or else from its condition, the description
/// as the body, `retry-after` from the error's info.
fn rejection(error: Option<definitions::Error>) -> RawResponse {
    let Some(error) = error else {
        return RawResponse {
            status: 400,
            retry_after: None,
            date: None,
            body: Bytes::new(),
        };
    };
    let description = error.description.unwrap_or_default();
    let from_code = serde_json::from_str::<serde_json::Value>(&description)
        .ok()
        .and_then(|v| v.get("errorCode").and_then(serde_json::Value::as_u64))
        .and_then(|code| u16::try_from(code / 1000).ok())
        .filter(|status| (400..=599).contains(status));
    let status = from_code.unwrap_or_else(|| condition_status(&error.condition));
    let retry_after = error.info.as_ref().and_then(|info| {
        info.iter()
            .find(|(k, _)| k.0.eq_ignore_ascii_case(RETRY_AFTER))
            .and_then(|(_, v)| seconds(v))
    });
    let body = if serde_json::from_str::<serde_json::Value>(&description).is_ok() {
        Bytes::from(description.into_bytes())
    } else {
        let text = format!("{} ({})", description, condition_name(&error.condition));
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "message": text.trim() })).unwrap_or_default(),
        )
    };
    RawResponse {
        status,
        retry_after,
        date: None,
        body,
    }
}

/// The HTTP status an AMQP error condition stands for (as the Node SDK maps them).
fn condition_status(condition: &ErrorCondition) -> u16 {
    match condition {
        ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess) => 401,
        ErrorCondition::AmqpError(AmqpError::NotFound) => 404,
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded) => 429,
        ErrorCondition::AmqpError(AmqpError::InternalError) => 500,
        ErrorCondition::Custom(symbol) => match symbol.0.as_str() {
            "com.microsoft:device-container-throttled" => 429,
            "com.microsoft:timeout" => 503,
            "com.microsoft:argument-error" | "com.microsoft:argument-out-of-range" => 400,
            _ => 400,
        },
        _ => 400,
    }
}

fn condition_name(condition: &ErrorCondition) -> String {
    match condition {
        ErrorCondition::Custom(symbol) => symbol.0.clone(),
        other => format!("{other:?}"),
    }
}

/// Runs one connection step within [`STEP_TIMEOUT`].
async fn within<T>(
    operation: &'static str,
    step: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(STEP_TIMEOUT, step).await.map_err(|_| {
        Failure::Retry(Error::Io {
            operation,
            source: format!("no answer within {STEP_TIMEOUT:?}").into(),
        })
    })
}

/// Runs `step` unless the connection ends first (DPS closed or dropped it).
async fn while_open<T>(
    connection: &mut ConnectionHandle<()>,
    operation: &'static str,
    step: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::select! {
        done = step => Ok(done),
        closed = connection.on_close() => Err(Failure::Retry(Error::Io {
            operation,
            source: match closed {
                Ok(()) => "DPS closed the AMQP connection".into(),
                Err(e) => format!("the AMQP connection ended ({e})").into(),
            },
        })),
    }
}

fn malformed(operation: &'static str, reason: String) -> Error {
    Error::MalformedResponse { operation, reason }
}

/// A failure to open the connection, begin its session or attach a link: I/O is retried, the
/// rest (another protocol, a frame fe2o3-amqp cannot decode, a refused link) is not.
fn open_failure(operation: &'static str, error: &(dyn std::error::Error + 'static)) -> Failure {
    if let Some(io) = find_io(error) {
        return Failure::Retry(Error::Io {
            operation,
            source: io.to_string().into(),
        });
    }
    Failure::Fatal(Error::NotAmqp {
        reason: format!("{operation}: {error}"),
    })
}

fn send_failure(operation: &'static str, error: SendError) -> Failure {
    match error {
        SendError::MessageSizeExceeded(_) | SendError::MessageEncodeError => {
            Failure::Fatal(Error::config(format!("{operation}: {error}")))
        }
        other => Failure::Retry(Error::Io {
            operation,
            source: format!("the AMQP link failed ({other})").into(),
        }),
    }
}

fn recv_failure(operation: &'static str, error: RecvError) -> Failure {
    match error {
        RecvError::MessageDecode(e) => Failure::Fatal(malformed(
            operation,
            format!("its answer is not an AMQP message ({e})"),
        )),
        other => Failure::Retry(Error::Io {
            operation,
            source: format!("DPS closed the AMQP link ({other})").into(),
        }),
    }
}

/// The I/O error behind `error`, if that is what it is.
pub(super) fn find_io<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}

/// Decodes `bytes` as an AMQP message (or, failing that, an AMQP error, and a SASL frame) and
/// reads it as a DPS answer, as the AMQP transport does: for the fuzz target. The AMQP
/// library's own decoding runs guarded, as in the transport (serde_amqp 0.18 panics on some
/// hostile input; the transport turns that into an error), with the panic hook silenced around
/// it so that a fuzzer's abort-on-panic hook sees only panics of this crate's code.
#[doc(hidden)]
pub fn fuzz_amqp_reply(bytes: &[u8]) {
    use fe2o3_amqp::types::messaging::message::__private::Deserializable;
    let Ok(registration_id) = hsm_core::RegistrationId::new("fuzz") else {
        return;
    };
    let guarded = |decode: &dyn Fn()| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let _ = std::panic::catch_unwind(AssertUnwindSafe(decode));
        std::panic::set_hook(hook);
    };
    let mut message = None;
    guarded(&|| {
        let _ = sasl::fuzz_frame(bytes);
    });
    let mut error = None;
    {
        let message = &mut message;
        let error = &mut error;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            *message = serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
                .ok()
                .map(|Deserializable(m)| m);
            *error = serde_amqp::from_slice::<definitions::Error>(bytes).ok();
        }));
        std::panic::set_hook(hook);
    }
    if let Some(message) = message
        && let Ok(answer) = Answer::read(message)
    {
        let raw = RawResponse {
            status: 200,
            retry_after: answer.retry_after,
            date: None,
            body: answer.body,
        };
        let _ = crate::wire::parse_reply(&raw, Some("op"), &registration_id);
    }
    if let Some(error) = error {
        let raw = rejection(Some(error));
        let _ = crate::wire::parse_reply(&raw, None, &registration_id);
    }
}

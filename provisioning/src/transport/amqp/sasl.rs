//! The SASL layer between TLS and AMQP, as DPS runs it for each attestation: none for X.509
//! (the TLS client certificate is the credential), `PLAIN` with
//! `{idScope}/registrations/{registrationId}` and the SAS token for a symmetric key, and the
//! `TPM` mechanism for a TPM:
//!
//! 1. init: `0x00 ‖ idScope ‖ 0x00 ‖ registrationId ‖ 0x00 ‖ EK`;
//! 2. DPS's first challenge (control byte without `0x80`) is answered with `0x00 ‖ SRK`;
//! 3. the activation blob follows in segments, each `0x80 | sequence` (the last
//!    `0xC0 | sequence`) and its bytes, each but the last answered with `0x00`;
//! 4. the last is answered with `0x00 ‖ SAS token`, signed by the key the blob carried once
//!    the TPM has imported it; then the outcome.
//!
//! fe2o3-amqp negotiates the SASL protocol header and encodes and decodes the SASL frames; the
//! frames travel in its length-delimited framing. This module only decides what to answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use fe2o3_amqp::frames::sasl::{Frame, FrameCodec};
use fe2o3_amqp::transport::Transport;
use fe2o3_amqp::transport::protocol_header::ProtocolHeaderCodec;
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslResponse};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Encoder as _, FramedRead, FramedWrite};
use zeroize::Zeroizing;

use super::Failure;
use crate::transport::TpmHandshake;
use crate::{Error, ServiceError, net};

/// The largest activation blob accepted from the `TPM` challenges (DPS's are ~1 KiB).
pub(crate) const MAX_BLOB: usize = 16 * 1024;
/// The most challenges one `TPM` exchange may take.
const MAX_CHALLENGES: usize = 64;

/// How the device authenticates at the SASL layer.
pub(super) enum Mechanism<'a> {
    /// No SASL layer: X.509 (the TLS client certificate).
    None,
    /// `PLAIN` with the SAS token.
    Plain {
        username: &'a str,
        password: &'a str,
    },
    /// DPS's `TPM` mechanism.
    Tpm {
        id_scope: &'a str,
        registration_id: &'a str,
        tpm: &'a dyn TpmHandshake,
    },
}

impl Mechanism<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Plain { .. } => "PLAIN",
            Self::Tpm { .. } => "TPM",
        }
    }
}

/// The connection's byte stream, as fe2o3-amqp wants it (`Debug`), with the bytes read past
/// the SASL outcome (a server may send its AMQP header without waiting for ours) served first.
pub(super) struct Stream {
    pending: BytesMut,
    inner: net::Stream,
}

impl Stream {
    pub(super) fn new(inner: net::Stream) -> Self {
        Self {
            pending: BytesMut::new(),
            inner,
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            let bytes = self.pending.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs the SASL exchange for `mechanism` on `stream` (nothing for [`Mechanism::None`]) and
/// hands the stream back, ready for the AMQP protocol header.
pub(super) async fn authenticate(
    stream: net::Stream,
    mechanism: Mechanism<'_>,
) -> Result<Stream, Failure> {
    let stream = Stream::new(stream);
    if matches!(mechanism, Mechanism::None) {
        return Ok(stream);
    }
    let (reader, writer) = tokio::io::split(stream);
    let transport = Transport::<_, Frame>::negotiate_sasl_header(
        FramedWrite::new(writer, ProtocolHeaderCodec::new()),
        FramedRead::new(reader, ProtocolHeaderCodec::new()),
    )
    .await
    .map_err(|e| match super::find_io(&e) {
        Some(io) => io_failure(std::io::Error::new(io.kind(), io.to_string())),
        None => not_amqp(format!("the SASL protocol header: {e}")),
    })?;
    let (mut write, mut read) = transport.into_framed_codec();
    let mut exchange = Exchange::new(mechanism);
    loop {
        let bytes = match read.next().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Err(frame_error(e)),
            None => {
                return Err(Failure::Retry(Error::Io {
                    operation: "authenticate (SASL)",
                    source: "DPS closed the connection during SASL".into(),
                }));
            }
        };
        let frame = decode(bytes)?;
        match exchange.on_frame(frame).await? {
            Step::Send(frame) => {
                let mut out = BytesMut::new();
                FrameCodec {}
                    .encode(frame, &mut out)
                    .map_err(|e| not_amqp(format!("cannot encode a SASL frame: {e}")))?;
                write.send(out.freeze()).await.map_err(io_failure)?;
            }
            Step::Done => break,
        }
    }
    // What came after the outcome (the server's AMQP header, if it did not wait for ours)
    // is the AMQP layer's.
    let after = read.read_buffer().clone();
    let mut stream = read.into_inner().unsplit(write.into_inner());
    stream.pending = after;
    Ok(stream)
}

/// Decodes one SASL frame (the length-delimited body: the rest of the frame header, then the
/// performative), refusing what fe2o3-amqp's decoder would trip over.
fn decode(bytes: BytesMut) -> Result<Frame, Failure> {
    // Data offset, type and two ignored bytes come first.
    if bytes.len() < 4 {
        return Err(not_amqp(format!(
            "a SASL frame of {} bytes is too short",
            bytes.len() + 4
        )));
    }
    // The frame header's rest: data offset 2 (no extended header), type 1 (SASL).
    if bytes[0] != 2 || bytes[1] != 1 {
        return Err(not_amqp(format!(
            "a frame of type {} (data offset {}) where a SASL frame belongs",
            bytes[1], bytes[0]
        )));
    }
    // The performative, decoded from the slice (serde_amqp's reader of a byte stream, which
    // fe2o3-amqp's SASL codec uses, allocates whatever length a field claims before reading
    // it); and serde_amqp 0.18 can panic on hostile input (an element count that overflows):
    // a frame that cannot be decoded, not a crash of the device.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_amqp::from_slice::<Frame>(&bytes[4..])
    }));
    match decoded {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(e)) => Err(not_amqp(format!("an undecodable SASL frame: {e}"))),
        Err(_) => Err(not_amqp(
            "an undecodable SASL frame (the AMQP decoder failed on it)".into(),
        )),
    }
}

/// Decodes a SASL frame body as the client would: for the fuzz target.
pub(super) fn fuzz_frame(bytes: &[u8]) -> bool {
    decode(BytesMut::from(bytes)).is_ok()
}

/// What to do after a frame.
enum Step {
    Send(Frame),
    Done,
}

/// The client's side of one SASL exchange.
struct Exchange<'a> {
    mechanism: Mechanism<'a>,
    /// Whether the init frame was sent.
    started: bool,
    /// `TPM`: whether the SRK was sent.
    sent_srk: bool,
    /// `TPM`: the activation blob so far.
    blob: Zeroizing<Vec<u8>>,
    /// `TPM`: the sequence number the next segment must carry (two bits).
    sequence: u8,
    challenges: usize,
}

impl<'a> Exchange<'a> {
    fn new(mechanism: Mechanism<'a>) -> Self {
        Self {
            mechanism,
            started: false,
            sent_srk: false,
            blob: Zeroizing::new(Vec::new()),
            sequence: 0,
            challenges: 0,
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<Step, Failure> {
        match frame {
            Frame::Mechanisms(offered) if !self.started => {
                let name = self.mechanism.name();
                if !offered.sasl_server_mechanisms.0.iter().any(|m| m.0 == name) {
                    let offered: Vec<&str> = offered
                        .sasl_server_mechanisms
                        .0
                        .iter()
                        .map(|m| m.0.as_str())
                        .collect();
                    return Err(not_amqp(format!(
                        "it offers the SASL mechanisms {offered:?}, not {name}"
                    )));
                }
                self.started = true;
                Ok(Step::Send(Frame::Init(self.init())))
            }
            Frame::Challenge(challenge) if self.started => {
                self.challenges += 1;
                if self.challenges > MAX_CHALLENGES {
                    return Err(not_amqp("it sent too many SASL challenges".into()));
                }
                let response = self.on_challenge(challenge.challenge.into_vec()).await?;
                Ok(Step::Send(Frame::Response(SaslResponse {
                    response: Binary::from(response),
                })))
            }
            Frame::Outcome(outcome) if self.started => match outcome.code {
                SaslCode::Ok => Ok(Step::Done),
                code => Err(refused(code, self.mechanism.name())),
            },
            Frame::Mechanisms(_) => Err(not_amqp("it offered SASL mechanisms twice".into())),
            Frame::Init(_) | Frame::Response(_) => {
                Err(not_amqp("it sent a SASL frame only a client sends".into()))
            }
            Frame::Challenge(_) | Frame::Outcome(_) => Err(not_amqp(
                "it sent a SASL challenge or outcome before the mechanisms".into(),
            )),
        }
    }

    fn init(&self) -> SaslInit {
        match &self.mechanism {
            Mechanism::Plain { username, password } => {
                let mut response = Vec::with_capacity(username.len() + password.len() + 2);
                response.push(0);
                response.extend_from_slice(username.as_bytes());
                response.push(0);
                response.extend_from_slice(password.as_bytes());
                SaslInit {
                    mechanism: Symbol::from("PLAIN"),
                    initial_response: Some(Binary::from(response)),
                    hostname: None,
                }
            }
            Mechanism::Tpm {
                id_scope,
                registration_id,
                tpm,
            } => {
                let ek = tpm.endorsement_key();
                let mut response =
                    Vec::with_capacity(3 + id_scope.len() + registration_id.len() + ek.len());
                response.push(0);
                response.extend_from_slice(id_scope.as_bytes());
                response.push(0);
                response.extend_from_slice(registration_id.as_bytes());
                response.push(0);
                response.extend_from_slice(ek);
                SaslInit {
                    mechanism: Symbol::from("TPM"),
                    initial_response: Some(Binary::from(response)),
                    hostname: Some(format!("{id_scope}/registrations/{registration_id}")),
                }
            }
            Mechanism::None => SaslInit {
                mechanism: Symbol::from("ANONYMOUS"),
                initial_response: None,
                hostname: None,
            },
        }
    }

    /// The answer to one challenge (`TPM` only).
    async fn on_challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let Mechanism::Tpm { tpm, .. } = &self.mechanism else {
            return Err(not_amqp(format!(
                "it sent a SASL challenge to {}",
                self.mechanism.name()
            )));
        };
        let Some((&control, data)) = challenge.split_first() else {
            return Err(not_amqp("it sent an empty TPM challenge".into()));
        };
        if control & 0x80 == 0 {
            // The first challenge: the SRK, once.
            if self.sent_srk {
                return Err(not_amqp("it asked for the storage root key twice".into()));
            }
            self.sent_srk = true;
            let srk = tpm.storage_root_key();
            let mut response = Vec::with_capacity(1 + srk.len());
            response.push(0);
            response.extend_from_slice(srk);
            return Ok(response);
        }
        if !self.sent_srk {
            return Err(not_amqp(
                "it sent the activation blob before asking for the storage root key".into(),
            ));
        }
        let sequence = control & 0x03;
        if sequence != self.sequence {
            return Err(not_amqp(format!(
                "TPM challenge segment {sequence} arrived where {} was due",
                self.sequence
            )));
        }
        self.sequence = (self.sequence + 1) & 0x03;
        if self.blob.len() + data.len() > MAX_BLOB {
            return Err(not_amqp(format!(
                "its TPM activation blob exceeds {MAX_BLOB} bytes"
            )));
        }
        self.blob.extend_from_slice(data);
        if control & 0x40 == 0 {
            return Ok(vec![0]);
        }
        let blob = std::mem::take(&mut *self.blob);
        tracing::info!(
            bytes = blob.len(),
            "TPM challenge (SASL): activating the identity key"
        );
        let token = tpm.answer(blob).await.map_err(Failure::Fatal)?;
        let token = token.expose();
        let mut response = Vec::with_capacity(1 + token.len());
        response.push(0);
        response.extend_from_slice(token.as_bytes());
        Ok(response)
    }
}

/// A SASL outcome other than `ok`: `auth` refuses the credential; `sys-temp` and `sys` may
/// pass; `sys-perm` will not.
fn refused(code: SaslCode, mechanism: &str) -> Failure {
    let error = |status: u16, message: String| ServiceError {
        status,
        message: Some(message),
        ..ServiceError::default()
    };
    match code {
        SaslCode::Auth => Failure::Fatal(Error::Unauthorized {
            error: error(401, format!("SASL {mechanism}: authentication failed")),
        }),
        SaslCode::SysPerm => Failure::Fatal(Error::Rejected {
            error: error(
                400,
                format!("SASL {mechanism}: a permanent system error (sys-perm)"),
            ),
        }),
        SaslCode::Sys | SaslCode::SysTemp | SaslCode::Ok => Failure::Retry(Error::Transient {
            attempts: 1,
            error: error(503, format!("SASL {mechanism}: a system error ({code:?})")),
        }),
    }
}

fn not_amqp(reason: String) -> Failure {
    Failure::Fatal(Error::NotAmqp { reason })
}

fn io_failure(error: std::io::Error) -> Failure {
    super::super::classify_io("authenticate (SASL)", error)
}

fn frame_error(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::InvalidData {
        // The length-delimited codec refusing a frame (too long, a bad length).
        not_amqp(format!("a SASL frame: {error}"))
    } else {
        io_failure(error)
    }
}

//! The hub connection's task: it owns the [`Link`], and every [`HubClient`](super::HubClient)
//! call is a [`Command`] to it. It matches PUBACKs to telemetry by packet id and twin
//! responses to requests by `$rid`, subscribes to twin responses before the first twin
//! request (and again when the hub forgot the subscription), pings the hub when the line is
//! idle, makes a new connection with a fresh SAS token before the old one expires, and, when
//! the connection drops, connects again and sends what was not acknowledged. Every wait has a
//! deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::link::{Link, ReadError, Target, lost};
use super::wire;
use crate::{Error, HubSasSigner};

/// What a [`HubClient`](super::HubClient) asks of the task.
#[derive(Debug)]
pub(super) enum Command {
    /// Publish at QoS 1 and wait for the PUBACK.
    Send {
        topic: String,
        payload: Bytes,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// A twin request, answered on `$iothub/twin/res/...`.
    Twin {
        request: TwinRequest,
        done: oneshot::Sender<Result<TwinAnswer, Error>>,
    },
    /// Disconnect and end the task.
    Close { done: oneshot::Sender<()> },
}

/// A twin request.
#[derive(Debug)]
pub(super) enum TwinRequest {
    Get,
    PatchReported(Bytes),
}

impl TwinRequest {
    fn operation(&self) -> &'static str {
        match self {
            Self::Get => "twin GET",
            Self::PatchReported(_) => "reported-properties PATCH",
        }
    }
}

/// The hub's answer to a twin request.
#[derive(Debug)]
pub(super) struct TwinAnswer {
    pub(super) status: u16,
    pub(super) version: Option<u64>,
    pub(super) body: Bytes,
}

/// How the device proves itself at each CONNECT.
#[derive(Debug)]
pub(super) enum Credential {
    /// The TLS client certificate (already in the TLS configuration); no password.
    Certificate,
    /// A SAS token signed in the driver for each connection.
    Sas(HubSasSigner),
}

/// Everything the task needs, checked by the builder.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) target: Target,
    pub(super) credential: Credential,
    pub(super) sas_ttl: Duration,
    pub(super) renewal_margin: Duration,
    /// Deadline of each step and each request.
    pub(super) timeout: Duration,
    /// Connection attempts for each (re)connection, transient failures only.
    pub(super) attempts: u32,
}

/// Starts the task once the first connection is up.
pub(super) async fn start(
    settings: Settings,
) -> Result<(mpsc::Sender<Command>, tokio::task::JoinHandle<()>), Error> {
    let mut task = Task {
        settings: Arc::new(settings),
        link: None,
        renew_at: None,
        next_pkid: 0,
        next_rid: 0,
        telemetry: HashMap::new(),
        twin: HashMap::new(),
        subscription: Subscription::None,
        last_sent: Instant::now(),
        ping_sent: None,
        connected_at: Instant::now(),
        quick_drops: 0,
    };
    task.connect().await?;
    let (commands, receiver) = mpsc::channel(64);
    Ok((commands, tokio::spawn(task.run(receiver))))
}

/// The twin-response subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscription {
    None,
    Requested(u16),
    Granted,
}

struct InFlight {
    publish: Publish,
    deadline: Instant,
    done: oneshot::Sender<Result<(), Error>>,
}

struct TwinInFlight {
    topic: String,
    payload: Bytes,
    operation: &'static str,
    /// Sent on the current connection (else waiting for the subscription, or for a new
    /// connection).
    sent: bool,
    deadline: Instant,
    done: oneshot::Sender<Result<TwinAnswer, Error>>,
}

struct Task {
    settings: Arc<Settings>,
    link: Option<Link>,
    renew_at: Option<Instant>,
    next_pkid: u16,
    next_rid: u64,
    telemetry: HashMap<u16, InFlight>,
    twin: HashMap<String, TwinInFlight>,
    subscription: Subscription,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// When the current connection was made, and how many connections in a row dropped
    /// soon after: a device whose id another client also uses is kicked by each of its
    /// connections, and must not fight it forever.
    connected_at: Instant,
    quick_drops: u32,
}

/// A connection that drops within this time of being made counts as a quick drop.
const QUICK_DROP: Duration = Duration::from_secs(10);

impl Task {
    fn hub(&self) -> &str {
        &self.settings.target.hub
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let wake = self.next_wake();
            let Some(link) = self.link.as_mut() else {
                // No connection (it dropped and could not be made again): wait for a command,
                // which tries again.
                match commands.recv().await {
                    None => return,
                    Some(Command::Close { done }) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => {
                        if let Err(e) = self.connect().await {
                            refuse(command, e);
                            continue;
                        }
                        self.submit(command).await;
                        continue;
                    }
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    None => {
                        self.close().await;
                        return;
                    }
                    Some(Command::Close { done }) => {
                        self.close().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.submit(command).await,
                },
                packet = link.read() => match packet {
                    Ok(Some(packet)) => self.incoming(packet).await,
                    Ok(None) => self.dropped(Error::Io {
                        operation: "hub connection",
                        source: "the hub closed the connection".into(),
                    }).await,
                    Err(ReadError::Io(e)) => self.dropped(lost("hub connection", e)).await,
                    Err(e @ ReadError::Codec(_)) => self.dropped(Error::NotMqtt {
                        reason: e.to_string(),
                    }).await,
                },
                () = tokio::time::sleep_until(wake) => self.tick().await,
            }
        }
    }

    /// The next moment something is due: a ping, a ping's answer, the SAS renewal, a
    /// request's deadline.
    fn next_wake(&self) -> Instant {
        let keep_alive = self.settings.target.keep_alive;
        let mut wake = match self.ping_sent {
            Some(sent) => sent + self.settings.timeout,
            // A keep-alive of zero turns pings off (as in MQTT).
            None if keep_alive.is_zero() => Instant::now() + Duration::from_secs(3600),
            None => self.last_sent + keep_alive,
        };
        let deadlines = self
            .telemetry
            .values()
            .map(|t| t.deadline)
            .chain(self.twin.values().map(|t| t.deadline))
            .chain(self.renew_at);
        for at in deadlines {
            wake = wake.min(at);
        }
        wake
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let after = self.settings.timeout;
        let late: Vec<u16> = self
            .telemetry
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(pkid, _)| *pkid)
            .collect();
        for pkid in late {
            if let Some(t) = self.telemetry.remove(&pkid) {
                let _ = t.done.send(Err(Error::HubTimeout {
                    operation: "telemetry acknowledgement (PUBACK)",
                    after,
                }));
            }
        }
        let late: Vec<String> = self
            .twin
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(rid, _)| rid.clone())
            .collect();
        for rid in late {
            if let Some(t) = self.twin.remove(&rid) {
                let _ = t.done.send(Err(Error::HubTimeout {
                    operation: t.operation,
                    after,
                }));
            }
        }
        if self.ping_sent.is_some_and(|sent| sent + after <= now) {
            return self
                .dropped(Error::HubTimeout {
                    operation: "ping (PINGRESP)",
                    after,
                })
                .await;
        }
        if self.renew_at.is_some_and(|at| at <= now) {
            tracing::debug!(hub = %self.hub(), "SAS token about to expire: connecting again with a new one");
            if let Some(link) = self.link.take() {
                link.close().await;
            }
            if let Err(e) = self.connect().await {
                self.fail_all(e);
            }
            return;
        }
        let keep_alive = self.settings.target.keep_alive;
        if self.ping_sent.is_none() && !keep_alive.is_zero() && self.last_sent + keep_alive <= now {
            self.ping_sent = Some(now);
            self.write_or_drop(Packet::PingReq).await;
        }
    }

    /// Makes a connection (attempting again on transient failures), then sends what is
    /// waiting.
    async fn connect(&mut self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.connect_once().await {
                Ok(link) => {
                    if !link.session_present {
                        self.subscription = Subscription::None;
                    }
                    self.link = Some(link);
                    self.last_sent = Instant::now();
                    self.connected_at = self.last_sent;
                    self.ping_sent = None;
                    match self.resend().await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            self.link = None;
                            e
                        }
                    }
                }
                Err(e) => e,
            };
            if !transient(&error) || attempt >= self.settings.attempts {
                return Err(error);
            }
            let wait = backoff(attempt);
            tracing::debug!(hub = %self.hub(), attempt, %error, ?wait, "hub connection failed; trying again");
            tokio::time::sleep(wait).await;
        }
    }

    /// What the last connection did not see through: telemetry again (a duplicate at worst:
    /// QoS 1 is at least once), twin requests again (their answers are lost).
    async fn resend(&mut self) -> Result<(), Error> {
        let resend: Vec<Publish> = self
            .telemetry
            .values()
            .map(|t| {
                let mut publish = t.publish.clone();
                publish.dup = true;
                publish
            })
            .collect();
        for publish in resend {
            self.send(Packet::Publish(publish)).await?;
        }
        for twin in self.twin.values_mut() {
            twin.sent = false;
        }
        self.send_twin_requests().await
    }

    async fn connect_once(&mut self) -> Result<Link, Error> {
        let settings = self.settings.clone();
        let (password, renew_at) = match &settings.credential {
            Credential::Certificate => (None, None),
            Credential::Sas(signer) => {
                let token = signer.token(settings.sas_ttl).await?;
                let renew = settings.sas_ttl.saturating_sub(settings.renewal_margin);
                (
                    Some(Zeroizing::new(token.expose().to_owned())),
                    Some(Instant::now() + renew),
                )
            }
        };
        let link = Link::open(&settings.target, password.as_ref().map(|p| p.as_str())).await?;
        self.renew_at = renew_at;
        tracing::debug!(hub = %self.hub(), session_present = link.session_present, "connected to the hub");
        Ok(link)
    }

    /// The connection failed: connect again; if that fails too, every waiting request fails
    /// with the cause.
    async fn dropped(&mut self, cause: Error) {
        self.link = None;
        if self.connected_at.elapsed() < QUICK_DROP {
            self.quick_drops += 1;
        } else {
            self.quick_drops = 1;
        }
        if self.quick_drops > self.settings.attempts {
            tracing::warn!(hub = %self.hub(), error = %cause, drops = self.quick_drops, "the hub keeps closing the connection (is another client using this device id?)");
            self.quick_drops = 0;
            return self.fail_all(cause);
        }
        if self.quick_drops > 1 {
            tokio::time::sleep(backoff(self.quick_drops - 1)).await;
        }
        tracing::debug!(hub = %self.hub(), error = %cause, "hub connection lost; connecting again");
        if let Err(e) = self.connect().await {
            tracing::warn!(hub = %self.hub(), error = %e, cause = %cause, "cannot connect to the hub again");
            self.fail_all(e);
        }
    }

    /// Fails every waiting request with `cause`.
    fn fail_all(&mut self, cause: Error) {
        self.link = None;
        let cause = Arc::new(cause);
        let hub = self.hub().to_owned();
        let lost = || Error::HubConnectionLost {
            hub: hub.clone(),
            cause: cause.clone(),
        };
        for (_, t) in self.telemetry.drain() {
            let _ = t.done.send(Err(lost()));
        }
        for (_, t) in self.twin.drain() {
            let _ = t.done.send(Err(lost()));
        }
    }

    async fn submit(&mut self, command: Command) {
        let deadline = Instant::now() + self.settings.timeout;
        match command {
            Command::Send {
                topic,
                payload,
                done,
            } => {
                let Some(pkid) = self.next_pkid() else {
                    let _ = done.send(Err(Error::config(
                        "65,535 telemetry messages are already waiting for the hub",
                    )));
                    return;
                };
                let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
                publish.pkid = pkid;
                self.telemetry.insert(
                    pkid,
                    InFlight {
                        publish: publish.clone(),
                        deadline,
                        done,
                    },
                );
                self.write_or_drop(Packet::Publish(publish)).await;
            }
            Command::Twin { request, done } => {
                self.next_rid += 1;
                let rid = self.next_rid.to_string();
                let operation = request.operation();
                let (topic, payload) = match request {
                    TwinRequest::Get => (wire::twin_get_topic(&rid), Bytes::from_static(b" ")),
                    TwinRequest::PatchReported(body) => (wire::twin_patch_topic(&rid), body),
                };
                self.twin.insert(
                    rid,
                    TwinInFlight {
                        topic,
                        payload,
                        operation,
                        sent: false,
                        deadline,
                        done,
                    },
                );
                if let Err(e) = self.send_twin_requests().await {
                    self.dropped(e).await;
                }
            }
            Command::Close { done } => {
                self.close().await;
                let _ = done.send(());
            }
        }
    }

    /// Sends the twin requests not sent on this connection, once the hub has granted the
    /// response subscription (subscribing first if need be).
    async fn send_twin_requests(&mut self) -> Result<(), Error> {
        if self.twin.is_empty() || self.link.is_none() {
            return Ok(());
        }
        match self.subscription {
            Subscription::Granted => {}
            Subscription::Requested(_) => return Ok(()),
            Subscription::None => {
                let Some(pkid) = self.next_pkid() else {
                    return Ok(());
                };
                let mut subscribe = Subscribe::new(wire::TWIN_RESPONSES, QoS::AtMostOnce);
                subscribe.pkid = pkid;
                self.subscription = Subscription::Requested(pkid);
                return self.send(Packet::Subscribe(subscribe)).await;
            }
        }
        let unsent: Vec<Publish> = self
            .twin
            .values_mut()
            .filter(|t| !t.sent)
            .map(|t| {
                t.sent = true;
                Publish::new(t.topic.clone(), QoS::AtMostOnce, t.payload.to_vec())
            })
            .collect();
        for publish in unsent {
            self.send(Packet::Publish(publish)).await?;
        }
        Ok(())
    }

    async fn incoming(&mut self, packet: Packet) {
        match packet {
            Packet::PubAck(ack) => {
                if let Some(t) = self.telemetry.remove(&ack.pkid) {
                    let _ = t.done.send(Ok(()));
                }
            }
            Packet::SubAck(ack) if self.subscription == Subscription::Requested(ack.pkid) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    self.subscription = Subscription::None;
                    for (_, t) in self.twin.drain() {
                        let _ = t.done.send(Err(Error::HubSubscription {
                            filter: wire::TWIN_RESPONSES,
                        }));
                    }
                    return;
                }
                self.subscription = Subscription::Granted;
                if let Err(e) = self.send_twin_requests().await {
                    self.dropped(e).await;
                }
            }
            Packet::Publish(publish) => {
                if publish.qos == QoS::AtLeastOnce {
                    self.write_or_drop(Packet::PubAck(PubAck::new(publish.pkid)))
                        .await;
                }
                match wire::twin_response_topic(&publish.topic) {
                    Some(answer) => match self.twin.remove(&answer.rid) {
                        Some(t) => {
                            let _ = t.done.send(Ok(TwinAnswer {
                                status: answer.status,
                                version: answer.version,
                                body: publish.payload,
                            }));
                        }
                        None => {
                            tracing::debug!(rid = %answer.rid, "a twin response to no request");
                        }
                    },
                    None => {
                        tracing::debug!(topic = %hsm_core::untrusted::printable(&publish.topic), "message from the hub not handled");
                    }
                }
            }
            Packet::PingResp => self.ping_sent = None,
            _ => {}
        }
    }

    /// Writes a packet on the current connection.
    async fn send(&mut self, packet: Packet) -> Result<(), Error> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        link.write(packet)
            .await
            .map_err(|e| lost("write to the hub", e))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Writes a packet; a failed write is a lost connection (connected again, or every
    /// waiting request failed).
    async fn write_or_drop(&mut self, packet: Packet) {
        if let Err(e) = self.send(packet).await {
            self.dropped(e).await;
        }
    }

    async fn close(&mut self) {
        if let Some(link) = self.link.take() {
            link.close().await;
        }
        for (_, t) in self.telemetry.drain() {
            let _ = t.done.send(Err(Error::HubClosed));
        }
        for (_, t) in self.twin.drain() {
            let _ = t.done.send(Err(Error::HubClosed));
        }
    }

    /// A packet id not in use (MQTT's are 1 to 65,535).
    fn next_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let in_use = self.telemetry.contains_key(&self.next_pkid)
                || self.subscription == Subscription::Requested(self.next_pkid);
            if !in_use {
                return Some(self.next_pkid);
            }
        }
        None
    }
}

/// Answers a command that could not be carried out.
fn refuse(command: Command, error: Error) {
    match command {
        Command::Send { done, .. } => {
            let _ = done.send(Err(error));
        }
        Command::Twin { done, .. } => {
            let _ = done.send(Err(error));
        }
        Command::Close { done } => {
            let _ = done.send(());
        }
    }
}

/// Failures worth another attempt: the network, an unavailable hub, a step that timed out.
fn transient(error: &Error) -> bool {
    matches!(
        error,
        Error::Io { .. } | Error::HubUnavailable { .. } | Error::HubTimeout { .. }
    )
}

/// 0.5 s, 1 s, 2 s, ... at most 8 s, with up to a quarter more of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
    let mut jitter = [0u8; 2];
    let _ = getrandom::fill(&mut jitter);
    base + base / 4 * u32::from(u16::from_le_bytes(jitter)) / u32::from(u16::MAX)
}

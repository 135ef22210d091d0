//! The hub connection's task: it owns the [`Link`], and every [`HubClient`](super::HubClient)
//! call is a [`Command`] to it. It matches PUBACKs to telemetry by packet id and the answers
//! to twin and certificate requests by `$rid`, subscribes to a request kind's responses
//! before its first request (and again when the hub forgot the subscription), pings the hub
//! when the line is idle, makes a new connection with a fresh SAS token before the old one
//! expires, and, when the connection drops, connects again and sends what was not
//! acknowledged. It also changes the credential it connects with, going back to the old one
//! when the hub refuses the new. Every wait has a deadline.

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
    /// A request answered on a response topic, matched by `$rid`.
    Request {
        request: HubRequest,
        done: oneshot::Sender<Result<Answer, Error>>,
    },
    /// Connect with another credential from now on; back to the old one if the hub refuses
    /// it.
    Replace {
        tls: Arc<rustls::ClientConfig>,
        credential: Credential,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// Disconnect and end the task.
    Close { done: oneshot::Sender<()> },
}

/// A request answered on a response topic.
#[derive(Debug)]
pub(super) enum HubRequest {
    TwinGet,
    PatchReported(Bytes),
    /// Certificate management (preview): `$iothub/credentials/POST/issueCertificate/`, answered
    /// `202 Accepted` and then, on the same `$rid`, with the chain.
    IssueCertificate(Bytes),
}

impl HubRequest {
    pub(super) fn operation(&self) -> &'static str {
        match self {
            Self::TwinGet => "twin GET",
            Self::PatchReported(_) => "reported-properties PATCH",
            Self::IssueCertificate(_) => "certificate request",
        }
    }

    fn channel(&self) -> wire::Channel {
        match self {
            Self::TwinGet | Self::PatchReported(_) => wire::Channel::Twin,
            Self::IssueCertificate(_) => wire::Channel::Credentials,
        }
    }
}

/// The hub's (final) answer to a request.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) version: Option<u64>,
    pub(super) body: Bytes,
}

/// How the device proves itself at each CONNECT.
#[derive(Clone, Debug)]
pub(super) enum Credential {
    /// The TLS client certificate (already in the TLS configuration); no password.
    Certificate,
    /// A SAS token signed in the driver for each connection.
    Sas(HubSasSigner),
}

/// Everything the task needs, checked by the builder.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) target: Target,
    pub(super) credential: Credential,
    pub(super) sas_ttl: Duration,
    pub(super) renewal_margin: Duration,
    /// Deadline of each step and each request.
    pub(super) timeout: Duration,
    /// Connection attempts for each (re)connection, transient failures only.
    pub(super) attempts: u32,
    /// How long a certificate request may take after the hub accepted it.
    pub(super) certificate_timeout: Duration,
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
        requests: HashMap::new(),
        subscriptions: HashMap::new(),
        last_sent: Instant::now(),
        ping_sent: None,
        connected_at: Instant::now(),
        quick_drops: 0,
    };
    task.connect().await?;
    let (commands, receiver) = mpsc::channel(64);
    Ok((commands, tokio::spawn(task.run(receiver))))
}

/// A response subscription.
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

struct RequestInFlight {
    channel: wire::Channel,
    topic: String,
    payload: Bytes,
    operation: &'static str,
    /// Sent on the current connection (else waiting for the subscription, or for a new
    /// connection).
    sent: bool,
    /// The hub accepted it (`202`) and will answer later on the same `$rid`.
    accepted: bool,
    deadline: Instant,
    done: oneshot::Sender<Result<Answer, Error>>,
}

struct Task {
    settings: Arc<Settings>,
    link: Option<Link>,
    renew_at: Option<Instant>,
    next_pkid: u16,
    next_rid: u64,
    telemetry: HashMap<u16, InFlight>,
    requests: HashMap<String, RequestInFlight>,
    /// Each response channel's subscription; none is `Subscription::None`.
    subscriptions: HashMap<wire::Channel, Subscription>,
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
            .chain(self.requests.values().map(|t| t.deadline))
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
            .requests
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(rid, _)| rid.clone())
            .collect();
        for rid in late {
            if let Some(t) = self.requests.remove(&rid) {
                let after = if t.accepted {
                    self.settings.certificate_timeout
                } else {
                    after
                };
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
                        self.subscriptions.clear();
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
    /// QoS 1 is at least once), requests again (their answers are lost; a certificate request
    /// sent again replaces the first, as its body says).
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
        for request in self.requests.values_mut() {
            request.sent = false;
            request.accepted = false;
        }
        self.send_requests().await
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
        for (_, t) in self.requests.drain() {
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
            Command::Request { request, done } => {
                self.next_rid += 1;
                // Four digits at least: certificate requests want ids of 4 to 36 characters.
                let rid = format!("{:04}", self.next_rid);
                let operation = request.operation();
                let channel = request.channel();
                let (topic, payload) = match request {
                    HubRequest::TwinGet => (wire::twin_get_topic(&rid), Bytes::from_static(b" ")),
                    HubRequest::PatchReported(body) => (wire::twin_patch_topic(&rid), body),
                    HubRequest::IssueCertificate(body) => {
                        (wire::issue_certificate_topic(&rid), body)
                    }
                };
                self.requests.insert(
                    rid,
                    RequestInFlight {
                        channel,
                        topic,
                        payload,
                        operation,
                        sent: false,
                        accepted: false,
                        deadline,
                        done,
                    },
                );
                if let Err(e) = self.send_requests().await {
                    self.dropped(e).await;
                }
            }
            Command::Replace {
                tls,
                credential,
                done,
            } => {
                let result = self.replace(tls, credential).await;
                let _ = done.send(result);
            }
            Command::Close { done } => {
                self.close().await;
                let _ = done.send(());
            }
        }
    }

    /// Connects with another credential. When the hub refuses it (or it cannot be used),
    /// connects again with the one before and returns why.
    async fn replace(
        &mut self,
        tls: Arc<rustls::ClientConfig>,
        credential: Credential,
    ) -> Result<(), Error> {
        let old = self.settings.clone();
        let mut new = Settings::clone(&old);
        new.target.tls = tls;
        new.credential = credential;
        if let Some(link) = self.link.take() {
            link.close().await;
        }
        self.settings = Arc::new(new);
        match self.connect().await {
            Ok(()) => {
                tracing::info!(hub = %self.hub(), "connected with the new credential");
                Ok(())
            }
            Err(refused) => {
                tracing::warn!(hub = %self.hub(), error = %refused, "the new credential was not accepted: connecting with the old one");
                self.settings = old;
                if let Err(e) = self.connect().await {
                    self.fail_all(e);
                }
                Err(refused)
            }
        }
    }

    /// Sends the requests not sent on this connection, each once the hub has granted its
    /// response subscription (subscribing first if need be).
    async fn send_requests(&mut self) -> Result<(), Error> {
        if self.requests.is_empty() || self.link.is_none() {
            return Ok(());
        }
        let mut channels: Vec<wire::Channel> = self
            .requests
            .values()
            .filter(|r| !r.sent)
            .map(|r| r.channel)
            .collect();
        channels.sort_unstable();
        channels.dedup();
        let mut ready = Vec::new();
        for channel in channels {
            match self
                .subscriptions
                .get(&channel)
                .copied()
                .unwrap_or(Subscription::None)
            {
                Subscription::Granted => ready.push(channel),
                Subscription::Requested(_) => {}
                Subscription::None => {
                    let Some(pkid) = self.next_pkid() else {
                        continue;
                    };
                    let mut subscribe = Subscribe::new(channel.filter(), QoS::AtMostOnce);
                    subscribe.pkid = pkid;
                    self.subscriptions
                        .insert(channel, Subscription::Requested(pkid));
                    self.send(Packet::Subscribe(subscribe)).await?;
                }
            }
        }
        let unsent: Vec<Publish> = self
            .requests
            .values_mut()
            .filter(|t| !t.sent && ready.contains(&t.channel))
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
            Packet::SubAck(ack) => {
                let Some(channel) = self
                    .subscriptions
                    .iter()
                    .find(|(_, s)| **s == Subscription::Requested(ack.pkid))
                    .map(|(c, _)| *c)
                else {
                    return;
                };
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    self.subscriptions.remove(&channel);
                    let refused: Vec<String> = self
                        .requests
                        .iter()
                        .filter(|(_, r)| r.channel == channel)
                        .map(|(rid, _)| rid.clone())
                        .collect();
                    for rid in refused {
                        if let Some(t) = self.requests.remove(&rid) {
                            let _ = t.done.send(Err(Error::HubSubscription {
                                filter: channel.filter(),
                            }));
                        }
                    }
                    return;
                }
                self.subscriptions.insert(channel, Subscription::Granted);
                if let Err(e) = self.send_requests().await {
                    self.dropped(e).await;
                }
            }
            Packet::Publish(publish) => {
                if publish.qos == QoS::AtLeastOnce {
                    self.write_or_drop(Packet::PubAck(PubAck::new(publish.pkid)))
                        .await;
                }
                match wire::response_topic(&publish.topic) {
                    Some(answer) => {
                        let Some(request) = self.requests.get_mut(&answer.rid) else {
                            tracing::debug!(rid = %answer.rid, "a response to no request");
                            return;
                        };
                        if request.channel != answer.channel {
                            tracing::debug!(rid = %answer.rid, "a response on another request kind's topic");
                            return;
                        }
                        // Accepted: the answer follows on the same $rid.
                        if answer.status == 202 && answer.channel == wire::Channel::Credentials {
                            request.accepted = true;
                            request.deadline = Instant::now() + self.settings.certificate_timeout;
                            tracing::debug!(rid = %answer.rid, "certificate request accepted");
                            return;
                        }
                        if let Some(t) = self.requests.remove(&answer.rid) {
                            let _ = t.done.send(Ok(Answer {
                                status: answer.status,
                                version: answer.version,
                                body: publish.payload,
                            }));
                        }
                    }
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
        for (_, t) in self.requests.drain() {
            let _ = t.done.send(Err(Error::HubClosed));
        }
    }

    /// A packet id not in use (MQTT's are 1 to 65,535).
    fn next_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let in_use = self.telemetry.contains_key(&self.next_pkid)
                || self
                    .subscriptions
                    .values()
                    .any(|s| *s == Subscription::Requested(self.next_pkid));
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
        Command::Request { done, .. } => {
            let _ = done.send(Err(error));
        }
        Command::Replace { done, .. } => {
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
        Error::Io { .. }
            | Error::HubUnavailable { .. }
            | Error::HubTimeout { .. }
            | Error::Proxy {
                status: None | Some(502..=504),
                ..
            }
    )
}

/// 0.5 s, 1 s, 2 s, ... at most 8 s, with up to a quarter more of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
    let mut jitter = [0u8; 2];
    let _ = getrandom::fill(&mut jitter);
    base + base / 4 * u32::from(u16::from_le_bytes(jitter)) / u32::from(u16::MAX)
}

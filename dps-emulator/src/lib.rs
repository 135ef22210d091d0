#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod admin;
mod amqp;
mod clock;
mod config;
mod enrollment;
mod error;
mod faults;
mod files;
mod https;
mod hub;
mod listener;
mod mqtt;
mod sas;
mod serve;
mod service;
mod store;
mod tls;
mod websocket;
mod x509;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use config::Config;
pub use enrollment::{
    AllocationPolicy, Enrollment, EnrollmentGroup, Enrollments, GroupAttestation,
    IndividualAttestation, KeyPair, Thumbprint, X509Match,
};
pub use error::Error;
pub use faults::{Fault, FaultKind, FaultTarget};
pub use files::{MAX_FILE, default_ca_path};
pub use https::{Limits, MAX_BODY, fuzz_route};
pub use hub::{HUB_API_VERSIONS, HubRefusal, RefusalReason, TelemetryMessage};
pub use mqtt::fuzz_topic;
pub use sas::{SasError, SasToken};
pub use serve::serve_until_ctrl_c;
pub use service::{API_VERSIONS, AttestationKind, DeviceStatus, RegistrationRecord};

use service::{Service, Settings};

/// The ID scope the emulator uses unless told otherwise.
pub const DEFAULT_ID_SCOPE: &str = "0ne00000EMU";

/// Configures and starts an [`Emulator`].
#[derive(Debug)]
pub struct EmulatorBuilder {
    settings: Settings,
    enrollments: Enrollments,
    https: SocketAddr,
    mqtt: Option<SocketAddr>,
    amqp: Option<SocketAddr>,
    ca: Option<(String, String)>,
    server_names: Vec<String>,
    state_file: Option<PathBuf>,
    faults: Vec<Fault>,
    limits: Limits,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            settings: Settings {
                id_scope: DEFAULT_ID_SCOPE.to_owned(),
                iot_hubs: vec!["emulated-hub.azure-devices.net".to_owned()],
                allocation: AllocationPolicy::Hashed,
                retry_after: 1,
                assigning_polls: 0,
                issued_certificate_validity: Duration::from_secs(30 * 86_400),
                clock_offset: 0,
                hub_certificate_management: true,
            },
            enrollments: Enrollments::default(),
            https: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            amqp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ca: None,
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            state_file: None,
            faults: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl EmulatorBuilder {
    /// The ID scope devices must use (default [`DEFAULT_ID_SCOPE`]).
    #[must_use]
    pub fn id_scope(mut self, scope: impl Into<String>) -> Self {
        self.settings.id_scope = scope.into();
        self
    }

    /// The IoT Hubs devices are allocated to (default one, `emulated-hub.azure-devices.net`).
    #[must_use]
    pub fn iot_hubs<I, S>(mut self, hubs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.iot_hubs = hubs.into_iter().map(Into::into).collect();
        self
    }

    /// How devices are spread over the hubs (default hashed).
    #[must_use]
    pub fn allocation(mut self, policy: AllocationPolicy) -> Self {
        self.settings.allocation = policy;
        self
    }

    /// The `Retry-After` the emulator asks for while assigning, in seconds (default 1; 0 for
    /// tests).
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.settings.retry_after = seconds;
        self
    }

    /// How many polls answer `assigning` before the result (default 0).
    #[must_use]
    pub fn assigning_polls(mut self, polls: u32) -> Self {
        self.settings.assigning_polls = polls;
        self
    }

    /// How long certificates issued from CSRs are valid (default 30 days).
    #[must_use]
    pub fn issued_certificate_validity(mut self, validity: Duration) -> Self {
        self.settings.issued_certificate_validity = validity;
        self
    }

    /// Runs the emulator's clock `seconds` ahead of the system's (negative: behind) when it
    /// checks SAS token expiry, DPS's and the hubs', and in the `Date` of its HTTPS answers:
    /// as a device whose clock is behind (or ahead) sees the service. Default 0.
    #[must_use]
    pub fn clock_offset(mut self, seconds: i64) -> Self {
        self.settings.clock_offset = seconds;
        self
    }

    /// Whether the hubs answer certificate requests (IoT Hub's certificate management,
    /// preview; default on). Off, they answer `403` with error code `403010`, as a hub
    /// without it does, and devices renew through DPS.
    #[must_use]
    pub fn hub_certificate_management(mut self, enabled: bool) -> Self {
        self.settings.hub_certificate_management = enabled;
        self
    }

    /// Adds an individual enrollment.
    #[must_use]
    pub fn enroll(mut self, enrollment: Enrollment) -> Self {
        self.enrollments.add(enrollment);
        self
    }

    /// Adds an enrollment group.
    #[must_use]
    pub fn enroll_group(mut self, group: EnrollmentGroup) -> Self {
        self.enrollments.add_group(group);
        self
    }

    /// The HTTPS listening address (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn https_listen(mut self, addr: SocketAddr) -> Self {
        self.https = addr;
        self
    }

    /// The MQTT-over-TLS listening address (default `127.0.0.1:0`); `None` turns MQTT off.
    #[must_use]
    pub fn mqtt_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.mqtt = addr;
        self
    }

    /// The AMQP-over-TLS listening address (default `127.0.0.1:0`); `None` turns AMQP off.
    /// AMQP over WebSockets is served on the HTTPS port either way.
    #[must_use]
    pub fn amqp_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.amqp = addr;
        self
    }

    /// Uses this CA (PEM certificate and PKCS#8 key) instead of generating one, so clients keep
    /// trusting the emulator across restarts.
    #[must_use]
    pub fn ca_pem(mut self, certificate: impl Into<String>, key: impl Into<String>) -> Self {
        self.ca = Some((certificate.into(), key.into()));
        self
    }

    /// Adds a DNS name or IP address to the server certificate (default: `localhost`,
    /// `127.0.0.1`, `::1`, and the name of every hub the emulator and its enrollments assign).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_names.push(name.into());
        self
    }

    /// Keeps registration records in this JSON file (written atomically), so a restart keeps
    /// every device's assignment.
    #[must_use]
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Injects a fault from the start.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Connection limits and timeouts.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Binds the endpoints and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::Bind`] when a port is taken, [`Error::Certificate`] or [`Error::Tls`] when the CA
    /// or server certificate cannot be made, [`Error::Store`] for an unreadable state file.
    pub async fn start(self) -> Result<Emulator, Error> {
        let ca = match &self.ca {
            Some((cert, key)) => tls::Ca::from_pem(cert, key)?,
            None => tls::Ca::generate()?,
        };
        // The hubs are served here too: their names go in the certificate.
        let mut names = self.server_names.clone();
        names.extend(
            self.settings
                .iot_hubs
                .iter()
                .chain(self.enrollments.hubs())
                .map(|hub| host_of(hub).to_owned()),
        );
        let (chain, key) = ca.issue_server(&names)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https_tls = tls::server_config(
            provider.clone(),
            chain.clone(),
            key.clone_key(),
            &[b"http/1.1"],
        )?;
        let mqtt_tls =
            tls::server_config(provider.clone(), chain.clone(), key.clone_key(), &[b"mqtt"])?;
        let amqp_tls = tls::server_config(provider, chain, key, &[])?;
        let service = Arc::new(Service::new(
            self.settings,
            self.enrollments,
            ca,
            self.state_file,
            self.limits,
        )?);
        for fault in self.faults {
            service.faults.inject(fault);
        }
        let (shutdown, watch_rx) = watch::channel(false);
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let https_listener = bind(self.https).await?;
        let https_addr = https_listener.local_addr().map_err(|source| Error::Bind {
            addr: self.https,
            source,
        })?;
        let mut tasks = vec![tokio::spawn(listener::serve(
            "https",
            https_listener,
            TlsAcceptor::from(Arc::new(https_tls)),
            service.clone(),
            self.limits,
            watch_rx.clone(),
            https::session,
        ))];
        let mut mqtt_addr = None;
        if let Some(addr) = self.mqtt {
            let mqtt_listener = bind(addr).await?;
            mqtt_addr = Some(
                mqtt_listener
                    .local_addr()
                    .map_err(|source| Error::Bind { addr, source })?,
            );
            tasks.push(tokio::spawn(listener::serve(
                "mqtt",
                mqtt_listener,
                TlsAcceptor::from(Arc::new(mqtt_tls)),
                service.clone(),
                self.limits,
                watch_rx.clone(),
                mqtt::serve_session,
            )));
        }
        let mut amqp_addr = None;
        if let Some(addr) = self.amqp {
            let amqp_listener = bind(addr).await?;
            amqp_addr = Some(
                amqp_listener
                    .local_addr()
                    .map_err(|source| Error::Bind { addr, source })?,
            );
            tasks.push(tokio::spawn(listener::serve(
                "amqp",
                amqp_listener,
                TlsAcceptor::from(Arc::new(amqp_tls)),
                service.clone(),
                self.limits,
                watch_rx,
                amqp::serve_session,
            )));
        }
        tracing::info!(%https_addr, ?mqtt_addr, ?amqp_addr, id_scope = %service.settings.id_scope, "dps-emulator listening");
        Ok(Emulator {
            service,
            https_addr,
            mqtt_addr,
            amqp_addr,
            shutdown,
            tasks,
        })
    }
}

/// A hub name without its port (`localhost:8884` is served as `localhost`).
fn host_of(hub: &str) -> &str {
    match hub.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => hub,
    }
}

/// A running emulator. Dropping it stops the endpoints.
#[derive(Debug)]
pub struct Emulator {
    service: Arc<Service>,
    https_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    amqp_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// A builder with the defaults: generated CA, ephemeral ports on 127.0.0.1, `Retry-After` 1.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The HTTPS endpoint's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The MQTT endpoint's address, if MQTT is on.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The AMQP-over-TLS endpoint's address, if AMQP is on. (AMQP over WebSockets is at
    /// [`https_addr`](Self::https_addr), `/$iothub/websocket`, subprotocol `AMQPWSB10`.)
    pub fn amqp_addr(&self) -> Option<SocketAddr> {
        self.amqp_addr
    }

    /// Where the hubs are served: the MQTT endpoint (hub connections are told from DPS ones
    /// by their user name), if MQTT is on. Devices reach a hub by its name, so give clients
    /// this address for every hub name (the server certificate holds the hub names).
    pub fn hub_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The hubs the emulator assigns (its own list and every enrollment's), each once, in the
    /// order first named: the hubs it plays at [`hub_addr`](Self::hub_addr).
    pub fn iot_hubs(&self) -> Vec<String> {
        let enrollments = self
            .service
            .enrollments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut hubs: Vec<String> = Vec::new();
        for hub in self
            .service
            .settings
            .iot_hubs
            .iter()
            .chain(enrollments.hubs())
        {
            if !hubs.contains(hub) {
                hubs.push(hub.clone());
            }
        }
        hubs
    }

    /// The global endpoint host to give a client: `localhost:{https port}`.
    pub fn global_endpoint(&self) -> String {
        format!("localhost:{}", self.https_addr.port())
    }

    /// The ID scope.
    pub fn id_scope(&self) -> &str {
        &self.service.settings.id_scope
    }

    /// The CA certificate clients must trust (it signed the server certificate and issues
    /// certificates from CSRs).
    pub fn ca_certificate(&self) -> &CertificateDer<'static> {
        self.service.ca.certificate()
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> &str {
        self.service.ca.pem()
    }

    /// The CA's private key as PKCS#8 PEM, to restart with the same CA
    /// ([`EmulatorBuilder::ca_pem`]).
    pub fn ca_key_pem(&self) -> String {
        self.service.ca.key_pem()
    }

    /// Writes the CA certificate to a PEM file: atomically (a new file renamed over the old
    /// one, so a symlink at `path` is replaced, never followed), mode 0644.
    ///
    /// # Errors
    /// [`Error::File`] when the file cannot be written.
    pub fn write_ca(&self, path: &Path) -> Result<(), Error> {
        files::write_atomic(
            path,
            self.ca_pem().as_bytes(),
            0o644,
            "write the CA certificate",
        )
    }

    /// Sets how many seconds the emulator's clock runs ahead of the system's (negative:
    /// behind) for SAS expiry checks (see [`EmulatorBuilder::clock_offset`]).
    pub fn set_clock_offset(&self, seconds: i64) {
        self.service
            .clock_offset
            .store(seconds, std::sync::atomic::Ordering::Relaxed);
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        self.service.faults.inject(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.service.faults.clear();
    }

    /// Changes the enrollments while running.
    pub fn with_enrollments<R>(&self, f: impl FnOnce(&mut Enrollments) -> R) -> R {
        let mut enrollments = self
            .service
            .enrollments
            .write()
            .unwrap_or_else(|e| e.into_inner());
        f(&mut enrollments)
    }

    /// How many operations (registrations that polls can ask about) the emulator keeps now:
    /// bounded by [`Limits::max_operations`] and [`Limits::operation_ttl`], one per device.
    pub fn operations_kept(&self) -> usize {
        self.service.operations_kept()
    }

    /// Requests the emulator has handled (register, poll and status requests, MQTT CONNECTs;
    /// the ones answered with an injected fault too).
    pub fn requests(&self) -> u64 {
        self.service.requests()
    }

    /// Every device registered so far.
    pub fn registrations(&self) -> Vec<RegistrationRecord> {
        self.service.registrations()
    }

    /// The registration that made the device with this device id.
    pub fn device(&self, device_id: &str) -> Option<RegistrationRecord> {
        self.service.device(device_id)
    }

    /// Disables a device on its hub: its connection ends and it is refused (CONNACK 5) until
    /// enabled again, also after it registers again.
    ///
    /// # Errors
    /// [`Error::UnknownDevice`] when no registration made this device.
    pub fn disable_device(&self, device_id: &str) -> Result<RegistrationRecord, Error> {
        self.service
            .set_device_status(device_id, DeviceStatus::Disabled)
    }

    /// Ends the device's hub connection, if it has one (as IoT Hub does now and then): to test
    /// that it connects again. Returns whether it was connected.
    pub fn disconnect_device(&self, device_id: &str) -> bool {
        let connected = self.service.hub.sessions.is_connected(device_id);
        self.service
            .hub
            .sessions
            .kick(device_id, "disconnected by an admin call");
        connected
    }

    /// Enables a disabled device.
    ///
    /// # Errors
    /// [`Error::UnknownDevice`] when no registration made this device.
    pub fn enable_device(&self, device_id: &str) -> Result<RegistrationRecord, Error> {
        self.service
            .set_device_status(device_id, DeviceStatus::Enabled)
    }

    /// Moves a device to another hub (as an operator moving it in IoT Hub would): its
    /// connection to the old hub ends and the old hub refuses it; registering again assigns it
    /// the new one if its enrollment allows that hub.
    ///
    /// # Errors
    /// [`Error::UnknownDevice`] when no registration made this device.
    pub fn move_device(&self, device_id: &str, hub: &str) -> Result<RegistrationRecord, Error> {
        self.service.move_device(device_id, hub)
    }

    /// The SHA-256 (lowercase hex) of the certificate this device last connected to its hub
    /// with; `None` if it never connected with one.
    pub fn last_certificate(&self, device_id: &str) -> Option<String> {
        self.service.hub.last_certificate(device_id)
    }

    /// The device's twin as it reads it (`{"desired": {...}, "reported": {...}}`, each with its
    /// `$version`); `None` for an unknown device.
    pub fn twin(&self, device_id: &str) -> Option<serde_json::Value> {
        self.service
            .device(device_id)
            .map(|_| self.service.hub.twin(device_id))
    }

    /// Patches the device's desired properties and notifies it if it is connected and
    /// subscribed; returns the new desired `$version`.
    ///
    /// # Errors
    /// [`Error::UnknownDevice`], or [`Error::InvalidPatch`] for a patch IoT Hub would refuse.
    pub fn update_desired(&self, device_id: &str, patch: &serde_json::Value) -> Result<u64, Error> {
        self.service.update_desired(device_id, patch)
    }

    /// The telemetry the hubs received, oldest first (the latest ones: bounded by
    /// [`Limits::max_telemetry_messages`] and [`Limits::max_telemetry_bytes`]).
    pub fn telemetry(&self) -> Vec<TelemetryMessage> {
        self.service.hub.telemetry()
    }

    /// Telemetry messages received since the start (kept or not).
    pub fn telemetry_received(&self) -> u64 {
        self.service.hub.telemetry_received()
    }

    /// Devices connected to a hub now.
    pub fn connected_devices(&self) -> usize {
        self.service.hub.sessions.connected()
    }

    /// Hub connections accepted since the start.
    pub fn hub_connections(&self) -> u64 {
        self.service.hub.connections()
    }

    /// The hub connections refused lately (the last 1000), oldest first, each with its reason.
    pub fn hub_refusals(&self) -> Vec<HubRefusal> {
        self.service.hub.refusals()
    }

    /// Stops accepting connections, closes the open ones and waits for the endpoints to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

//! One X.509 registration, built as a device ships it: one transport (cargo feature `https`,
//! the default, or `mqtt`), one driver (hsm-x509: a PEM certificate chain and key), and the
//! size-optimised `device` profile of the workspace:
//!
//! ```text
//! cargo build --profile device -p hsm-device-example                                  # HTTPS
//! cargo build --profile device -p hsm-device-example --no-default-features --features mqtt
//! register_x509 GLOBAL_ENDPOINT ID_SCOPE CHAIN_PEM KEY_PEM [CA_PEM [MQTT_PORT]]
//! ```
//!
//! Prints `HUB DEVICE_ID`. `GLOBAL_ENDPOINT` is `host` or `host:port`; `CA_PEM` holds the
//! certificate(s) trusted for DPS instead of the platform's roots (a dps-emulator's CA);
//! `MQTT_PORT` replaces 8883. The registration id is the certificate's common name.

use std::process::ExitCode;
use std::sync::Arc;

use provisioning::{ProvisioningClient, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one transport this build has: HTTPS when its feature is on, else MQTT.
const TRANSPORT: Transport = if cfg!(feature = "https") {
    Transport::Https
} else {
    Transport::Mqtt
};

const USAGE: &str =
    "usage: register_x509 GLOBAL_ENDPOINT ID_SCOPE CHAIN_PEM KEY_PEM [CA_PEM [MQTT_PORT]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=6).contains(&args.len()) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    // One registration needs no worker threads: a current-thread runtime starts faster and
    // touches less memory (driver calls still go to tokio's blocking pool).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(register(&args)) {
        Ok((hub, device_id)) => {
            println!("{hub} {device_id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn register(args: &[String]) -> Result<(String, String), BoxError> {
    let read = |path: &String| std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
    let identity = hsm_x509::X509IdentityBuilder::new()
        .certificates(&read(&args[2])?)
        .key(&read(&args[3])?)
        .build()?;
    let mut builder = ProvisioningClient::builder(&args[0], &args[1])
        .transport(TRANSPORT)
        .x509(Arc::new(identity));
    if let Some(ca) = args.get(4) {
        for anchor in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
            builder = builder.trust_anchor(anchor.map_err(|e| format!("{ca}: {e}"))?);
        }
    }
    if let Some(port) = args.get(5) {
        builder = builder.mqtt_port(port.parse().map_err(|_| format!("bad MQTT port {port}"))?);
    }
    let registration = builder.build()?.register().await?;
    Ok((registration.assigned_hub, registration.device_id))
}

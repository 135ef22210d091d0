//! `dps-emulator`: a local Device Provisioning Service for development and CI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dps_emulator::{Config, Emulator};

/// A local Azure IoT Device Provisioning Service (HTTPS and MQTT) that checks every credential.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The TOML file with the ID scope, hubs and enrollments (see enrollments.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen for HTTPS here (overrides the file; default 127.0.0.1:0, any free port).
    #[arg(long)]
    https: Option<SocketAddr>,
    /// Listen for MQTT over TLS here (overrides the file).
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Listen for AMQP over TLS here (overrides the file).
    #[arg(long)]
    amqp: Option<SocketAddr>,
    /// Write the CA certificate clients must trust to this PEM file [default: the file's
    /// `[tls] write_ca`, else dps-emulator-ca.pem in $XDG_RUNTIME_DIR, else
    /// ~/.cache/dps-emulator/ca.pem].
    #[arg(long)]
    write_ca: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), dps_emulator::Error> {
    let (mut builder, file_ca) = match &args.config {
        Some(path) => {
            let config = Config::from_file(path)?;
            let write_ca = config.write_ca_path();
            (config.into_builder()?, write_ca)
        }
        None => (Emulator::builder(), None),
    };
    if let Some(addr) = args.https {
        builder = builder.https_listen(addr);
    }
    if let Some(addr) = args.mqtt {
        builder = builder.mqtt_listen(Some(addr));
    }
    if let Some(addr) = args.amqp {
        builder = builder.amqp_listen(Some(addr));
    }
    dps_emulator::serve_until_ctrl_c(builder, args.write_ca.or(file_ca)).await
}

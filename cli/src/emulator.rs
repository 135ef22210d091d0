//! `hsm-provision emulator`: the dps-emulator, as its own binary runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use dps_emulator::{Config, Emulator};

use crate::Error;

pub(crate) const EMULATOR_ABOUT: &str = "\
Run a local Device Provisioning Service (HTTPS and MQTT) from a TOML file of enrollments.

It checks every credential (X.509 chains, SAS tokens, TPM proof of possession) and issues
certificates for CSRs. It prints its endpoints, ID scope and the CA certificate file clients must
trust (--trust-ca), then runs until Ctrl-C. The file format is dps-emulator's
(dps-emulator/enrollments.example.toml).";

/// `emulator`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// The TOML file with the ID scope, hubs and enrollments.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Listen for HTTPS here (overrides the file; default 127.0.0.1:0, a free port).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// Listen for MQTT over TLS here (overrides the file).
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// Write the CA certificate clients must trust to this PEM file [default: the file's
    /// `[tls] write_ca`, else dps-emulator-ca.pem in the temp directory].
    #[arg(long, value_name = "PATH")]
    write_ca: Option<PathBuf>,
}

/// Runs `emulator` until Ctrl-C.
pub(crate) fn run(args: &EmulatorArgs) -> Result<(), Error> {
    let failed = |operation| move |source| Error::Emulator { operation, source };
    let config = Config::from_file(&args.config).map_err(failed("cannot load the enrollments"))?;
    let file_ca = config.write_ca_path();
    let mut builder = config
        .into_builder()
        .map_err(failed("invalid enrollments"))?;
    if let Some(addr) = args.https {
        builder = builder.https_listen(addr);
    }
    if let Some(addr) = args.mqtt {
        builder = builder.mqtt_listen(Some(addr));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    runtime.block_on(async {
        let emulator: Emulator = builder.start().await.map_err(failed("cannot start"))?;
        let ca_path = args
            .write_ca
            .clone()
            .or(file_ca)
            .unwrap_or_else(|| std::env::temp_dir().join("dps-emulator-ca.pem"));
        emulator
            .write_ca(&ca_path)
            .map_err(failed("cannot write the CA certificate"))?;
        println!("dps-emulator ready");
        println!("  id scope       {}", emulator.id_scope());
        println!("  https          https://{}", emulator.https_addr());
        if let Some(mqtt) = emulator.mqtt_addr() {
            println!("  mqtt           mqtts://{mqtt}");
        }
        println!("  global host    {}", emulator.global_endpoint());
        println!("  CA certificate {}", ca_path.display());
        println!("press Ctrl-C to stop");
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot wait for Ctrl-C ({e}); stopping");
        }
        println!("stopping");
        emulator.shutdown().await;
        Ok(())
    })
}

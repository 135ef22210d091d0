//! `hsm-provision emulator`: the dps-emulator, as its own binary runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use dps_emulator::Config;

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
    /// Listen for AMQP over TLS here (overrides the file).
    #[arg(long, value_name = "ADDR")]
    amqp: Option<SocketAddr>,
    /// Write the CA certificate clients must trust to this PEM file [default: the file's
    /// `[tls] write_ca`, else dps-emulator-ca.pem in $XDG_RUNTIME_DIR, else
    /// ~/.cache/dps-emulator/ca.pem].
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
    if let Some(addr) = args.amqp {
        builder = builder.amqp_listen(Some(addr));
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
    runtime
        .block_on(dps_emulator::serve_until_ctrl_c(
            builder,
            args.write_ca.clone().or(file_ca),
        ))
        .map_err(failed("cannot run"))
}

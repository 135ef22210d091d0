//! What both command-line front ends (`dps-emulator` and `hsm-provision emulator`) do: start,
//! write the CA, print the endpoints, serve until Ctrl-C.

use std::path::PathBuf;

use crate::{EmulatorBuilder, Error, default_ca_path};

/// Starts the emulator, writes its CA certificate to `write_ca` (default
/// [`default_ca_path`]), prints `dps-emulator ready` with its endpoints (and the hubs it
/// plays) on stdout, and serves until Ctrl-C.
///
/// # Errors
/// [`Error::File`] when the CA path is unusable (checked before anything listens) or cannot be
/// written, and any error of [`EmulatorBuilder::start`].
pub async fn serve_until_ctrl_c(
    builder: EmulatorBuilder,
    write_ca: Option<PathBuf>,
) -> Result<(), Error> {
    let ca_path = match write_ca {
        Some(path) => path,
        None => default_ca_path()?,
    };
    if ca_path.is_dir() {
        return Err(Error::File {
            operation: "write the CA certificate",
            path: ca_path,
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "it is a directory: give a file path",
            ),
        });
    }
    let emulator = builder.start().await?;
    emulator.write_ca(&ca_path)?;
    println!("dps-emulator ready");
    println!("  id scope       {}", emulator.id_scope());
    println!("  https          https://{}", emulator.https_addr());
    if let Some(mqtt) = emulator.mqtt_addr() {
        println!("  mqtt           mqtts://{mqtt}");
        println!(
            "  iot hubs       {} (at mqtts://{mqtt})",
            emulator.iot_hubs().join(", ")
        );
    }
    if let Some(amqp) = emulator.amqp_addr() {
        println!("  amqp           amqps://{amqp}");
    }
    println!(
        "  websockets     wss://{}/$iothub/websocket (mqtt, AMQPWSB10)",
        emulator.https_addr()
    );
    println!("  global host    {}", emulator.global_endpoint());
    println!("  CA certificate {}", ca_path.display());
    println!("press Ctrl-C to stop");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C ({e}); stopping");
    }
    println!("stopping");
    emulator.shutdown().await;
    Ok(())
}

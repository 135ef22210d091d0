#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod config;
mod conformance;
mod connect;
mod device;
mod emulator;
mod error;
mod lifecycle;
mod pkcs11;
mod register;
mod riot;
mod status;
mod symmkey;
mod tpm;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{EXIT_CODES, Error};

const ABOUT: &str = "Provision IoT devices with Azure's Device Provisioning Service through \
any HSM driver, and manage the credentials on the HSM.";

const LONG_ABOUT: &str = "\
Provision IoT devices with Azure's Device Provisioning Service (DPS) through any HSM driver
(X.509 files, DICE, symmetric keys, PKCS#11 tokens, TPMs), without a private key ever leaving
the HSM; run a local DPS emulator; and manage DICE, PKCS#11, TPM and symmetric-key credentials.

Every error prints one line `error: ...`, followed by `  caused by: ...` lines for its causes,
and exits with the code below.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "hsm-provision",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a device with DPS (X.509 files, DICE, symmetric key, PKCS#11, TPM).
    #[command(long_about = register::REGISTER_ABOUT, after_help = EXIT_CODES)]
    Register(Box<register::RegisterArgs>),
    /// Register, then connect to the assigned IoT Hub: send telemetry, read the twin.
    #[command(long_about = connect::CONNECT_ABOUT, after_help = EXIT_CODES)]
    Connect(Box<connect::ConnectArgs>),
    /// Renew the issued certificate now, with a new key in the key store.
    #[command(long_about = lifecycle::RENEW_ABOUT, after_help = EXIT_CODES)]
    Renew(Box<lifecycle::RenewArgs>),
    /// Show the cached assignment, the certificate's expiry and the next renewal.
    #[command(long_about = lifecycle::STATUS_ABOUT, after_help = EXIT_CODES)]
    Status(lifecycle::StatusArgs),
    /// Run the driver conformance suite against a key on a token, in a TPM, or in a file.
    #[command(long_about = conformance::CONFORMANCE_ABOUT, after_help = EXIT_CODES)]
    Conformance(Box<conformance::ConformanceArgs>),
    /// Run the local DPS emulator from a TOML file of enrollments.
    #[command(long_about = emulator::EMULATOR_ABOUT, after_help = EXIT_CODES)]
    Emulator(emulator::EmulatorArgs),
    /// DICE (hsm-riot): export a device's certificates, make a dev root, sign a verification
    /// certificate.
    #[command(subcommand, after_help = EXIT_CODES)]
    Riot(riot::RiotCommand),
    /// PKCS#11: list tokens and objects, generate a key, make a CSR, import a certificate.
    #[command(subcommand, after_help = EXIT_CODES)]
    Pkcs11(pkcs11::Pkcs11Command),
    /// TPM: print the EK, SRK and registration id; clear the identity key.
    #[command(subcommand, after_help = EXIT_CODES)]
    Tpm(tpm::TpmCommand),
    /// Symmetric keys: derive a group member's device key.
    #[command(subcommand, after_help = EXIT_CODES)]
    Symmkey(symmkey::SymmkeyCommand),
    /// Print a SAS token for a resource and key (a debugging aid).
    #[command(long_about = symmkey::SAS_ABOUT, after_help = EXIT_CODES)]
    Sas(symmkey::SasArgs),
}

fn main() -> ExitCode {
    #[cfg(feature = "tpm")]
    quiet_tss_logging();
    let cli = Cli::parse();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error in hsm-provision (please report it): {info}");
    }));
    let result = std::panic::catch_unwind(|| match &cli.command {
        Command::Register(args) => register::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Renew(args) => lifecycle::renew(args),
        Command::Conformance(args) => conformance::run(args),
        Command::Status(args) => lifecycle::status(args),
        Command::Emulator(args) => emulator::run(args),
        Command::Riot(command) => riot::run(command),
        Command::Pkcs11(command) => pkcs11::run(command),
        Command::Tpm(command) => tpm::run(command),
        Command::Symmkey(command) => symmkey::run(command),
        Command::Sas(args) => symmkey::sas(args),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => error.report(),
        Err(_) => ExitCode::FAILURE,
    }
}

/// The TPM software stack (libtss2) logs its own warnings and errors to stderr, several lines
/// per failed connection attempt; the tool reports every failure itself, in one line with its
/// causes. So its logging is off unless the user set `TSS2_LOG`.
#[cfg(feature = "tpm")]
#[allow(unsafe_code)]
fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: called first thing in `main`, before this process starts any other thread,
        // so nothing can read or write the environment concurrently.
        unsafe { std::env::set_var("TSS2_LOG", "all+NONE") };
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! Runnable examples for the workspace; see the `[[example]]` entries in `Cargo.toml`.
//!
//! `cargo run --example quickstart` is the README's first command. Every example starts a
//! `dps-emulator` in-process, so all of them run offline.
//!
//! The library half holds what the examples share: [`Steps`] (timed step lines),
//! [`exit_code`] (a one-line error with its cause chain instead of a panic), [`dev_ca`] (a
//! development CA that certifies a key handle's public key), and
//! [`remote_signer`], the complete driver of the `custom_driver` example, which the
//! conformance suite runs against in `tests/custom_driver.rs`.
#![forbid(unsafe_code)]

pub mod dev_ca;
pub mod remote_signer;

use std::error::Error;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::Instant;

/// Prints an example's steps, each prefixed with the time since the example started.
#[derive(Debug)]
pub struct Steps {
    start: Instant,
}

impl Steps {
    /// Starts the clock.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Prints one step line: `[  12.3 ms] text`.
    pub fn say(&self, text: impl Display) {
        println!(
            "[{:>7.1} ms] {text}",
            self.start.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Turns an example's result into its exit code: success, or the error on one line followed by
/// its cause chain on stderr, and exit code 1.
pub fn exit_code(example: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{example} failed: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

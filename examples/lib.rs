//! Runnable examples for the workspace; see the `[[example]]` entries in `Cargo.toml`.
//!
//! `cargo run --example quickstart` is the README's first command.
#![forbid(unsafe_code)]

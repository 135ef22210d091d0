//! One symmetric-key registration over HTTPS as a whole process, the Rust side of the
//! whole-process comparison in `scripts/bench-provisioning.sh` (wall time, peak RSS, binary size):
//!
//! ```text
//! register_once GLOBAL_ENDPOINT ID_SCOPE REGISTRATION_ID BASE64_KEY CA_PEM
//! ```
//!
//! Prints `HUB DEVICE_ID`. `GLOBAL_ENDPOINT` is `host` or `host:port`; `CA_PEM` holds the
//! certificate(s) trusted for DPS instead of the platform roots (the dps-emulator's CA).

use std::process::ExitCode;
use std::sync::Arc;

use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use provisioning::ProvisioningClient;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// One registration needs no worker threads: the current-thread runtime starts faster and
// touches less memory; driver calls still go to tokio's blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, scope, registration_id, key, ca] = args.as_slice() else {
        eprintln!(
            "usage: register_once GLOBAL_ENDPOINT ID_SCOPE REGISTRATION_ID BASE64_KEY CA_PEM"
        );
        return ExitCode::from(2);
    };
    match register(endpoint, scope, registration_id, key, ca).await {
        Ok((hub, device_id)) => {
            println!("{hub} {device_id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn register(
    endpoint: &str,
    scope: &str,
    registration_id: &str,
    key: &str,
    ca: &str,
) -> Result<(String, String), BoxError> {
    let key = SymmetricKey::from_base64(
        RegistrationId::new(registration_id)?,
        &SecretString::from(key),
    )?;
    // No poll floor, for the side-by-side measure: the emulator answers Retry-After 0 and the
    // Node SDK polls at once too. Against DPS, keep the default (1 s).
    let mut builder = ProvisioningClient::builder(endpoint, scope)
        .symmetric_key(Arc::new(key))
        .retry_policy(provisioning::RetryPolicy {
            min_poll_interval: std::time::Duration::ZERO,
            ..provisioning::RetryPolicy::default()
        });
    for certificate in CertificateDer::pem_file_iter(ca)? {
        builder = builder.trust_anchor(certificate?);
    }
    let registration = builder.build()?.register().await?;
    Ok((registration.assigned_hub, registration.device_id))
}

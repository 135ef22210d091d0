//! The fault matrix: every fault the emulator can inject, on the register request and on polls,
//! over HTTPS and MQTT. Passing faults end in an assignment within the deadline; persistent
//! ones in the typed error the documentation promises.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use dps_emulator::{Emulator, Enrollment, Fault, FaultKind, FaultTarget};
use provisioning::{Error, ProvisioningClient, RetryPolicy, Transport};

const ID: &str = "fault-dev";

async fn start() -> Emulator {
    emulator()
        .enroll(Enrollment::symmetric_key(ID, key_pair(ID, DEVICE_KEY)))
        .started()
        .await
}

fn device(emulator: &Emulator, transport: Transport, policy: RetryPolicy) -> ProvisioningClient {
    client(emulator, transport)
        .symmetric_key(symmetric_key(ID, DEVICE_KEY))
        .retry_policy(policy)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn passing_faults_end_in_assignment() {
    let emulator = start().await;
    let cases = [
        (
            FaultKind::Throttle { retry_after: 1 },
            1,
            Duration::from_secs(1),
        ),
        (FaultKind::Status { status: 500 }, 2, Duration::ZERO),
        (FaultKind::Status { status: 503 }, 2, Duration::ZERO),
        (
            FaultKind::Delay { delay_ms: 1200 },
            1,
            Duration::from_millis(1200),
        ),
        (FaultKind::Drop, 2, Duration::ZERO),
    ];
    for transport in TRANSPORTS {
        for target in [FaultTarget::Register, FaultTarget::Poll] {
            for (kind, count, at_least) in cases.clone() {
                emulator.inject(Fault::new(kind.clone(), count).on(target));
                let started = Instant::now();
                let registration = device(&emulator, transport, fast_policy())
                    .register()
                    .await
                    .unwrap_or_else(|e| panic!("{transport:?} {target:?} {kind:?}: {e:?}"));
                let elapsed = started.elapsed();
                assert_eq!(registration.device_id, ID);
                assert!(elapsed >= at_least, "{kind:?}: {elapsed:?} < {at_least:?}");
                assert!(elapsed < Duration::from_secs(10), "{kind:?}: {elapsed:?}");
                // A delay is waited out; every other fault costs one more request each time.
                let extra = if matches!(kind, FaultKind::Delay { .. }) {
                    0
                } else {
                    count
                };
                assert_eq!(
                    registration.requests,
                    2 + extra,
                    "{transport:?} {target:?} {kind:?}: register + poll + retries"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_faults_end_in_their_typed_errors() {
    let emulator = start().await;
    let policy = RetryPolicy {
        max_retries: 2,
        ..fast_policy()
    };
    for transport in TRANSPORTS {
        for kind in [
            FaultKind::Throttle { retry_after: 0 },
            FaultKind::Status { status: 500 },
            FaultKind::Status { status: 503 },
            FaultKind::Drop,
        ] {
            emulator.clear_faults();
            emulator.inject(Fault::new(kind.clone(), 1000));
            let counter = Counter::default();
            let started = Instant::now();
            let error = counter
                .wrap(device(&emulator, transport, policy).register())
                .await
                .unwrap_err();
            let ok = match (&kind, &error) {
                (FaultKind::Throttle { .. }, Error::Throttled { attempts: 3, error }) => {
                    error.status == 429 && error.error_code == Some(429001)
                }
                (FaultKind::Status { status }, Error::Transient { attempts: 3, error }) => {
                    error.status == *status
                }
                (FaultKind::Drop, Error::Io { .. } | Error::Mqtt { .. }) => true,
                _ => false,
            };
            assert!(ok, "{transport:?} {kind:?}: {error:?}");
            assert!(error.is_transient());
            assert_eq!(counter.get(), 3, "{transport:?} {kind:?}: 1 + 2 retries");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_bounds_delays_and_long_retry_after() {
    let emulator = start().await;
    for transport in TRANSPORTS {
        // A delay beyond the deadline: Timeout at the deadline.
        emulator.clear_faults();
        emulator.inject(Fault::new(FaultKind::Delay { delay_ms: 5000 }, 1));
        let client = client(&emulator, transport)
            .symmetric_key(symmetric_key(ID, DEVICE_KEY))
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = client.register().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(error, Error::Timeout { after, .. } if after == Duration::from_secs(1)),
            "{error:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(990) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );

        // A Retry-After that would pass the deadline: said so at once, carrying the 429.
        emulator.clear_faults();
        emulator.inject(Fault::new(FaultKind::Throttle { retry_after: 30 }, 1));
        let started = Instant::now();
        let error = client.register().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert!(
            error
                .to_string()
                .starts_with("DPS asked to wait 30s before the next request, longer than the "),
            "{error}"
        );
        match error {
            Error::WaitBeyondDeadline {
                asked,
                deadline,
                last: Some(last),
                ..
            } => {
                assert_eq!(
                    (asked, deadline),
                    (Duration::from_secs(30), Duration::from_secs(1))
                );
                assert!(matches!(*last, Error::Throttled { .. }), "{last:?}")
            }
            other => panic!("{other:?}"),
        }

        // A request slower than the per-request timeout is abandoned and retried.
        emulator.clear_faults();
        emulator.inject(Fault::new(FaultKind::Delay { delay_ms: 1500 }, 1).on(FaultTarget::Poll));
        let registration = device(
            &emulator,
            transport,
            RetryPolicy {
                request_timeout: Duration::from_millis(300),
                ..fast_policy()
            },
        )
        .register()
        .await
        .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
        assert_eq!(registration.requests, 3, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_between_polls() {
    let emulator = emulator()
        .retry_after(1)
        .assigning_polls(1)
        .enroll(Enrollment::symmetric_key(ID, key_pair(ID, DEVICE_KEY)))
        .started()
        .await;
    for transport in TRANSPORTS {
        let started = Instant::now();
        let registration = device(&emulator, transport, fast_policy())
            .register()
            .await
            .unwrap();
        // 202 from the register request, 202 from the first poll, 200: two waits of 1 s.
        assert_eq!(registration.requests, 3);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
            "{transport:?}: {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_answer_is_the_error_at_once_not_retried() {
    let emulator = start().await;
    for transport in TRANSPORTS {
        // Requests DPS sees: MQTT's CONNECT and AMQP's SASL authentication are one more.
        let connect = u64::from(transport != Transport::Https);
        for (target, requests) in [(FaultTarget::Register, 1), (FaultTarget::Poll, 2)] {
            emulator.clear_faults();
            emulator.inject(Fault::new(FaultKind::MalformedBody, 1000).on(target));
            let before = emulator.requests();
            let error = device(&emulator, transport, fast_policy())
                .register()
                .await
                .unwrap_err();
            assert!(
                matches!(error, Error::MalformedResponse { .. }),
                "{transport:?} {target:?}: {error:?}"
            );
            assert!(!error.is_transient());
            assert_eq!(
                emulator.requests() - before,
                requests + connect,
                "{transport:?} {target:?}"
            );
        }
    }
}

//! Factory provisioning: 200 devices register at once from one process, over both transports
//! and both group attestations, and all are assigned.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dps_emulator::EnrollmentGroup;
use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use hsm_testkit::pki::TestCa;
use provisioning::{RegistrationStatus, Transport};

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_registrations_are_all_assigned() {
    let ca = TestCa::new("fleet CA");
    let emulator = emulator()
        .iot_hubs(["hub-a.azure-devices.net", "hub-b.azure-devices.net"])
        .enroll_group(EnrollmentGroup::symmetric_key(
            "fleet-sym",
            key_pair("fleet-sym", GROUP_KEY),
        ))
        .enroll_group(EnrollmentGroup::x509_ca("fleet-x509", ca.cert().clone()))
        .started()
        .await;
    let mut clients = Vec::new();
    for i in 0..200 {
        let transport = if i % 4 == 3 {
            Transport::Mqtt
        } else {
            Transport::Https
        };
        let id = format!("fleet-{i:03}");
        let builder = client(&emulator, transport).timeout(Duration::from_secs(60));
        let builder = if i % 2 == 0 {
            let key = SymmetricKey::from_group_key(
                RegistrationId::new(id.clone()).unwrap(),
                &SecretString::from(GROUP_KEY),
            )
            .unwrap();
            builder.symmetric_key(Arc::new(key))
        } else {
            builder.x509(x509_device(&ca, &id).0)
        };
        clients.push((id, builder.build().unwrap()));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, client) in clients {
        tasks.spawn(async move { (id, client.register().await) });
    }
    let mut hubs = std::collections::HashMap::<String, u32>::new();
    let mut assigned = 0;
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        let registration = result.unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert_eq!(registration.status, RegistrationStatus::Assigned);
        assert_eq!(registration.device_id, id);
        *hubs.entry(registration.assigned_hub).or_default() += 1;
        assigned += 1;
    }
    assert_eq!(assigned, 200);
    assert_eq!(emulator.registrations().len(), 200);
    // Hashed allocation spreads the fleet over both hubs.
    assert_eq!(hubs.len(), 2, "{hubs:?}");
    eprintln!("200 registrations in {:?}", started.elapsed());
}

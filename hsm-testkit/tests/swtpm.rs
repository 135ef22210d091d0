//! The swtpm harness against the real swtpm and tpm2-tools.
#![allow(clippy::unwrap_used)]

use hsm_testkit::swtpm::Swtpm;

/// `tpm2_getrandom 8 --hex` through the harness: 16 hex digits.
fn random_hex(tpm: &Swtpm) -> String {
    let output = tpm.tpm2_ok(&["getrandom", "8", "--hex"]);
    let hex = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(hex.len(), 16, "unexpected getrandom output {hex:?}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex:?}");
    hex
}

#[test]
fn start_serves_tpm2_tools() {
    let tpm = Swtpm::start();
    assert_eq!(
        tpm.tcti(),
        format!("swtpm:host=127.0.0.1,port={}", tpm.port())
    );
    assert_eq!(tpm.ctrl_port(), tpm.port() + 1);
    assert!(tpm.state_dir().is_dir());
    let a = random_hex(&tpm);
    let b = random_hex(&tpm);
    assert_ne!(a, b, "two random draws were equal");
}

#[test]
fn restart_keeps_ports_and_persistent_objects() {
    let mut tpm = Swtpm::start();
    let (port, tcti) = (tpm.port(), tpm.tcti());
    // A persistent object must survive the power cycle; a transient one must not.
    tpm.tpm2_ok(&["createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);
    tpm.tpm2_ok(&["evictcontrol", "-C", "o", "-c", "primary.ctx", "0x81000042"]);
    random_hex(&tpm);

    tpm.restart();
    assert!(tpm.is_running());
    assert_eq!((tpm.port(), tpm.tcti()), (port, tcti));
    random_hex(&tpm);
    let handles = tpm.tpm2_ok(&["getcap", "handles-persistent"]);
    assert!(
        String::from_utf8_lossy(&handles.stdout).contains("0x81000042"),
        "persistent handle lost: {}",
        String::from_utf8_lossy(&handles.stdout)
    );
    let transient = tpm.tpm2_ok(&["getcap", "handles-transient"]);
    assert!(
        !String::from_utf8_lossy(&transient.stdout).contains("0x80"),
        "transient objects survived a restart: {}",
        String::from_utf8_lossy(&transient.stdout)
    );
}

#[test]
fn stop_refuses_connections_and_is_idempotent() {
    let mut tpm = Swtpm::start();
    tpm.stop();
    assert!(!tpm.is_running());
    let output = tpm.tpm2(&["getrandom", "8", "--hex"]);
    assert!(
        !output.status.success(),
        "getrandom worked on a stopped swtpm"
    );
    tpm.stop();
}

#[test]
fn start_in_reuses_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tpm = Swtpm::start_in(dir.path());
        assert_eq!(tpm.state_dir(), dir.path());
        tpm.tpm2_ok(&["createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);
        tpm.tpm2_ok(&["evictcontrol", "-C", "o", "-c", "primary.ctx", "0x81000043"]);
    }
    let tpm = Swtpm::start_in(dir.path());
    let handles = tpm.tpm2_ok(&["getcap", "handles-persistent"]);
    assert!(String::from_utf8_lossy(&handles.stdout).contains("0x81000043"));
}

#[test]
fn two_instances_get_different_ports() {
    let a = Swtpm::start();
    let b = Swtpm::start();
    let ports = [a.port(), a.ctrl_port(), b.port(), b.ctrl_port()];
    for (i, p) in ports.iter().enumerate() {
        assert!(!ports[i + 1..].contains(p), "port {p} shared: {ports:?}");
    }
    assert_ne!(a.state_dir(), b.state_dir());
    random_hex(&a);
    random_hex(&b);
}

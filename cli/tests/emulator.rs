//! `emulator`: a missing or invalid file and a taken port exit with their codes in one line;
//! a running emulator serves `register` and stops on Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_missing_config_file_exits_2_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("enrollments.toml");
    let run = run(["emulator", "--config", missing.to_str().unwrap()]);
    run.fails(2, "cannot load the enrollments");
    assert!(run.error_text().contains("No such file"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let bad = write(dir.path(), "bad.toml", "id_scope = 7\n");
    common::run(["emulator", "--config", bad.to_str().unwrap()]).fails(2, "invalid configuration");
    let bad_key = write(
        dir.path(),
        "bad-key.toml",
        "[[enrollment]]\nregistration_id = \"d\"\nsymmetric_key = { primary = \"***\" }\n",
    );
    common::run(["emulator", "--config", bad_key.to_str().unwrap()])
        .fails(2, "invalid enrollment 'd'");
}

const ENROLLMENTS: &str = r#"
id_scope = "0ne00000CLI"
iot_hubs = ["cli-hub.azure-devices.net"]
retry_after = 0

[[enrollment]]
registration_id = "emu-dev-1"
device_id = "emu-device-one"
symmetric_key = { primary = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }
"#;

/// Kills the emulator if the test fails before it stops it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `hsm-provision emulator` with `args` (and `env`); returns it with its banner once it
/// printed "press Ctrl-C to stop".
fn start_emulator(
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> (
    Guard,
    Vec<String>,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut command = bin();
    command
        .arg("emulator")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == "press Ctrl-C to stop";
        banner.push(line);
        if done {
            break;
        }
    }
    (guard, banner, lines)
}

/// The value of a banner line (`  id scope       0ne...`).
fn banner_value(banner: &[String], key: &str) -> String {
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {key} in {banner:?}"))
}

#[test]
fn the_default_ca_file_is_in_a_folder_only_this_user_owns_never_the_shared_temp_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enrollments.toml", ENROLLMENTS);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (_guard, banner, _) = start_emulator(
        &["--config", config.to_str().unwrap()],
        &[
            ("HOME", Some(home.to_str().unwrap())),
            ("XDG_RUNTIME_DIR", None),
        ],
    );
    let ca = std::path::PathBuf::from(banner_value(&banner, "CA certificate"));
    assert_eq!(ca, home.join(".cache/dps-emulator/ca.pem"), "{banner:?}");
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(ca.parent().unwrap()), 0o700);
    assert_eq!(mode(&ca), 0o644);
}

#[test]
fn a_directory_as_the_ca_file_exits_2_before_anything_listens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enrollments.toml", ENROLLMENTS);
    let run = run([
        "emulator",
        "--config",
        config.to_str().unwrap(),
        "--write-ca",
        dir.path().to_str().unwrap(),
    ]);
    run.fails(2, "it is a directory");
    assert!(!run.stdout.contains("ready"), "{run}");
    assert!(!run.stderr.contains("listening"), "{run}");
}

#[test]
fn serves_register_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enrollments.toml", ENROLLMENTS);
    let ca = dir.path().join("ca.pem");
    let (mut guard, banner, lines) = start_emulator(
        &[
            "--config",
            config.to_str().unwrap(),
            "--https",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--write-ca",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    let value = |key: &str| banner_value(&banner, key);
    assert_eq!(value("id scope"), "0ne00000CLI");
    assert_eq!(value("CA certificate"), ca.display().to_string());
    let global = value("global host");
    let mqtt_port = value("mqtt").rsplit(':').next().unwrap().to_owned();
    let run = run([
        "register",
        "--global-endpoint",
        &global,
        "--id-scope",
        "0ne00000CLI",
        "--trust-ca",
        ca.to_str().unwrap(),
        "--symmetric-key",
        DEVICE_KEY,
        "--registration-id",
        "emu-dev-1",
        "--transport",
        "mqtt",
        "--mqtt-port",
        &mqtt_port,
        "--json",
    ]);
    run.ok();
    assert_eq!(
        run.json()["assignedHub"],
        "cli-hub.azure-devices.net",
        "{run}"
    );
    assert_eq!(run.json()["deviceId"], "emu-device-one");

    // Ctrl-C: SIGINT to the process this test started.
    let mut child = guard.0.take().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, ["stopping"]);
}

#[test]
fn a_taken_port_exits_4_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "enrollments.toml", ENROLLMENTS);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = run([
        "emulator",
        "--config",
        config.to_str().unwrap(),
        "--https",
        &addr,
        "--write-ca",
        dir.path().join("ca.pem").to_str().unwrap(),
    ]);
    run.fails(4, &format!("cannot listen on {addr}"));
}

//! The networks on the command line: `--transport mqtt-ws` (DPS and, for `connect`, the hub),
//! `--transport amqp` and `amqp-ws` (with `--amqp-port`, and `transport = "amqp"` in a file),
//! `HTTPS_PROXY` and `NO_PROXY` honoured, `--proxy` (and `none`), through a real tinyproxy whose
//! log shows every tunnel; wrong proxy credentials (exit 1) and a proxy that is down (exit 4),
//! the password never printed.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dps_emulator::{Emulator, Enrollment};
use hsm_testkit::tinyproxy::Tinyproxy;

fn emulator() -> Emu {
    Emu::start(Emulator::builder().enroll(Enrollment::symmetric_key(
        "net-1",
        key_pair("net-1", DEVICE_KEY),
    )))
}

fn device() -> Vec<String> {
    ["--symmetric-key", DEVICE_KEY, "--registration-id", "net-1"]
        .map(String::from)
        .to_vec()
}

#[test]
fn mqtt_over_websockets_for_dps_and_the_hub() {
    let emu = emulator();
    let run = run(with(
        emu.register(),
        &[&device()[..], &["--transport".into(), "mqtt-ws".into()]].concat(),
    ));
    run.ok();
    assert!(run.stdout.contains("assigned"), "{run}");
    // connect: the hub over WebSockets too, at the emulator's HTTPS port.
    let mut args = with(emu.connect(), &device());
    let at = args.iter().position(|a| a == "--connect-to").unwrap();
    args[at + 1] = emu.emulator.https_addr().to_string();
    args.extend(["--transport".into(), "mqtt-ws".into()]);
    let run = common::run(args);
    run.ok();
    assert!(
        run.stdout.contains("telemetry         acknowledged"),
        "{run}"
    );
}

#[test]
fn amqp_and_amqp_over_websockets_register_and_connect() {
    let emu = emulator();
    for transport in ["amqp", "amqp-ws"] {
        let run = run(with(
            emu.register(),
            &[&device()[..], &["--transport".into(), transport.into()]].concat(),
        ));
        run.ok();
        assert!(run.stdout.contains("assigned"), "{transport}: {run}");
    }
    // From the config file, then on to the hub (over MQTT on its port after plain AMQP).
    let config = emu.path("amqp.toml");
    std::fs::write(
        &config,
        format!(
            "[provisioning]\ntransport = \"amqp\"\namqp_port = {}\n",
            emu.emulator.amqp_addr().unwrap().port()
        ),
    )
    .unwrap();
    let mut args = with(emu.connect(), &device());
    let at = args.iter().position(|a| a == "--amqp-port").unwrap();
    args.drain(at..at + 2);
    args.extend(["--config".into(), config.display().to_string()]);
    let run = common::run(args);
    run.ok();
    assert!(
        run.stdout.contains("telemetry         acknowledged"),
        "{run}"
    );
    assert_eq!(emu.emulator.registrations()[0].registrations, 3);
    // The file's transport and port are the ones used: AMQP at a closed port is a network error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        format!("[provisioning]\ntransport = \"amqp\"\namqp_port = {port}\ntimeout_secs = 2\n"),
    )
    .unwrap();
    let mut args = with(emu.register(), &device());
    let at = args.iter().position(|a| a == "--amqp-port").unwrap();
    args.drain(at..at + 2);
    let at = args.iter().position(|a| a == "--timeout").unwrap();
    args.drain(at..at + 2);
    args.extend(["--config".into(), config.display().to_string()]);
    common::run(args).code(4);
    assert_eq!(emu.emulator.registrations()[0].registrations, 3);
}

#[test]
fn https_proxy_and_no_proxy_are_honoured_and_proxy_none_ignores_them() {
    let emu = emulator();
    let proxy = Tinyproxy::start();
    let port = emu.emulator.https_addr().port();
    let with_env = |no_proxy: Option<&str>| {
        let mut command = bin();
        command.env("HTTPS_PROXY", proxy.url());
        match no_proxy {
            Some(list) => command.env("NO_PROXY", list),
            None => command.env_remove("NO_PROXY").env_remove("no_proxy"),
        };
        command
    };
    run_with(with_env(None), with(emu.register(), &device())).ok();
    assert_eq!(proxy.tunnels_to("localhost", port), 1, "{}", proxy.log());
    run_with(
        with_env(Some("example.org, localhost")),
        with(emu.register(), &device()),
    )
    .ok();
    assert_eq!(
        proxy.tunnels_to("localhost", port),
        1,
        "NO_PROXY was ignored"
    );
    run_with(
        with_env(None),
        with(
            emu.register(),
            &[&device()[..], &["--proxy".into(), "none".into()]].concat(),
        ),
    )
    .ok();
    assert_eq!(
        proxy.tunnels_to("localhost", port),
        1,
        "--proxy none was ignored"
    );
    // --proxy explicitly, and connect's hub connection through it as well.
    let mut args = with(emu.connect(), &device());
    args.extend(["--proxy".into(), proxy.url()]);
    run(args).ok();
    assert_eq!(proxy.tunnels_to("localhost", port), 2, "{}", proxy.log());
    let hub = emu.emulator.hub_addr().unwrap();
    assert_eq!(
        proxy.tunnels_to("127.0.0.1", hub.port()),
        1,
        "{}",
        proxy.log()
    );
}

#[test]
fn proxy_mistakes_have_their_exit_codes_and_never_show_the_password() {
    let emu = emulator();
    let proxy = Tinyproxy::start_with_auth("device", "right-pass");
    let wrong = format!("http://device:wrong-pass-3@127.0.0.1:{}", proxy.port());
    let run = run(with(
        emu.register(),
        &[&device()[..], &["--proxy".into(), wrong.clone()]].concat(),
    ));
    run.fails(1, "refused the credentials in the proxy URL");
    assert!(
        run.stderr.contains(&proxy.url_without_credentials()),
        "{run}"
    );
    assert!(
        !run.stderr.contains("wrong-pass-3") && !run.stdout.contains("wrong-pass-3"),
        "{run}"
    );
    // -v logs say nothing of it either.
    let run = common::run(with(
        emu.register(),
        &[&device()[..], &["--proxy".into(), wrong, "-v".into()]].concat(),
    ));
    assert!(!run.stderr.contains("wrong-pass-3"), "{run}");
    // The same proxy with the right credentials.
    let right = format!("http://device:right-pass@127.0.0.1:{}", proxy.port());
    common::run(with(
        emu.register(),
        &[&device()[..], &["--proxy".into(), right]].concat(),
    ))
    .ok();
    // A proxy that is down: exit 4, naming the proxy, within the deadline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let run = common::run(with(
        emu.register(),
        &[
            &device()[..],
            &[
                "--proxy".into(),
                down.clone(),
                "--retries".into(),
                "1".into(),
            ],
        ]
        .concat(),
    ));
    run.fails(4, &format!("the proxy {down} cannot be reached"));
    // A malformed proxy URL: exit 2, without echoing it.
    let run = common::run(with(
        emu.register(),
        &[
            &device()[..],
            &["--proxy".into(), "socks5://u:hidden-pw@h".into()],
        ]
        .concat(),
    ));
    run.fails(2, "invalid proxy URL");
    assert!(!run.stderr.contains("hidden-pw"), "{run}");
}

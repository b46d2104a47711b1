//! The command line: check, route, exit codes, environment overrides, port conflicts.

mod support;

use std::net::TcpListener;

use support::{free_ports, hub_command, run_hub_command, run_with_timeout, TestDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_describes_the_embedded_default() {
    let output = run_hub_command(&["check"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("bridge mqtt (mqtt-server)"), "{stdout}");
    assert!(
        stdout.contains("bridge firehose (websocket-server), format json"),
        "{stdout}"
    );
    assert!(stdout.contains("topics[0]: both \"#\" qos 1"), "{stdout}");
    assert!(
        stdout.contains("bridge gateway (zmq), format fedmsg"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bridge relay (zmq), format fedmsg")
            && stdout.contains("-> subscribes to prefix \"\""),
        "{stdout}"
    );
}

#[test]
fn a_bad_key_exits_78_naming_the_file_and_key_path() {
    let dir = TestDir::new("bad-config");
    let file = dir.write(
        "fedmsg.toml",
        "[bridges.fedmsg]\ntype = \"mqtt-server\"\n[[bridges.fedmsg.topics]]\npattern = \"#\"\ndirection = \"sideways\"\n",
    );
    let output = run_hub_command(&["check", "-c", file.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        stderr.contains("bridges.fedmsg.topics[0].direction"),
        "{stderr}"
    );
    assert!(stderr.contains("fedmsg.toml"), "{stderr}");
    assert!(stderr.contains("`in`, `out`, `both`"), "{stderr}");

    let unknown = dir.write("unknown.toml", "[bridges.x]\ntype = \"carrier-pigeon\"\n");
    let output = run_hub_command(&["run", "-c", unknown.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        stderr.contains("bridges.x.type") && stderr.contains("mqtt-server"),
        "{stderr}"
    );

    let typo = dir.write(
        "typo.toml",
        "[bridges.m]\ntype = \"mqtt-server\"\nlisten_on = \"x\"\n",
    );
    let output = run_hub_command(&["check", "-c", typo.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        text(&output.stderr).contains("bridges.m.listen_on"),
        "{output:?}"
    );
}

#[test]
fn environment_overrides_apply_after_files() {
    let output = run_with_timeout(
        hub_command()
            .args(["check"])
            .env("SWITCHYARD_HUB__NAME", "edge-7"),
        std::time::Duration::from_secs(30),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).contains("hub \"edge-7\""),
        "{output:?}"
    );
    let output = run_with_timeout(
        hub_command()
            .args(["check"])
            .env("SWITCHYARD_HUB__MAX_HOPS", "many"),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(text(&output.stderr).contains("hub.max_hops"), "{output:?}");
}

#[test]
fn route_shows_where_a_message_would_go() {
    let output = run_hub_command(&["route", "--from", "mqtt", "sensors/hall/temp"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("enters the hub as \"sensors/hall/temp\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("-> firehose (websocket-server) as \"sensors/hall/temp\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("-> mqtt (mqtt-server)"),
        "server bridges serve their other clients: {stdout}"
    );
}

#[test]
fn version_is_printed() {
    let output = run_hub_command(&["--version"]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_port_in_use_names_the_bridge_and_key() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let [admin, other] = free_ports::<2>();
    let output = run_with_timeout(
        hub_command()
            .args(["run"])
            .env("SWITCHYARD_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env(
                "SWITCHYARD_BRIDGES__MQTT__LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .env(
                "SWITCHYARD_BRIDGES__MQTT__WS_LISTEN",
                format!("127.0.0.1:{other}"),
            )
            .env("SWITCHYARD_BRIDGES__FIREHOSE__LISTEN", "127.0.0.1:0")
            .env(
                "SWITCHYARD_BRIDGES__GATEWAY__BIND",
                r#"["tcp://127.0.0.1:0"]"#,
            )
            .env(
                "SWITCHYARD_BRIDGES__RELAY__BIND",
                r#"["tcp://127.0.0.1:0"]"#,
            ),
        std::time::Duration::from_secs(30),
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("bridges.mqtt"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("bridges.mqtt.listen"), "{stderr}");
}

#[test]
fn every_example_configuration_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let output = run_hub_command(&["check", "-c", path.to_str().unwrap()]);
        assert!(output.status.success(), "{}: {output:?}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 2,
        "found only {checked} example configurations in {}",
        dir.display()
    );
}

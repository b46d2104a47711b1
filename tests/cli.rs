//! The command line: check, route, exit codes, environment overrides, port conflicts.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use support::hub::{hub_binary, HTTP_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT};
use support::process::{is_root, wait_timeout};
use support::{free_ports, hub_command, poll, run_hub_command, run_with_timeout, TestDir};

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

/// The environment that moves the container configuration's ports to free local ones.
fn container_ports() -> Vec<(String, String)> {
    let [admin, mqtt, ws, firehose] = free_ports::<4>();
    [
        ("SWITCHYARD_ADMIN__LISTEN", admin),
        ("SWITCHYARD_BRIDGES__MQTT__LISTEN", mqtt),
        ("SWITCHYARD_BRIDGES__MQTT__WS_LISTEN", ws),
        ("SWITCHYARD_BRIDGES__FIREHOSE__LISTEN", firehose),
    ]
    .into_iter()
    .map(|(key, port)| (key.to_owned(), format!("127.0.0.1:{port}")))
    .collect()
}

/// The process's line `key:` of /proc/PID/status, e.g. `Uid` or `NSpid`.
fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The image's configuration and user, outside a container: `switchyard run` with
/// config/container.toml as the unprivileged `nobody` and, when the test runs as root, as
/// PID 1 of its own PID namespace (as in a container without an init): /healthz answers,
/// `switchyard health` exits 0 (1 for an address nobody answers on), and SIGTERM makes
/// PID 1 drain and exit 0.
#[test]
fn the_container_configuration_runs_unprivileged_as_pid_1() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/container.toml");
    let check = run_hub_command(&["check", "-c", config]);
    assert!(check.status.success(), "{check:?}");
    assert!(
        text(&check.stdout).contains("admin 0.0.0.0:9090"),
        "{check:?}"
    );

    let ports = container_ports();
    let admin = ports[0].1.clone();
    let mut command = if is_root() {
        let mut command = Command::new("unshare");
        command.args(["--pid", "--fork", "--mount-proc"]);
        if std::path::Path::new("/usr/bin/setpriv").exists() {
            command.args([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ]);
        } else {
            command.args(["runuser", "-u", "nobody", "--"]);
        }
        command.arg(hub_binary());
        command
    } else {
        Command::new(hub_binary())
    };
    command
        .args(["run", "-c", config])
        .envs(ports.iter().map(|(key, value)| (key, value)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the hub");
    let hub_pid = if is_root() {
        // setpriv and runuser exec the hub: it is unshare's only child.
        let children = format!("/proc/{}/task/{}/children", child.id(), child.id());
        poll(READY_TIMEOUT, || {
            std::fs::read_to_string(&children)
                .ok()
                .and_then(|list| list.split_whitespace().next()?.parse::<u32>().ok())
                .filter(|pid| proc_status(*pid, "Name") == "switchyard")
                .ok_or(())
        })
        .expect("the hub started inside the PID namespace")
    } else {
        child.id()
    };
    let healthy = poll(READY_TIMEOUT, || {
        let output = run_with_timeout(
            hub_command()
                .args(["health", "-c", config])
                .envs(ports.clone()),
            HTTP_TIMEOUT * 2,
        );
        if output.status.success() {
            Ok(output)
        } else {
            Err(output)
        }
    });
    let output =
        healthy.unwrap_or_else(|output| panic!("switchyard health never passed: {output:?}"));
    assert_eq!(text(&output.stdout), "200 ok\n");
    let ready = run_with_timeout(
        hub_command()
            .args(["health", "--ready", "-c", config])
            .envs(ports.clone()),
        HTTP_TIMEOUT * 2,
    );
    assert!(ready.status.success(), "{ready:?}");
    let url = format!("http://{admin}/healthz");
    let by_url = run_hub_command(&["health", "--url", &url]);
    assert!(by_url.status.success(), "{by_url:?}");
    let [closed] = free_ports::<1>();
    let refused = run_hub_command(&[
        "health",
        "--url",
        &format!("http://127.0.0.1:{closed}/healthz"),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(text(&refused.stderr).contains("no answer"), "{refused:?}");

    assert_ne!(
        proc_status(hub_pid, "Uid").split(' ').next(),
        Some("0"),
        "the hub runs as root"
    );
    if is_root() {
        assert_eq!(proc_status(hub_pid, "Uid").split(' ').next(), Some("65534"));
        assert_eq!(
            proc_status(hub_pid, "NSpid").split(' ').nth(1),
            Some("1"),
            "the hub is PID 1 of its namespace"
        );
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the hub is our child's child,
    // alive (it just answered), so its pid is not reused.
    unsafe {
        libc::kill(hub_pid as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the hub did not exit within {STOP_TIMEOUT:?} of SIGTERM")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("\"Stopped.\""), "{stderr}");
}

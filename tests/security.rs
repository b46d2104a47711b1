//! Security of the server bridges, with real clients: MQTT over TLS (mosquitto_pub and
//! mosquitto_sub with a test CA, with and without client certificates), users written by
//! `switchyard passwd`, the firehose ACL (anonymous may read, not write), bearer tokens and
//! TLS on the WebSocket server (Python `websockets`), the admin endpoint over HTTPS
//! (curl), and certificates reloaded on SIGHUP while connections stay up.

mod support;

use std::process::Command;
use std::time::Duration;

use support::mosquitto_clients::{publish, Subscriber};
use support::tls::{served_serial, Certificates};
use support::{free_ports, python, require_command, run_with_timeout, Hub, TestDir};

/// How long a message may take to arrive, or a counter to move.
const WAIT: Duration = Duration::from_secs(10);
/// How long an expected silence is awaited (nothing must arrive).
const SILENCE: Duration = Duration::from_secs(2);
/// The password of the `publisher` user.
const PASSWORD: &str = "s3cret-pw";

/// Writes a users file with `publisher` through `switchyard passwd -b`, and adds and
/// deletes a second user to show the file is edited mosquitto_passwd style.
fn users_file(dir: &TestDir) -> String {
    let path = dir.path().join("users").display().to_string();
    for args in [
        vec!["passwd", "-b", PASSWORD, path.as_str(), "publisher"],
        vec!["passwd", "-b", "other", path.as_str(), "temporary"],
        vec!["passwd", "-D", path.as_str(), "temporary"],
    ] {
        let output = support::run_hub_command(&args);
        assert!(output.status.success(), "switchyard {args:?}: {output:?}");
    }
    let text = std::fs::read_to_string(&path).expect("users file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("publisher:$argon2id$"), "{text}");
    assert!(!text.contains(PASSWORD));
    path
}

/// The firehose: TCP and TLS listeners, users, anonymous read of everything, `publisher`
/// and the client certificate's user `bridge` may write.
fn firehose_config(
    ports: [u16; 4],
    certificates: &Certificates,
    users: &str,
    tokens: &str,
) -> String {
    let [admin, mqtt, mqtts, wss] = ports;
    let Certificates {
        ca,
        server_cert,
        server_key,
        ..
    } = certificates;
    format!(
        r##"
[hub]
name = "secure"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"
tls_listen = "127.0.0.1:{mqtts}"
tls = {{ cert = "{server_cert}", key = "{server_key}", client_ca = "{ca}" }}
users_file = "{users}"
acl = [
  {{ user = "anonymous", pattern = "#", access = "read" }},
  {{ user = "publisher", pattern = "#", access = "readwrite" }},
  {{ user = "bridge", pattern = "site/#", access = "readwrite" }},
]

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"
qos = 1

[bridges.firehose]
type = "websocket-server"
listen = "127.0.0.1:{wss}"
tls = {{ cert = "{server_cert}", key = "{server_key}" }}
tokens_file = "{tokens}"
acl = [
  {{ user = "anonymous", pattern = "#", access = "read" }},
  {{ user = "publisher", pattern = "#", access = "readwrite" }},
]

[[bridges.firehose.topics]]
pattern = "#"
direction = "both"
qos = 1
"##
    )
}

struct Firehose {
    hub: Hub,
    certificates: Certificates,
    ports: [u16; 4],
    _dir: TestDir,
}

fn start_firehose() -> Firehose {
    let certificates = Certificates::generate();
    let dir = TestDir::new("security");
    let users = users_file(&dir);
    let tokens = dir.write("tokens", "# user:token\npublisher:tok-123\n");
    let ports = free_ports::<4>();
    let config = firehose_config(ports, &certificates, &users, tokens.to_str().unwrap());
    let hub = Hub::start(&config, ports[0]);
    Firehose {
        hub,
        certificates,
        ports,
        _dir: dir,
    }
}

impl Firehose {
    fn mqtts(&self) -> String {
        self.ports[2].to_string()
    }

    fn denied(&self) -> f64 {
        self.hub
            .metric(r#"switchyard_messages_dropped_total{bridge="mqtt",reason="denied"}"#)
            .unwrap_or(0.0)
    }
}

#[test]
fn the_firehose_over_tls_lets_anonymous_read_and_only_users_write() {
    let firehose = start_firehose();
    let port = firehose.mqtts();
    let ca = firehose.certificates.ca.as_str();
    let tls = ["-h", "localhost", "-p", port.as_str(), "--cafile", ca];

    // Anonymous subscribers over TLS, MQTT 3.1.1 and 5.
    let mut reader = Subscriber::start(&[&tls[..], &["-t", "#", "-q", "1"]].concat());
    let mut reader_v5 =
        Subscriber::start(&[&tls[..], &["-t", "gerrit/#", "-V", "mqttv5"]].concat());

    // A user with write access publishes; both readers get it.
    let published = publish(
        &[
            &tls[..],
            &[
                "-u",
                "publisher",
                "-P",
                PASSWORD,
                "-t",
                "gerrit/change",
                "-m",
                "merged",
                "-q",
                "1",
            ],
        ]
        .concat(),
    );
    assert!(published.status.success(), "{published:?}");
    assert_eq!(
        reader.next_message(WAIT).as_deref(),
        Some("gerrit/change merged")
    );
    assert_eq!(
        reader_v5.next_message(WAIT).as_deref(),
        Some("gerrit/change merged")
    );

    // An anonymous publish (QoS 1: still acknowledged, so the client does not hang)
    // reaches no one and is counted as denied.
    let before = firehose.denied();
    for version in ["mqttv311", "mqttv5"] {
        let anonymous = publish(
            &[
                &tls[..],
                &["-t", "gerrit/spoof", "-m", "x", "-q", "1", "-V", version],
            ]
            .concat(),
        );
        assert!(anonymous.status.success(), "{anonymous:?}");
    }
    firehose.hub.wait_for_metric(
        r#"switchyard_messages_dropped_total{bridge="mqtt",reason="denied"}"#,
        |value| value >= before + 2.0,
        WAIT,
    );
    assert_eq!(
        reader.next_message(SILENCE),
        None,
        "a denied publish leaked"
    );

    // A wrong password: "bad user name or password" (3.1.1 return code 4, MQTT 5 0x86).
    for (version, expected) in [
        ("mqttv311", "bad user name or password"),
        ("mqttv5", "bad user name or password"),
    ] {
        let refused = publish(
            &[
                &tls[..],
                &[
                    "-u",
                    "publisher",
                    "-P",
                    "wrong",
                    "-t",
                    "t",
                    "-m",
                    "x",
                    "-V",
                    version,
                ],
            ]
            .concat(),
        );
        assert!(!refused.status.success(), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        assert!(
            expected.split('|').any(|text| stderr.contains(text)),
            "{version}: {stderr}"
        );
    }

    // The client certificate's common name (`bridge`) is the user: it may write site/#.
    let certificate = [
        "--cert",
        firehose.certificates.client_cert.as_str(),
        "--key",
        firehose.certificates.client_key.as_str(),
    ];
    let by_certificate = publish(
        &[
            &tls[..],
            &certificate[..],
            &["-t", "site/a", "-m", "from-cert", "-q", "1"],
        ]
        .concat(),
    );
    assert!(by_certificate.status.success(), "{by_certificate:?}");
    assert_eq!(
        reader.next_message(WAIT).as_deref(),
        Some("site/a from-cert")
    );
    let outside = publish(
        &[
            &tls[..],
            &certificate[..],
            &["-t", "gerrit/x", "-m", "no", "-q", "1"],
        ]
        .concat(),
    );
    assert!(outside.status.success(), "{outside:?}");
    assert_eq!(
        reader.next_message(SILENCE),
        None,
        "bridge may not write gerrit/#"
    );
}

#[test]
fn a_read_grant_narrower_than_the_filter_is_checked_per_message() {
    let firehose = start_firehose();
    let port = firehose.mqtts();
    let ca = firehose.certificates.ca.as_str();
    let tls = ["-h", "localhost", "-p", port.as_str(), "--cafile", ca];
    // `bridge` may read site/# only; it subscribes to everything.
    let mut narrow = Subscriber::start(
        &[
            &tls[..],
            &[
                "--cert",
                firehose.certificates.client_cert.as_str(),
                "--key",
                firehose.certificates.client_key.as_str(),
                "-t",
                "#",
            ],
        ]
        .concat(),
    );
    for topic in ["other/x", "site/y"] {
        let sent = publish(
            &[
                &tls[..],
                &["-u", "publisher", "-P", PASSWORD, "-t", topic, "-m", "m"],
            ]
            .concat(),
        );
        assert!(sent.status.success(), "{sent:?}");
    }
    assert_eq!(narrow.next_message(WAIT).as_deref(), Some("site/y m"));
}

#[test]
fn untrusted_and_expired_certificates_are_refused() {
    let certificates = Certificates::generate();
    let (expired_cert, expired_key) = certificates.issue_expired_server();
    let [admin, good, expired] = free_ports::<3>();
    let config = format!(
        r##"
[admin]
listen = "127.0.0.1:{admin}"

[bridges.good]
type = "mqtt-server"
listen = ""
tls_listen = "127.0.0.1:{good}"
tls = {{ cert = "{}", key = "{}", client_ca = "{}", require_certificate = true }}

[bridges.expired]
type = "mqtt-server"
listen = ""
tls_listen = "127.0.0.1:{expired}"
tls = {{ cert = "{expired_cert}", key = "{expired_key}" }}
"##,
        certificates.server_cert, certificates.server_key, certificates.ca
    );
    let _hub = Hub::start(&config, admin);
    let client = |port: u16, ca: &str, certificate: bool| {
        let port = port.to_string();
        let mut args = vec![
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            ca,
            "-t",
            "t",
            "-m",
            "x",
        ];
        if certificate {
            args.extend([
                "--cert",
                certificates.client_cert.as_str(),
                "--key",
                certificates.client_key.as_str(),
            ]);
        }
        publish(&args)
    };
    assert!(client(good, &certificates.ca, true).status.success());
    // The client does not trust the server's CA.
    assert!(!client(good, &certificates.other_ca, true).status.success());
    // require_certificate: no client certificate, no connection.
    assert!(!client(good, &certificates.ca, false).status.success());
    // The server's certificate expired.
    let refused = client(expired, &certificates.ca, false);
    assert!(!refused.status.success(), "{refused:?}");
}

#[test]
fn wss_takes_bearer_tokens_and_refuses_bad_ones_at_the_handshake() {
    let firehose = start_firehose();
    let script = r#"
import asyncio, json, ssl, sys
import websockets

port, ca = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca)
url = f"wss://localhost:{port}/"

async def main():
    async with websockets.connect(url + "?subscribe=%23", ssl=context) as reader:
        # A bad token: 401 at the handshake.
        try:
            async with websockets.connect(url, ssl=context,
                    additional_headers={"Authorization": "Bearer wrong"}):
                print("bad token accepted")
        except websockets.exceptions.InvalidStatus as error:
            print("bad token", error.response.status_code)
        # Anonymous publish: refused with an error op.
        async with websockets.connect(url, ssl=context) as anonymous:
            await anonymous.send(json.dumps({"op": "publish", "topic": "a/b", "payload": 1}))
            print("anonymous", json.loads(await anonymous.recv())["reason"])
        # A token in the query string: may publish.
        async with websockets.connect(url + "?token=tok-123", ssl=context) as writer:
            await writer.send(json.dumps({"op": "publish", "topic": "a/b", "payload": 2, "qos": 1, "id": "m"}))
            print("writer", json.loads(await writer.recv())["op"])
        message = json.loads(await asyncio.wait_for(reader.recv(), 10))
        print("reader", message["topic"], message["payload"])

asyncio.run(main())
"#;
    let output = run_with_timeout(
        Command::new(python()).args([
            "-c",
            script,
            &firehose.ports[3].to_string(),
            &firehose.certificates.ca,
        ]),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "bad token 401",
            "anonymous not_authorized",
            "writer ack",
            "reader a/b 2"
        ],
        "{output:?}"
    );
}

#[test]
fn certificates_reload_on_sighup_and_connections_stay_up() {
    let certificates = Certificates::generate();
    let dir = TestDir::new("reload");
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::copy(&certificates.server_cert, &cert).unwrap();
    std::fs::copy(&certificates.server_key, &key).unwrap();
    let [admin, mqtts, https] = free_ports::<3>();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let config = format!(
        r##"
[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = ""
tls_listen = "127.0.0.1:{mqtts}"
tls = {{ cert = "{cert}", key = "{key}" }}

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"

[bridges.https]
type = "websocket-server"
listen = "127.0.0.1:{https}"
tls = {{ cert = "{cert}", key = "{key}" }}
"##
    );
    let hub = Hub::start(&config, admin);
    assert_eq!(served_serial(mqtts), "serial=01");
    let port = mqtts.to_string();
    let tls = [
        "-h",
        "localhost",
        "-p",
        port.as_str(),
        "--cafile",
        certificates.ca.as_str(),
    ];
    let mut existing = Subscriber::start(&[&tls[..], &["-t", "#"]].concat());

    let (renewed_cert, renewed_key) = certificates.issue_server("renewed", 3);
    std::fs::copy(renewed_cert, &cert).unwrap();
    std::fs::copy(renewed_key, &key).unwrap();
    let pid = hub.pid().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own running child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    support::poll(WAIT, || match served_serial(mqtts).as_str() {
        "serial=03" => Ok(()),
        other => Err(other.to_owned()),
    })
    .expect("the new certificate is served after SIGHUP");
    support::poll(WAIT, || match served_serial(https).as_str() {
        "serial=03" => Ok(()),
        other => Err(other.to_owned()),
    })
    .expect("the WebSocket listener serves the new certificate too");

    // The connection made before the reload still works.
    let sent = publish(&[&tls[..], &["-t", "after/reload", "-m", "still-up"]].concat());
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        existing.next_message(WAIT).as_deref(),
        Some("after/reload still-up")
    );

    // A broken file on the next SIGHUP: the old certificate stays in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    support::poll(WAIT, || {
        hub.logs()
            .contains("reload on SIGHUP failed")
            .then_some(())
            .ok_or(())
    })
    .expect("the failed reload is logged");
    assert_eq!(served_serial(mqtts), "serial=03");
}

#[test]
fn the_admin_endpoint_serves_https() {
    let certificates = Certificates::generate();
    let admin = support::free_port();
    let config = format!(
        r##"
[admin]
listen = "127.0.0.1:{admin}"
tls = {{ cert = "{}", key = "{}" }}
"##,
        certificates.server_cert, certificates.server_key
    );
    let _hub = Hub::builder(admin).config(&config).spawn();
    let url = format!("https://localhost:{admin}/healthz");
    let curl = |ca: &str| {
        run_with_timeout(
            Command::new(require_command("curl")).args([
                "-sS",
                "--retry",
                "50",
                "--retry-connrefused",
                "--retry-delay",
                "0",
                "--max-time",
                "10",
                "--cacert",
                ca,
                &url,
            ]),
            Duration::from_secs(30),
        )
    };
    let trusted = curl(&certificates.ca);
    assert!(trusted.status.success(), "{trusted:?}");
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "ok\n");
    let untrusted = curl(&certificates.other_ca);
    assert!(!untrusted.status.success(), "{untrusted:?}");
}

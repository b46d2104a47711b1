//! Independent ZeroMQ and fedmsg peers for tests/zmq.rs, in Python: a pyzmq socket driven
//! line by line (`tests/python/zmq_peer.py`), the real `fedmsg-logger`, and a passive
//! fedmsg publisher (`tests/python/fedmsg_publisher.py`). Every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{python, run_with_timeout, TestDir};

/// Bound on one reply from a peer (a `recv` adds its own timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Lines a child prints, read on a thread so that reads can time out.
fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// One pyzmq socket in a Python process; killed on drop.
pub struct ZmqPeer {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
}

impl ZmqPeer {
    /// A `kind` socket (pub, sub, push, pull) bound to `bind`, connected to `connect`,
    /// subscribed (SUB) to `subscribe`.
    pub fn start(kind: &str, bind: &[String], connect: &[String], subscribe: &[&str]) -> ZmqPeer {
        let mut child = Command::new(python())
            .arg(script("zmq_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/python/zmq_peer.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let replies = line_reader(&mut child);
        let mut peer = ZmqPeer {
            child,
            stdin,
            replies,
        };
        let reply = peer.request(json!({
            "op": "socket", "type": kind, "bind": bind, "connect": connect,
            "subscribe": subscribe,
        }));
        assert_eq!(reply["ok"], true, "{kind} socket: {reply}");
        peer
    }

    /// Sends one command and waits for its reply.
    pub fn request(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the peer");
        let line = self
            .replies
            .recv_timeout(REPLY_TIMEOUT + Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no reply from the peer to {command}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer said {line}: {e}"))
    }

    /// Sends one message of `frames` without waiting (`Err` where it would wait).
    pub fn send(&mut self, frames: &[&[u8]]) -> Result<(), String> {
        let frames: Vec<String> = frames.iter().map(|frame| hex(frame)).collect();
        let reply = self.request(json!({"op": "send", "frames": frames}));
        match reply["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(reply.to_string()),
        }
    }

    /// The next message's frames, or `None` after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Vec<Vec<u8>>> {
        let reply = self.request(json!({"op": "recv", "timeout_ms": timeout.as_millis() as u64}));
        reply["frames"].as_array().map(|frames| {
            frames
                .iter()
                .map(|frame| unhex(frame.as_str().expect("hex frame")))
                .collect()
        })
    }
}

impl Drop for ZmqPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fedmsg configuration file (Python) for publishers and fedmsg-logger: topic prefix
/// `org.fedoraproject`, environment `prod`, unsigned, with a passive endpoint
/// `switchyard-test.publisher` and the relay inlet `relay_inbound`.
pub fn fedmsg_config(dir: &TestDir, publisher: &str, relay_inbound: &str) -> PathBuf {
    dir.write(
        "fedmsg-config.py",
        &format!(
            r#"config = dict(
    topic_prefix="org.fedoraproject",
    environment="prod",
    endpoints={{"switchyard-test.publisher": ["{publisher}"]}},
    relay_inbound=["{relay_inbound}"],
    sign_messages=False,
    validate_signatures=False,
)
"#
        ),
    )
}

/// Runs `fedmsg-logger --json-input` once: it connects to `relay_inbound`, waits its
/// post-init sleep, sends `message` on `org.fedoraproject.prod.MODNAME.TOPIC`, lingers.
pub fn fedmsg_logger(config: &Path, modname: &str, topic: &str, message: &str) {
    let logger = python()
        .parent()
        .expect("the venv's bin directory")
        .join("fedmsg-logger");
    let output = run_with_timeout(
        Command::new(logger)
            .arg("--config-filename")
            .arg(config)
            .args(["--json-input", "--modname", modname, "--topic", topic])
            .args(["--message", message]),
        REPLY_TIMEOUT,
    );
    assert!(output.status.success(), "fedmsg-logger failed: {output:?}");
}

/// A passive fedmsg publisher (`fedmsg_publisher.py`) sending `{"n": N}` every 50 ms on
/// `org.fedoraproject.prod.switchyard.count`; killed on drop.
pub struct FedmsgPublisher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl FedmsgPublisher {
    /// Starts publishing with the endpoint of `config`.
    pub fn start(config: &Path) -> FedmsgPublisher {
        let mut child = Command::new(python())
            .arg(script("fedmsg_publisher.py"))
            .arg(config)
            .arg("switchyard-test.publisher")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/python/fedmsg_publisher.py");
        let lines = line_reader(&mut child);
        FedmsgPublisher { child, lines }
    }

    /// The `msg_id` fedmsg gave message `n` (reading what the publisher reported).
    pub fn msg_id(&mut self, n: u64) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(REPLY_TIMEOUT)
                .unwrap_or_else(|_| panic!("the publisher did not report message {n}"));
            let report: Value = serde_json::from_str(&line).expect("a JSON report");
            if report["n"] == n {
                return report["msg_id"].as_str().expect("msg_id").to_owned();
            }
        }
    }
}

impl Drop for FedmsgPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

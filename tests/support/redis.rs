//! A private `redis-server` on a free port, without persistence: "the remote Redis" that a
//! test may restart without disturbing the shared one on 6379 or other tests. Clients are
//! `redis-cli` and redis-py (in the test virtualenv), so the other end is never the hub's
//! own client library.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use super::process::{
    free_port, poll, python, require_command, run_with_timeout, send_signal, wait_timeout, TestDir,
};

/// How long redis-server may take to accept connections, and to exit after a signal.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `redis-cli` or Python client run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A redis-server listening on 127.0.0.1:[`RedisServer::port`] (`--save "" --appendonly
/// no`: a restart starts empty). Killed on drop; its log is printed when the test fails.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Whether `port` speaks TLS (and nothing listens in plain text).
    tls: bool,
    /// Arguments after the defaults (`--requirepass`, `--user`, the TLS files...); kept
    /// for restarts.
    extra_args: Vec<String>,
    log_path: PathBuf,
    dir: TestDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with `extra_args` after the defaults (later arguments
    /// win), e.g. `["--requirepass", "secret"]`.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        RedisServer::launch(false, extra_args)
    }

    /// A server that speaks only TLS on its port (`--tls-port PORT --port 0`);
    /// `extra_args` names the files (`--tls-cert-file`, `--tls-key-file`,
    /// `--tls-ca-cert-file`) and sets `--tls-auth-clients`. redis-cli then needs `--tls
    /// --cacert CA` (and `--cert`/`--key` when clients must present one).
    pub fn start_tls(extra_args: &[&str]) -> RedisServer {
        RedisServer::launch(true, extra_args)
    }

    fn launch(tls: bool, extra_args: &[&str]) -> RedisServer {
        let dir = TestDir::new("redis");
        let log_path = dir.path().join("redis.log");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            tls,
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            log_path,
            dir,
        };
        server.spawn();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server), as a hub `redis` bridge's
    /// `url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM) and starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the server again after [`RedisServer::stop`] (empty, same port).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        self.spawn();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(&child, libc::SIGTERM);
        if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on port {} did not stop in time", self.port);
        }
    }

    /// Runs `redis-cli -p PORT ARGS...`; its output (panics if it fails). Credentials and
    /// TLS options go first in `args` (`-a`, `--user`, `--tls`, `--cacert`, ...).
    pub fn cli(&self, args: &[&str]) -> String {
        let program = require_command("redis-cli");
        let output = run_with_timeout(
            Command::new(program)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args),
            CLIENT_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a Python program with redis-py; `REDIS_PORT` is set for it. Its output.
    pub fn python(&self, program: &str) -> Output {
        let output = run_with_timeout(
            Command::new(python())
                .arg("-c")
                .arg(program)
                .env("REDIS_PORT", self.port.to_string()),
            CLIENT_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "the redis-py program failed:\n{program}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let program = require_command("redis-server");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path);
        let mut log = log.unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let _ = writeln!(log, "---- support: starting redis-server ----");
        let stderr = log.try_clone().expect("clone the log file handle");
        let port = self.port.to_string();
        let listen: &[&str] = if self.tls {
            &["--tls-port", &port, "--port", "0"]
        } else {
            &["--port", &port]
        };
        let child = Command::new(&program)
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let accepting = poll(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "redis-server exited with {status} on start:\n{}",
                    self.logs()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        });
        if let Err(e) = accepting {
            panic!("redis-server did not accept on {addr} within {START_TIMEOUT:?}: {e}");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- redis-server log ({}) ----\n{}",
                self.log_path.display(),
                self.logs()
            );
        }
    }
}

/// A redis-py subscriber in its own process, printing what it receives.
pub struct PySubscriber {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

/// The redis-py subscriber: subscribes to its arguments, says `ready`, then prints each
/// message as a JSON line; it stops by itself after two minutes at most.
const SUBSCRIBER_PROGRAM: &str = r#"
import json, os, signal, sys, redis
signal.alarm(120)
client = redis.Redis(port=int(os.environ["REDIS_PORT"]))
pubsub = client.pubsub()
pubsub.subscribe(*sys.argv[1:])
confirmed = 0
while confirmed < len(sys.argv) - 1:
    message = pubsub.get_message(timeout=10)
    if message and message["type"] == "subscribe":
        confirmed += 1
print("ready", flush=True)
for message in pubsub.listen():
    if message["type"] == "message":
        print(json.dumps({"channel": message["channel"].decode(),
                          "data": message["data"].decode("utf-8", "replace")}), flush=True)
"#;

impl RedisServer {
    /// Starts a redis-py subscriber of `channels` and waits until it is subscribed.
    pub fn subscriber(&self, channels: &[&str]) -> PySubscriber {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(SUBSCRIBER_PROGRAM)
            .args(channels)
            .env("REDIS_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the redis-py subscriber: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = PySubscriber { child, lines };
        let first = subscriber.line("the subscriber's ready line");
        assert_eq!(first, "ready");
        subscriber
    }
}

impl PySubscriber {
    fn line(&self, awaited: &str) -> String {
        self.lines
            .recv_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|_| panic!("no {awaited} from the redis-py subscriber"))
    }

    /// The next message: channel and payload (as text).
    pub fn next(&self, awaited: &str) -> (String, String) {
        let line = self.line(awaited);
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("subscriber line {line:?}: {e}"));
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        (text("channel"), text("data"))
    }
}

impl Drop for PySubscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

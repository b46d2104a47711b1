//! A private Mosquitto broker on a free port: "the remote broker" that tests may stop,
//! kill and restart without disturbing the shared broker on 1883 or other tests.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::process::{
    free_port, is_root, poll, require_command, send_signal, wait_timeout, TestDir,
};

/// How long Mosquitto may take to accept connections, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A Mosquitto process listening on 127.0.0.1:[`Mosquitto::port`], anonymous access
/// allowed, persistence on (sessions, queued QoS 1 messages and retained messages survive
/// [`Mosquitto::restart`], as with the packaged configuration). Killed on drop; when the
/// test fails, drop prints its log.
pub struct Mosquitto {
    /// The running process; `None` while stopped.
    child: Option<Child>,
    /// The listener's port; the same across restarts.
    port: u16,
    /// The generated configuration file.
    config: PathBuf,
    /// Mosquitto's stdout and stderr, appended across restarts.
    log_path: PathBuf,
    /// Holds the configuration, the persistence database and the log.
    dir: TestDir,
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// Like [`Mosquitto::start`], with `extra` appended to the generated configuration
    /// (e.g. `password_file`, TLS `cafile`/`certfile`/`keyfile` for the listener).
    pub fn start_with(extra: &str) -> Mosquitto {
        let dir = TestDir::new("mosquitto");
        let port = free_port();
        // As root, Mosquitto switches to the `mosquitto` user unless told to stay root;
        // staying keeps the test directory writable for persistence.
        let user = if is_root() { "user root\n" } else { "" };
        let config = dir.write(
            "mosquitto.conf",
            &format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 log_dest stderr\n\
                 log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
                 {user}{extra}\n",
                dir.path().display()
            ),
        );
        let log_path = dir.path().join("mosquitto.log");
        let mut broker = Mosquitto {
            child: None,
            port,
            config,
            log_path,
            dir,
        };
        broker.spawn();
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `mqtt://127.0.0.1:PORT`, as a hub `mqtt` bridge's `url`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Everything Mosquitto logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM and wait: a clean shutdown that saves the persistence database.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM);
    }

    /// SIGKILL: a crash; what was not saved yet is lost.
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// Stops the broker (if running) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the broker again after [`Mosquitto::stop`] or [`Mosquitto::kill`].
    pub fn resume(&mut self) {
        assert!(
            self.child.is_none(),
            "mosquitto on port {} is already running",
            self.port
        );
        self.spawn();
    }

    fn spawn(&mut self) {
        let program = require_command("mosquitto");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path);
        let mut log = log.unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let _ = writeln!(log, "---- support: starting mosquitto ----");
        let stderr = log.try_clone().expect("clone the log file handle");
        let child = Command::new(&program)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        self.child = Some(child);
        self.wait_until_accepting();
    }

    fn wait_until_accepting(&mut self) {
        let addr = self.addr();
        let accepting = poll(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("mosquitto exited with {status} on start (log below)");
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        });
        if let Err(e) = accepting {
            panic!("mosquitto did not accept on {addr} within {START_TIMEOUT:?}: {e}");
        }
    }

    fn signal_and_wait(&mut self, signal: libc::c_int) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(&child, signal);
        if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mosquitto on port {} did not exit within {STOP_TIMEOUT:?}",
                self.port
            );
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- mosquitto log ({}) ----\n{}",
                self.log_path.display(),
                self.logs()
            );
        }
    }
}

//! The real hub binary, run as a user runs it: `switchyard run -c FILE...`.
//!
//! ```ignore
//! let [admin, mqtt] = support::free_ports();
//! let mut hub = Hub::start(&format!(r#"
//!     [admin]
//!     listen = "127.0.0.1:{admin}"
//!     [bridges.mqtt]
//!     type = "mqtt-server"
//!     listen = "127.0.0.1:{mqtt}"
//! "#), admin);
//! // ... talk to 127.0.0.1:{mqtt} ...
//! hub.wait_for_metric(r#"switchyard_messages_received_total{bridge="mqtt"}"#, |n| n >= 1.0, Duration::from_secs(10));
//! assert!(hub.stop().success());
//! ```
//!
//! Blocking methods suit plain `#[test]`s and multi-threaded runtimes. In a
//! `#[tokio::test]` on the default current-thread runtime, a blocking wait also stops the
//! test's own clients from running: use the `_async` twins there.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;
use std::{env, thread};

use super::http;
use super::metrics;
use super::process::{
    poll, poll_async, print_log_tail, run_with_timeout, send_signal, wait_timeout, TestDir,
};

/// How long a hub may take to answer `/readyz` (or `/healthz`) after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a hub may take to exit after SIGTERM (its drain is bounded by its own
/// `hub.shutdown_timeout`, shorter than this).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one admin HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a one-shot subcommand (`check`, `route`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the hub's log printed when a test fails while the hub is alive.
const LOG_LINES_ON_FAILURE: usize = 400;

/// The hub binary built from this workspace.
pub fn hub_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// A `Command` for the hub binary with a clean environment: no inherited `SWITCHYARD_*`
/// variable (they would override the test's configuration), `RUST_LOG` from
/// `SWITCHYARD_TEST_LOG` or `info`, and `NO_COLOR=1`.
pub fn hub_command() -> Command {
    let mut command = Command::new(hub_binary());
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            command.env_remove(key);
        }
    }
    let log = env::var("SWITCHYARD_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
    command.env("RUST_LOG", log).env("NO_COLOR", "1");
    command
}

/// A configuration for hub `name` with its admin endpoint on `admin`, an embedded broker
/// (bridge `broker`) on `mqtt` passing every topic both ways at QoS 1, and `bridges`
/// (further TOML tables).
pub fn hub_with_broker(name: &str, admin: u16, broker: &str, mqtt: u16, bridges: &str) -> String {
    format!(
        r##"
[hub]
name = "{name}"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.{broker}]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.{broker}.topics]]
pattern = "#"
direction = "both"
qos = 1

{bridges}
"##
    )
}

/// Runs `switchyard ARGS...` to completion (e.g. `["check", "-c", path]`), bounded by
/// [`COMMAND_TIMEOUT`]. For extra environment, use [`hub_command`] and `run_with_timeout`.
pub fn run_hub_command(args: &[&str]) -> Output {
    run_with_timeout(hub_command().args(args), COMMAND_TIMEOUT)
}

/// How to start a hub: configuration files (merged in order), environment, and for the
/// support library's self-test only, a stand-in program.
#[must_use]
pub struct HubBuilder {
    /// Port of the admin HTTP listener the test configured (`[admin] listen`).
    admin_port: u16,
    /// Configuration files' contents, passed as `-c` in this order.
    configs: Vec<String>,
    /// Extra environment for the hub (e.g. `SWITCHYARD_BRIDGES__MQTT__LISTEN`).
    env: Vec<(String, String)>,
    /// Replaces the hub binary: program and the arguments before `run -c ...`.
    program: Option<(PathBuf, Vec<String>)>,
}

impl HubBuilder {
    /// Adds a configuration file with this TOML; files merge in the order added.
    pub fn config(mut self, toml: &str) -> Self {
        self.configs.push(toml.to_owned());
        self
    }

    /// Sets an environment variable for the hub.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `program leading_args... run -c ...` instead of the hub (support self-test).
    pub fn program(mut self, program: impl Into<PathBuf>, leading_args: &[&str]) -> Self {
        let leading_args = leading_args.iter().map(|arg| arg.to_string()).collect();
        self.program = Some((program.into(), leading_args));
        self
    }

    /// Starts the hub and waits until `GET /readyz` answers 200.
    pub fn start(self) -> Hub {
        let mut hub = self.spawn();
        hub.wait_until_answers("/readyz", READY_TIMEOUT);
        hub
    }

    /// Starts the hub and waits only until `GET /healthz` answers 200 (for tests where a
    /// required bridge cannot be up).
    pub fn start_unready(self) -> Hub {
        let mut hub = self.spawn();
        hub.wait_until_answers("/healthz", READY_TIMEOUT);
        hub
    }

    /// Starts the hub without waiting for anything (for tests that expect it to exit:
    /// follow with [`Hub::wait_exit`]).
    pub fn spawn(self) -> Hub {
        let dir = TestDir::new("hub");
        let config_files = self
            .configs
            .iter()
            .enumerate()
            .map(|(i, toml)| dir.write(&format!("config-{i}.toml"), toml))
            .collect();
        let log_path = dir.path().join("hub.log");
        let mut hub = Hub {
            child: None,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port)),
            config_files,
            env: self.env,
            program: self.program,
            log_path,
            dir,
        };
        hub.spawn_process();
        hub
    }
}

/// A running hub process; killed on drop. When the test fails, drop prints the end of the
/// hub's log and keeps its directory (configuration and full log) for inspection.
pub struct Hub {
    /// The process; `None` once it exited and was reaped.
    child: Option<Child>,
    /// The admin HTTP address: `/healthz`, `/readyz`, `/metrics`, `/api/bridges`.
    admin: SocketAddr,
    /// Configuration files given with `-c`, in order.
    config_files: Vec<PathBuf>,
    /// Extra environment, kept for [`Hub::restart`].
    env: Vec<(String, String)>,
    /// Stand-in program (support self-test), kept for [`Hub::restart`].
    program: Option<(PathBuf, Vec<String>)>,
    /// stdout and stderr of every run of this hub, appended.
    log_path: PathBuf,
    /// Holds the configuration files and the log.
    dir: TestDir,
}

impl Hub {
    /// Starts `switchyard run -c <config>` and waits until `/readyz` answers 200.
    /// `admin_port` must be the port of `[admin] listen` in `config`.
    pub fn start(config: &str, admin_port: u16) -> Hub {
        Hub::builder(admin_port).config(config).start()
    }

    /// Like [`Hub::start`], but waits only for `/healthz`.
    pub fn start_unready(config: &str, admin_port: u16) -> Hub {
        Hub::builder(admin_port).config(config).start_unready()
    }

    /// For several configuration files, environment overrides, or not waiting at all.
    pub fn builder(admin_port: u16) -> HubBuilder {
        HubBuilder {
            admin_port,
            configs: Vec::new(),
            env: Vec::new(),
            program: None,
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The configuration files, e.g. to run `switchyard check` on the same files.
    pub fn config_files(&self) -> &[PathBuf] {
        &self.config_files
    }

    /// A directory that lives as long as the hub, for spools and other files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while the hub runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the hub printed so far (stdout and stderr, every run).
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on the admin address: status and body. Panics if no response comes.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let response = self.try_http_get(path).unwrap_or_else(|e| {
            panic!("GET http://{}{path}: {e}", self.admin);
        });
        (response.status, response.body)
    }

    /// `GET path`, with connection errors returned (e.g. to see that the hub is gone).
    pub fn try_http_get(&self, path: &str) -> std::io::Result<http::Response> {
        http::get(self.admin, path, HTTP_TIMEOUT)
    }

    /// [`Hub::http_get`] for async tests.
    pub async fn http_get_async(&self, path: &str) -> (u16, String) {
        let response = http::get_async(self.admin, path, HTTP_TIMEOUT).await;
        let response = response.unwrap_or_else(|e| panic!("GET http://{}{path}: {e}", self.admin));
        (response.status, response.body)
    }

    /// `POST path` (empty body) on the admin address: status and body.
    pub async fn http_post_async(&self, path: &str) -> (u16, String) {
        let response = http::post_async(self.admin, path, HTTP_TIMEOUT).await;
        let response = response.unwrap_or_else(|e| panic!("POST http://{}{path}: {e}", self.admin));
        (response.status, response.body)
    }

    /// Replaces the contents of configuration file `index` (as given to the builder), for
    /// a reload.
    pub fn rewrite_config(&self, index: usize, toml: &str) {
        fs::write(&self.config_files[index], toml).expect("rewrite the configuration file");
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) without waiting for anything.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the hub is not running");
        send_signal(child, signal);
    }

    /// Every sample of `/metrics`.
    pub fn metrics(&self) -> Vec<metrics::Sample> {
        metrics::parse(&self.metrics_text(self.http_get("/metrics")))
    }

    /// The value of a series in `/metrics`, selected as it is printed:
    /// `switchyard_messages_received_total{bridge="mqtt"}`. Labels not given are summed
    /// over (see [`metrics::select`]); `None` when no series matches.
    pub fn metric(&self, selector: &str) -> Option<f64> {
        metrics::select(&self.metrics(), selector)
    }

    /// [`Hub::metric`] for async tests.
    pub async fn metric_async(&self, selector: &str) -> Option<f64> {
        let text = self.metrics_text(self.http_get_async("/metrics").await);
        metrics::select(&metrics::parse(&text), selector)
    }

    /// Waits until the metric exists and `accept(value)` holds; returns the value. Polls
    /// every [`POLL_INTERVAL`](super::process::POLL_INTERVAL); panics after `timeout` with the last value seen.
    pub fn wait_for_metric(
        &self,
        selector: &str,
        accept: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let found = poll(timeout, || match self.metric(selector) {
            Some(value) if accept(value) => Ok(value),
            other => Err(format!("last value: {other:?}")),
        });
        found.unwrap_or_else(|last| {
            panic!("metric {selector} not as expected after {timeout:?}; {last}")
        })
    }

    /// [`Hub::wait_for_metric`] for async tests.
    pub async fn wait_for_metric_async(
        &self,
        selector: &str,
        accept: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let found = poll_async(timeout, || async {
            match self.metric_async(selector).await {
                Some(value) if accept(value) => Ok(value),
                other => Err(format!("last value: {other:?}")),
            }
        });
        found.await.unwrap_or_else(|last| {
            panic!("metric {selector} not as expected after {timeout:?}; {last}")
        })
    }

    /// The hub's log lines that contain `text`.
    pub fn log_lines_containing(&self, text: &str) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|line| line.contains(text))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the hub logged `text` at least `times` times; panics after `timeout`.
    pub async fn wait_for_log(&self, text: &str, times: usize, timeout: Duration) {
        let found = poll_async(timeout, || async {
            match self.log_lines_containing(text).len() >= times {
                true => Ok(()),
                false => Err(()),
            }
        });
        found.await.unwrap_or_else(|()| {
            panic!("the hub did not log {text:?} {times} times within {timeout:?}")
        });
    }

    /// Bridge `name`'s entry in `/api/bridges`.
    pub async fn bridge_status(&self, name: &str) -> Result<serde_json::Value, String> {
        let (status, body) = self.http_get_async("/api/bridges").await;
        let bridges: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
        bridges
            .as_array()
            .and_then(|list| list.iter().find(|bridge| bridge["name"] == name))
            .cloned()
            .ok_or_else(|| format!("no bridge {name} in {body}"))
    }

    /// Waits until `/api/bridges` shows `messages` messages in bridge `name`'s queue;
    /// panics after `timeout` with the last entry seen.
    pub async fn wait_for_bridge_queue(&self, name: &str, messages: u64, timeout: Duration) {
        let found = poll_async(timeout, || async {
            let entry = self.bridge_status(name).await?;
            match entry["queue"]["messages"].as_u64() {
                Some(queued) if queued == messages => Ok(()),
                _ => Err(format!("last answer: {entry}")),
            }
        });
        found.await.unwrap_or_else(|last| {
            panic!("bridge {name}'s queue did not hold {messages} within {timeout:?}; {last}")
        });
    }

    /// Waits until `/api/bridges` reports bridge `name` down with an error containing
    /// `expected` (ignoring case; `""` takes the first error); returns the error. Panics
    /// after `timeout` with the last entry seen.
    pub async fn wait_for_bridge_error(
        &self,
        name: &str,
        expected: &str,
        timeout: Duration,
    ) -> String {
        let expected = expected.to_lowercase();
        let found = poll_async(timeout, || async {
            let entry = self.bridge_status(name).await?;
            match (entry["state"].as_str(), entry["last_error"].as_str()) {
                (Some("down"), Some(error)) if error.to_lowercase().contains(&expected) => {
                    Ok(error.to_owned())
                }
                _ => Err(format!("last answer: {entry}")),
            }
        });
        let error = found.await.unwrap_or_else(|last| {
            panic!("bridge {name} reported no error with {expected:?} within {timeout:?}; {last}")
        });
        println!("{name} is down: {error}");
        error
    }

    /// Waits until `GET path` answers `status`; returns the body. Panics after `timeout`.
    pub fn wait_for_http(&self, path: &str, status: u16, timeout: Duration) -> String {
        let found = poll(timeout, || match self.try_http_get(path) {
            Ok(response) if response.status == status => Ok(response.body),
            Ok(response) => Err(format!(
                "last answer: {} {}",
                response.status, response.body
            )),
            Err(e) => Err(format!("last error: {e}")),
        });
        found.unwrap_or_else(|last| {
            panic!("GET {path} did not answer {status} in {timeout:?}; {last}")
        })
    }

    /// [`Hub::wait_for_http`] for async tests.
    pub async fn wait_for_http_async(&self, path: &str, status: u16, timeout: Duration) -> String {
        let found = poll_async(timeout, || async {
            match http::get_async(self.admin, path, HTTP_TIMEOUT).await {
                Ok(response) if response.status == status => Ok(response.body),
                Ok(response) => Err(format!(
                    "last answer: {} {}",
                    response.status, response.body
                )),
                Err(e) => Err(format!("last error: {e}")),
            }
        });
        found.await.unwrap_or_else(|last| {
            panic!("GET {path} did not answer {status} in {timeout:?}; {last}")
        })
    }

    /// SIGTERM, then waits (at most [`STOP_TIMEOUT`]) for the hub to exit; its status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM, STOP_TIMEOUT)
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) and waits for exit; panics (after killing the
    /// hub) if it is still running after `timeout`.
    pub fn stop_with(&mut self, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        if let Some(child) = &self.child {
            send_signal(child, signal);
        }
        self.wait_exit(timeout)
    }

    /// [`Hub::stop`] for async tests: the runtime keeps running while the hub drains.
    pub async fn stop_async(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the hub is not running");
        send_signal(child, libc::SIGTERM);
        let exited = poll_async(STOP_TIMEOUT, || {
            let status = child.try_wait().expect("wait for the hub");
            async move { status.ok_or(()) }
        });
        match exited.await {
            Ok(status) => {
                self.child = None;
                status
            }
            Err(()) => self.kill_after_timeout(STOP_TIMEOUT),
        }
    }

    /// SIGKILL: a crash, with no drain. Returns once the process is gone.
    pub fn kill(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGKILL, STOP_TIMEOUT)
    }

    /// Waits for the hub to exit by itself; panics (after killing it) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the hub is not running");
        match wait_timeout(child, timeout) {
            Some(status) => {
                self.child = None;
                status
            }
            None => self.kill_after_timeout(timeout),
        }
    }

    /// Stops the hub (if it runs) and starts it again with the same configuration and
    /// environment, waiting for `/readyz`. The log continues in the same file.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.success(),
                "the hub exited with {status} on stop before restart"
            );
        }
        self.spawn_process();
        self.wait_until_answers("/readyz", READY_TIMEOUT);
    }

    fn spawn_process(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path);
        let mut log = log.unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let _ = writeln!(log, "---- support: starting the hub ----");
        let mut command = match &self.program {
            Some((program, leading_args)) => {
                let mut command = Command::new(program);
                command.args(leading_args);
                command
            }
            None => hub_command(),
        };
        command.arg("run");
        for file in &self.config_files {
            command.arg("-c").arg(file);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let stderr = log.try_clone().expect("clone the log file handle");
        command.stdin(Stdio::null()).stdout(log).stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        self.child = Some(child);
    }

    /// Polls `GET path` until 200; panics early, with the log, if the hub exits.
    fn wait_until_answers(&mut self, path: &str, timeout: Duration) {
        let admin = self.admin;
        let answered = poll(timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("the hub exited with {status} before {path} answered 200 (log below)");
            }
            match http::get(admin, path, Duration::from_secs(1)) {
                Ok(response) if response.status == 200 => Ok(()),
                Ok(response) => Err(format!("{} {}", response.status, response.body.trim())),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(last) = answered {
            panic!("GET http://{admin}{path} did not answer 200 within {timeout:?} (last: {last})");
        }
    }

    fn kill_after_timeout(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the hub was still running {timeout:?} after it was asked to stop; killed it")
    }

    fn metrics_text(&self, (status, body): (u16, String)) -> String {
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        body
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let title = format!("hub log ({})", self.log_path.display());
            print_log_tail(&title, &self.logs(), LOG_LINES_ON_FAILURE);
        }
    }
}

//! A private RabbitMQ node: its own node name, ports, configuration, data and log, for
//! tests that need settings the shared broker on 5672 must not get (a TLS listener, client
//! certificates). Other tests keep using the shared broker meanwhile.
//!
//! The node is the packaged server script run in the foreground, as scripts/bench does
//! (`RABBITMQ_NODENAME`, `RABBITMQ_CONFIG_FILE`, `RABBITMQ_MNESIA_BASE`, ...). As root it
//! runs as the `rabbitmq` user (through `setpriv`, which keeps the process this module
//! spawned the node's own, so stopping it stops the node), and that user must own the
//! node's directory and read every file its configuration names: [`RabbitNodeBuilder::file`]
//! copies such files in.
//!
//! A node takes about ten seconds to boot (Erlang, then RabbitMQ's boot steps), so a test
//! should start as few as it can.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{
    free_ports, is_root, poll, print_log_tail, require_command, run_with_timeout, send_signal,
    wait_timeout, TestDir,
};
use super::tls::Certificates;

/// How long a node may take to accept connections on every listener. Booting takes about
/// ten seconds on the 2-core test machine, more while other tests load it.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one `rabbitmqctl` run against the node.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of the node's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 60;

/// The server script itself. Debian's package puts it in /usr/lib/rabbitmq/bin and, in
/// /usr/sbin, a wrapper that runs it through `su` as root (a process that a signal to the
/// wrapper would not stop); elsewhere the script on the PATH is the real one.
fn server_script() -> PathBuf {
    let packaged = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    match packaged.is_file() {
        true => packaged.to_path_buf(),
        false => require_command("rabbitmq-server"),
    }
}

/// The home directory of `user` (from `getent passwd`), where the Erlang cookie that
/// `rabbitmqctl` (run as that user by the packaged wrapper) uses lives.
fn home_of(user: &str) -> String {
    let output = run_with_timeout(Command::new("getent").args(["passwd", user]), CTL_TIMEOUT);
    let entry = String::from_utf8_lossy(&output.stdout).into_owned();
    let home = entry
        .trim()
        .split(':')
        .nth(5)
        .unwrap_or_default()
        .to_owned();
    assert!(
        output.status.success() && !home.is_empty(),
        "no user {user:?} (the rabbitmq-server package creates it): {entry:?}"
    );
    home
}

/// What a node will be started with: extra configuration, the files it names, and the
/// ports to wait for.
#[must_use]
pub struct RabbitNodeBuilder {
    /// `rabbitmq.conf` lines after the plain listener.
    config: String,
    /// Listener ports besides the plain one, awaited by [`RabbitNodeBuilder::start`].
    ports: Vec<u16>,
    /// The node's directory: configuration, copied files, data and log.
    dir: TestDir,
}

impl RabbitNodeBuilder {
    /// Appends `lines` to `rabbitmq.conf` (new-style `key = value` lines).
    pub fn config(mut self, lines: &str) -> Self {
        self.config.push_str(lines);
        self.config.push('\n');
        self
    }

    /// Waits, on start, until `port` also accepts connections (a listener of
    /// [`RabbitNodeBuilder::config`]).
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// Copies `source` into the node's directory, where the node's user can read it;
    /// returns the copy's absolute path, for the configuration.
    pub fn file(&self, source: &str) -> String {
        let name = Path::new(source)
            .file_name()
            .unwrap_or_else(|| panic!("{source} names no file"));
        let copy = self.dir.path().join(name);
        fs::copy(source, &copy)
            .unwrap_or_else(|e| panic!("copy {source} to {}: {e}", copy.display()));
        copy.display().to_string()
    }

    /// A TLS listener on 127.0.0.1:`port` with the server certificate of `certificates`;
    /// clients are verified against its CA when they present a certificate, and must
    /// present one when `require_client_certificate` (RabbitMQ's `verify_peer` and
    /// `fail_if_no_peer_cert`, see <https://www.rabbitmq.com/ssl.html>).
    pub fn tls_listener(
        self,
        port: u16,
        certificates: &Certificates,
        require_client_certificate: bool,
    ) -> Self {
        let ca = self.file(&certificates.ca);
        let cert = self.file(&certificates.server_cert);
        let key = self.file(&certificates.server_key);
        self.config(&format!(
            "listeners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {ca}\n\
             ssl_options.certfile = {cert}\n\
             ssl_options.keyfile = {key}\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = {require_client_certificate}"
        ))
        .port(port)
    }

    /// Starts the node and waits (at most [`START_TIMEOUT`]) until every listener accepts
    /// connections; panics with the node's log if it exits or does not get there.
    pub fn start(self) -> RabbitNode {
        let [amqp_port, dist_port] = free_ports::<2>();
        let name = format!(
            "switchyard-test-{}-{amqp_port}@localhost",
            std::process::id()
        );
        let dir = self.dir.path().to_path_buf();
        for sub in ["mnesia", "log"] {
            fs::create_dir_all(dir.join(sub)).expect("create the node's directories");
        }
        // The console log only: it goes to node.log, which the test prints on failure.
        self.dir.write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.default = 127.0.0.1:{amqp_port}\n\
                 log.console = true\n\
                 log.console.level = info\n\
                 log.file = false\n\
                 {}",
                self.config
            ),
        );
        self.dir.write("enabled_plugins", "[].\n");
        let log_path = dir.join("node.log");
        let log = File::create(&log_path).expect("create the node's log file");
        let stderr = log.try_clone().expect("clone the log file handle");

        let mut command = if is_root() {
            let chown = run_with_timeout(
                Command::new(require_command("chown"))
                    .args(["-R", "rabbitmq:rabbitmq"])
                    .arg(&dir),
                CTL_TIMEOUT,
            );
            assert!(
                chown.status.success(),
                "chown the node's directory to rabbitmq: {}",
                String::from_utf8_lossy(&chown.stderr)
            );
            let mut command = Command::new(require_command("setpriv"));
            command
                .args(["--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups"])
                .arg(server_script())
                .env("HOME", home_of("rabbitmq"));
            command
        } else {
            Command::new(server_script())
        };
        let path = |name: &str| dir.join(name);
        command
            .current_dir(&dir)
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let mut node = RabbitNode {
            child: Some(child),
            name,
            amqp_port,
            log_path,
            dir: self.dir,
        };
        let mut ports = vec![amqp_port];
        ports.extend(self.ports);
        node.wait_until_accepting(&ports);
        node
    }
}

/// A running private node; stopped (SIGTERM, then killed) on drop. When the test fails,
/// drop prints the end of the node's log and keeps its directory.
pub struct RabbitNode {
    /// The server script (as root, under `setpriv`): it runs the Erlang VM and stops it on
    /// SIGTERM. `None` once it exited.
    child: Option<Child>,
    /// The Erlang node name, for `rabbitmqctl -n`.
    name: String,
    /// The plain AMQP listener's port.
    amqp_port: u16,
    /// The node's console log (stdout and stderr).
    log_path: PathBuf,
    /// Holds configuration, copied files, data and log.
    dir: TestDir,
}

impl RabbitNode {
    /// A node with a plain AMQP listener on a free port of 127.0.0.1 (the `guest` user,
    /// which RabbitMQ admits from the loopback interface only) and no plugins.
    pub fn builder() -> RabbitNodeBuilder {
        RabbitNodeBuilder {
            config: String::new(),
            ports: Vec::new(),
            dir: TestDir::new("rabbitmq"),
        }
    }

    /// The plain AMQP listener's port.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`: the plain listener, for the test's client.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The Erlang node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `rabbitmqctl -n NODE ARGS` and returns its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let output = run_with_timeout(
            Command::new(require_command("rabbitmqctl"))
                .args(["-n", &self.name])
                .args(args),
            CTL_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "rabbitmqctl -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Everything the node logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls until every port accepts; panics early, with the log, if the node exits.
    fn wait_until_accepting(&mut self, ports: &[u16]) {
        let started = Instant::now();
        let accepting = poll(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "RabbitMQ node {} exited with {status} while starting (log below)",
                    self.name
                );
            }
            ports.iter().try_for_each(|&port| {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map(drop)
            })
        });
        if let Err(e) = accepting {
            panic!(
                "RabbitMQ node {} did not accept on {ports:?} within {START_TIMEOUT:?}: {e}",
                self.name
            );
        }
        println!(
            "RabbitMQ node {} accepts on {ports:?} after {:.1?}",
            self.name,
            started.elapsed()
        );
    }

    /// The Erlang VM's process id, from the pid file the node writes while booting.
    fn vm_pid(&self) -> Option<libc::pid_t> {
        let text = fs::read_to_string(self.dir.path().join("pid")).ok()?;
        text.trim().parse().ok()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The script turns SIGTERM into a clean stop of the VM and exits after it.
            send_signal(&child, libc::SIGTERM);
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                eprintln!(
                    "RabbitMQ node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                    self.name
                );
                if let Some(pid) = self.vm_pid() {
                    // SAFETY: kill(2) has no memory-safety preconditions. The pid is the
                    // VM that our child (still unreaped) started and waits for.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            let title = format!(
                "RabbitMQ node {} log ({})",
                self.name,
                self.log_path.display()
            );
            print_log_tail(&title, &self.logs(), LOG_LINES_ON_FAILURE);
        }
    }
}

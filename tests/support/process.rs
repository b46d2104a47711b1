//! Ports, temporary directories and external programs.

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, thread};

/// How often the waits in this module look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before the
/// test binds it; that race is accepted (the kernel picks ports of its ephemeral range at
/// random, so a collision is rare).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports (all held open until every one is chosen).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
    }
    ports
}

/// Waits until something accepts TCP connections on `addr`; false after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    poll(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    })
    .is_ok()
}

/// A fresh directory under the system temporary directory, removed on drop — unless the
/// test is failing, when it is kept for inspection and its path printed.
pub struct TestDir {
    /// The directory; exists for the life of this value.
    path: PathBuf,
}

impl TestDir {
    /// Creates `$TMPDIR/switchyard-test-<label>-<pid>-<n>-<nanos>`.
    pub fn new(label: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "switchyard-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = env::temp_dir().join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The Python interpreter of the test virtualenv, where the real client libraries live
/// (paho-mqtt, websockets, pika, pyzmq, redis; see tests/python/requirements.txt).
/// `SWITCHYARD_TEST_PYTHON` when set (scripts/test sets it), else `<workspace>/.venv`.
pub fn python() -> PathBuf {
    let path = match env::var_os("SWITCHYARD_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    assert!(
        path.exists(),
        "the test Python {} is missing: run scripts/test, which installs it",
        path.display()
    );
    path
}

/// The path of an external program the test needs; panics when it is missing, because a
/// test never skips silently. Looks in PATH and in the sbin directories (Mosquitto lives
/// in /usr/sbin, which a non-root PATH may lack).
pub fn require_command(name: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: run scripts/test, which installs it"))
}

/// Runs `command` to completion with its output captured; kills it and panics (showing
/// what it printed) if it takes longer than `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    // Read both pipes on their own threads, so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{description} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&join(stdout)),
            String::from_utf8_lossy(&join(stderr))
        )
    };
    Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    }
}

/// Waits for `child` to exit, for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let exited = poll(timeout, || match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(()),
        Err(e) => panic!("wait for child {pid}: {e}"),
    });
    exited.ok()
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a child; a child that already exited is fine.
pub fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
    // has not been reaped (we hold its `Child`), so it cannot have been reused.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Prints the last `lines` lines of `logs` under a `title` line, for a failed test.
pub fn print_log_tail(title: &str, logs: &str, lines: usize) {
    let all: Vec<&str> = logs.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    eprintln!("---- {title} ----\n{}", tail.join("\n"));
}

/// Whether this process runs as root (Mosquitto drops privileges then, unless told not to).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Calls `attempt` every [`POLL_INTERVAL`] until it succeeds or `timeout` passes; then
/// the last error. For awaiting something observable that has no event to wait on.
pub fn poll<T, E>(timeout: Duration, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}

/// [`poll`] for async tests: sleeps without blocking the runtime.
pub async fn poll_async<T, E, F>(timeout: Duration, mut attempt: impl FnMut() -> F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn join(reader: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    reader.join().unwrap_or_default()
}

//! A TCP forwarder the test owns, placed between the hub and a broker, so a test can make
//! the broker appear ([`TcpProxy::start`] on a port nothing listened on), fail
//! ([`TcpProxy::cut`]), hang with its connections open ([`TcpProxy::pause`]) or crawl
//! ([`TcpProxy::slow`]) without touching a broker other tests share.
//!
//! Plain threads and blocking sockets: it works the same from `#[test]` and from any
//! tokio runtime, and never competes with the test's own tasks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::process::POLL_INTERVAL;

/// How long the proxy waits for its upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Copy buffer per direction.
const BUFFER_BYTES: usize = 64 * 1024;

/// Forwards every connection accepted on `listen` to `upstream`, until dropped.
pub struct TcpProxy {
    /// The address clients connect to.
    listen: SocketAddr,
    /// State shared with the accepting and copying threads.
    shared: Arc<Shared>,
}

struct Shared {
    /// Forward new connections (true) or close them at once (false).
    passing: AtomicBool,
    /// Set on drop: the accept loop ends.
    stopped: AtomicBool,
    /// Hold every byte (connections stay open) until cleared.
    paused: AtomicBool,
    /// Most bytes per second per direction and connection; 0 = unlimited.
    rate: AtomicU64,
    /// Both ends of every open connection, to close them on [`TcpProxy::cut`].
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Vec<TcpStream>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close_all(&self) {
        for stream in self.open().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl TcpProxy {
    /// Listens on 127.0.0.1:`port` and forwards to `upstream`.
    pub fn start(port: u16, upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy: bind 127.0.0.1:{port}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let listen = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            passing: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            rate: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept_loop(listener, upstream, &accepting));
        TcpProxy { listen, shared }
    }

    /// The address to give the hub.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Closes every open connection, and closes new ones at once until [`TcpProxy::pass`]:
    /// to the client, the broker is gone.
    pub fn cut(&self) {
        self.shared.passing.store(false, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Forwards new connections again.
    pub fn pass(&self) {
        self.shared.passing.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding bytes, both ways, on every connection (new ones are accepted and
    /// held too), keeping the sockets open: to the client the broker hangs. A byte already
    /// read is held, not lost.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards again after [`TcpProxy::pause`], in order.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Throttles each direction of each connection to `bytes_per_second` (None: full speed).
    pub fn slow(&self, bytes_per_second: Option<u64>) {
        self.shared
            .rate
            .store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.passing.load(Ordering::SeqCst) {
                    if let Err(e) = forward(client, upstream, shared) {
                        eprintln!("proxy: cannot forward to {upstream}: {e}");
                    }
                }
                // Not passing: `client` is dropped here, which closes it.
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL),
            Err(e) => {
                eprintln!("proxy: accept: {e}");
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Connects upstream and copies both ways on two threads.
fn forward(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    shared
        .open()
        .extend([client.try_clone()?, server.try_clone()?]);
    let (client_read, server_write) = (client.try_clone()?, server.try_clone()?);
    let (upward, downward) = (Arc::clone(shared), Arc::clone(shared));
    thread::spawn(move || copy(client_read, server_write, &upward));
    thread::spawn(move || copy(server, client, &downward));
    Ok(())
}

/// Copies until either side closes, then closes both; holds bytes while paused and
/// paces them when slowed.
fn copy(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buffer = vec![0; BUFFER_BYTES];
    // Pacing counts from the moment the current rate was set.
    let (mut paced_since, mut paced_rate, mut sent) = (Instant::now(), 0, 0u64);
    loop {
        let rate = shared.rate.load(Ordering::SeqCst);
        let chunk = if rate == 0 {
            BUFFER_BYTES
        } else {
            (rate as usize / 20).clamp(1, BUFFER_BYTES)
        };
        match from.read(&mut buffer[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                while shared.paused.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst)
                {
                    thread::sleep(POLL_INTERVAL);
                }
                let rate = shared.rate.load(Ordering::SeqCst);
                if rate != paced_rate {
                    (paced_since, paced_rate, sent) = (Instant::now(), rate, 0);
                }
                sent += read as u64;
                if rate > 0 {
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(paced_since.elapsed()) {
                        thread::sleep(wait);
                    }
                }
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

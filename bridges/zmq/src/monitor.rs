//! Counts the peers of a bridge's socket for `switchyard_connections`.
//!
//! libzmq hides its connections behind the socket; its monitor reports them as events on
//! an inproc PAIR socket. A thread of its own reads them: a peer accepted on a bound
//! endpoint or a connection made to a connected one adds one, a disconnection takes one
//! away, and when the monitor stops (the socket closed) whatever is left is taken away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_api::{BridgeError, BridgeMetrics};

/// Monitors opened so far, to give each its own inproc endpoint.
static MONITORS: AtomicU64 = AtomicU64::new(0);

/// The events the count needs (and the one that says the socket closed).
const EVENTS: i32 = zmq::SocketEvent::CONNECTED as i32
    | zmq::SocketEvent::ACCEPTED as i32
    | zmq::SocketEvent::DISCONNECTED as i32
    | zmq::SocketEvent::MONITOR_STOPPED as i32;

/// The receiving end of a socket's monitor: its connection events, waiting to be counted.
pub struct PeerMonitor {
    /// The inproc PAIR socket libzmq writes the events to.
    events: zmq::Socket,
    /// The bridge's name, for the counting thread's name.
    bridge: String,
}

impl PeerMonitor {
    /// Starts monitoring `socket`. Attach before it binds or connects: libzmq reports only
    /// what happens from then on, and holds the events until [`PeerMonitor::count_into`].
    pub fn attach(
        context: &zmq::Context,
        socket: &zmq::Socket,
        bridge: &str,
    ) -> Result<Self, BridgeError> {
        let failed = |what: &str, error: zmq::Error| BridgeError::Io {
            context: what.to_owned(),
            source: error.into(),
        };
        let endpoint = format!(
            "inproc://switchyard-monitor-{bridge}-{}",
            MONITORS.fetch_add(1, Ordering::Relaxed)
        );
        socket
            .monitor(&endpoint, EVENTS)
            .map_err(|error| failed("monitor the socket's connections", error))?;
        let events = context
            .socket(zmq::PAIR)
            .map_err(|error| failed("create the monitor's socket", error))?;
        events
            .connect(&endpoint)
            .map_err(|error| failed("connect the monitor's socket", error))?;
        Ok(Self {
            events,
            bridge: bridge.to_owned(),
        })
    }

    /// Counts the socket's peers into `metrics` on a thread that ends when the socket
    /// closes (or the context terminates).
    pub fn count_into(self, metrics: Arc<BridgeMetrics>) -> Result<(), BridgeError> {
        let Self { events, bridge } = self;
        std::thread::Builder::new()
            .name(format!("zmq-monitor-{bridge}"))
            .spawn(move || count_until_stopped(&events, &metrics))
            .map_err(|source| BridgeError::Io {
                context: "start the socket monitor's thread".to_owned(),
                source,
            })?;
        Ok(())
    }
}

fn count_until_stopped(events: &zmq::Socket, metrics: &BridgeMetrics) {
    let mut open: u64 = 0;
    // An error here means the context is terminating: the socket is gone too.
    while let Ok(frames) = events.recv_multipart(0) {
        match frames.first().and_then(|frame| event_of(frame)) {
            Some(zmq::SocketEvent::CONNECTED | zmq::SocketEvent::ACCEPTED) => {
                open += 1;
                metrics.connection_opened();
            }
            Some(zmq::SocketEvent::DISCONNECTED) if open > 0 => {
                open -= 1;
                metrics.connection_closed();
            }
            Some(zmq::SocketEvent::MONITOR_STOPPED) => break,
            _ => {}
        }
    }
    for _ in 0..open {
        metrics.connection_closed();
    }
}

/// The event in a monitor message's first frame: a little-endian u16 event number
/// followed by a u32 value.
fn event_of(frame: &[u8]) -> Option<zmq::SocketEvent> {
    let number = frame.get(..2)?;
    Some(zmq::SocketEvent::from_raw(u16::from_le_bytes([
        number[0], number[1],
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(metrics: &BridgeMetrics, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.connections() != expected {
            assert!(
                Instant::now() < deadline,
                "expected {expected} connections, found {}",
                metrics.connections()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn peers_are_counted_in_and_out() {
        let context = zmq::Context::new();
        let metrics = Arc::new(BridgeMetrics::new("gateway"));
        let bound = context.socket(zmq::PUB).expect("pub");
        PeerMonitor::attach(&context, &bound, "gateway")
            .and_then(|monitor| monitor.count_into(Arc::clone(&metrics)))
            .expect("monitor");
        bound.bind("tcp://127.0.0.1:*").expect("bind");
        let address = bound.get_last_endpoint().expect("endpoint").expect("utf-8");

        let first = context.socket(zmq::SUB).expect("sub");
        first.connect(&address).expect("connect");
        let second = context.socket(zmq::SUB).expect("sub");
        second.connect(&address).expect("connect");
        wait_for(&metrics, 2);

        drop(first);
        wait_for(&metrics, 1);
        drop(bound);
        wait_for(&metrics, 0);
    }

    #[test]
    fn a_short_frame_is_no_event() {
        assert!(event_of(&[1]).is_none());
        assert_eq!(
            event_of(&[0x20, 0, 0, 0, 0, 0]),
            Some(zmq::SocketEvent::ACCEPTED)
        );
    }
}

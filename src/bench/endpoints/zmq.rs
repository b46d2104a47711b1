//! ZeroMQ (libzmq): PUB or PUSH sockets send frames `[topic, payload]` (or, as fedmsg
//! does, `[topic, envelope]` with the payload as the envelope's `msg`); SUB or PULL
//! sockets receive on a thread of their own (libzmq sockets block and are not
//! thread-safe) and record the last frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bench::endpoint::ZmqPattern;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// High-water mark per peer: at the mark PUB drops and PUSH blocks, as the hub does.
const HWM: i32 = 100_000;
/// How often a receiving thread looks at its stop flag, in milliseconds.
const RECEIVE_POLL_MS: i32 = 100;

/// Sends every payload as `[topic, payload]`.
pub struct Publisher {
    /// The endpoint's URL, for messages.
    url: String,
    /// Kept for the socket's life.
    _context: ::zmq::Context,
    /// The PUB or PUSH socket; used only by the sender thread.
    socket: ::zmq::Socket,
    /// The first frame.
    topic: Vec<u8>,
    /// Wrap payloads in fedmsg envelopes.
    fedmsg: bool,
    /// Messages sent, for the envelope's `i`.
    sent: u64,
    /// Makes this publisher's `msg_id`s unique: receivers (the hub among them) drop a
    /// message id they saw recently as a duplicate.
    id_base: u64,
}

impl Publisher {
    /// Creates the socket and binds or connects it.
    pub fn connect(
        url: &str,
        pattern: ZmqPattern,
        endpoint: &str,
        bind: bool,
        topic: &str,
        fedmsg: bool,
    ) -> Result<Publisher, BenchError> {
        let (context, socket) = open(url, pattern, endpoint, bind)?;
        Ok(Publisher {
            url: url.to_owned(),
            _context: context,
            socket,
            topic: topic.as_bytes().to_vec(),
            fedmsg,
            sent: 0,
            id_base: unique_base(),
        })
    }

    /// Sends one message (a PUSH socket at its high-water mark blocks here).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        self.sent += 1;
        let envelope;
        let body = if self.fedmsg {
            envelope = fedmsg_envelope(&self.topic, payload, self.id_base, self.sent);
            envelope.as_slice()
        } else {
            payload
        };
        self.socket
            .send_multipart([self.topic.as_slice(), body], 0)
            .map_err(|e| BenchError::endpoint(&self.url, "send", e))
    }
}

/// A number no other publisher of this machine uses at the same time: the wall clock in
/// nanoseconds and the process id.
fn unique_base() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// A fedmsg envelope as fedmsg-logger sends it (unsigned). fedmsg bodies are JSON objects
/// (fedora-messaging requires one), so `msg` is `{"probe": payload}` (the probe is a JSON
/// string).
fn fedmsg_envelope(topic: &[u8], payload: &[u8], id_base: u64, i: u64) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let topic = serde_json::to_string(&String::from_utf8_lossy(topic)).unwrap_or_default();
    let mut envelope = Vec::with_capacity(payload.len() + topic.len() + 128);
    envelope.extend_from_slice(b"{\"i\":");
    envelope.extend_from_slice(i.to_string().as_bytes());
    envelope.extend_from_slice(b",\"msg\":{\"probe\":");
    envelope.extend_from_slice(payload);
    envelope.extend_from_slice(b"}");
    envelope.extend_from_slice(
        format!(
            ",\"msg_id\":\"switchyard-bench-{id_base:x}-{i}\",\"timestamp\":{},\
             \"topic\":{topic},\"username\":\"switchyard-bench\"}}",
            now.as_secs(),
        )
        .as_bytes(),
    );
    envelope
}

/// Starts a thread that receives and records until the returned flag is set.
pub fn subscribe(
    url: &str,
    pattern: ZmqPattern,
    endpoint: &str,
    bind: bool,
    topic: &str,
    tally: SharedTally,
) -> Result<Arc<AtomicBool>, BenchError> {
    let (context, socket) = open(url, pattern, endpoint, bind)?;
    if pattern == ZmqPattern::Sub {
        socket
            .set_subscribe(topic.as_bytes())
            .map_err(|e| BenchError::endpoint(url, "subscribe", e))?;
    }
    socket
        .set_rcvtimeo(RECEIVE_POLL_MS)
        .map_err(|e| BenchError::endpoint(url, "set ZMQ_RCVTIMEO", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let label = url.to_owned();
    std::thread::Builder::new()
        .name("bench-zmq-receive".into())
        .spawn(move || {
            let _context = context;
            while !stopped.load(Ordering::Relaxed) {
                match socket.recv_multipart(0) {
                    Ok(frames) => {
                        if let Some(payload) = frames.last() {
                            tally.record(payload);
                        }
                    }
                    Err(::zmq::Error::EAGAIN) => {}
                    Err(error) => {
                        eprintln!("switchyard bench: {label}: {error}");
                        break;
                    }
                }
            }
        })
        .map_err(|e| BenchError::endpoint(url, "start the receiving thread", e))?;
    Ok(stop)
}

fn open(
    url: &str,
    pattern: ZmqPattern,
    endpoint: &str,
    bind: bool,
) -> Result<(::zmq::Context, ::zmq::Socket), BenchError> {
    let context = ::zmq::Context::new();
    let kind = match pattern {
        ZmqPattern::Pub => ::zmq::PUB,
        ZmqPattern::Sub => ::zmq::SUB,
        ZmqPattern::Push => ::zmq::PUSH,
        ZmqPattern::Pull => ::zmq::PULL,
    };
    let socket = context
        .socket(kind)
        .map_err(|e| BenchError::endpoint(url, "create the socket", e))?;
    let configure = socket
        .set_sndhwm(HWM)
        .and_then(|()| socket.set_rcvhwm(HWM))
        .and_then(|()| socket.set_linger(0));
    configure.map_err(|e| BenchError::endpoint(url, "configure the socket", e))?;
    let attached = if bind {
        socket.bind(endpoint)
    } else {
        socket.connect(endpoint)
    };
    attached.map_err(|e| BenchError::endpoint(url, if bind { "bind" } else { "connect" }, e))?;
    Ok((context, socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fedmsg_envelope_is_json_with_the_payload_as_msg() {
        let envelope = fedmsg_envelope(b"org.bench.p3", br#""SYB1 x""#, 0xab, 7);
        let value: serde_json::Value = serde_json::from_slice(&envelope).expect("JSON");
        assert_eq!(value["msg"]["probe"], "SYB1 x");
        assert_eq!(value["topic"], "org.bench.p3");
        assert_eq!(value["i"], 7);
        assert_eq!(value["username"], "switchyard-bench");
        assert!(value["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000));
        assert!(value["msg_id"]
            .as_str()
            .is_some_and(|id| id.ends_with("-7")));
    }
}

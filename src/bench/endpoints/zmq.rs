//! ZeroMQ (libzmq): PUB or PUSH sockets send frames `[topic, payload]`; SUB or PULL
//! sockets receive on a thread of their own (libzmq sockets block and are not
//! thread-safe) and record the last frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

impl Publisher {
    /// Creates the socket and binds or connects it.
    pub fn connect(
        url: &str,
        pattern: ZmqPattern,
        endpoint: &str,
        bind: bool,
        topic: &str,
    ) -> Result<Publisher, BenchError> {
        let (context, socket) = open(url, pattern, endpoint, bind)?;
        Ok(Publisher {
            url: url.to_owned(),
            _context: context,
            socket,
            topic: topic.as_bytes().to_vec(),
        })
    }

    /// Sends one message (a PUSH socket at its high-water mark blocks here).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        self.socket
            .send_multipart([self.topic.as_slice(), payload], 0)
            .map_err(|e| BenchError::endpoint(&self.url, "send", e))
    }
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

//! The libzmq socket, and the OS thread that owns a sending one.
//!
//! libzmq sockets are not thread-safe and their calls block. A receiving socket is read on
//! Tokio's reactor (`receiver`). A sending socket (`pub`, `push`) lives on a dedicated
//! thread that takes bursts of encoded messages from the egress task over a bounded
//! channel and writes them; a message counts as delivered once libzmq has taken it. A
//! `pub` socket never waits (libzmq drops for a subscriber at its high-water mark); a
//! `push` socket waits for a peer with room, polling so that it notices shutdown, while
//! the egress task waits on the full channel: backpressure without blocking Tokio.

use std::time::Instant;

use bytes::Bytes;
use switchyard_api::{BridgeContext, BridgeError, Outbound};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{SocketKind, ZmqSettings};
use crate::monitor::PeerMonitor;

/// How long a sending thread waits in `zmq_poll` before it looks at the stop signal again.
const POLL_TIMEOUT_MS: i64 = 100;

/// How long a closing socket may keep trying to deliver what libzmq still holds.
const LINGER_MS: i32 = 1_000;

/// One encoded message for a sending socket, with the queue entry it settles.
#[derive(Debug)]
pub struct Outgoing {
    /// The frames to write.
    pub frames: Vec<Bytes>,
    /// Released (delivered) once libzmq has taken the frames.
    pub entry: Outbound,
}

/// Creates the socket, sets its options and subscriptions, attaches the monitor that
/// counts its peers, and binds and connects it. `subscriptions` are the byte prefixes of
/// a `sub` socket.
pub fn open(
    context: &zmq::Context,
    bridge: &str,
    settings: &ZmqSettings,
    subscriptions: &[String],
) -> Result<(zmq::Socket, PeerMonitor), BridgeError> {
    let failed = |what: &str, error: zmq::Error| BridgeError::Io {
        context: what.to_owned(),
        source: error.into(),
    };
    let socket = context
        .socket(settings.socket.zmq_type())
        .map_err(|error| failed("create the ZeroMQ socket", error))?;
    configure(&socket, settings).map_err(|error| failed("set the socket's options", error))?;
    if settings.socket == SocketKind::Sub {
        for prefix in subscriptions {
            socket
                .set_subscribe(prefix.as_bytes())
                .map_err(|error| failed(&format!("subscribe to {prefix:?}"), error))?;
        }
    }
    let monitor = PeerMonitor::attach(context, &socket, bridge)?;
    for (index, endpoint) in settings.bind.iter().enumerate() {
        socket.bind(endpoint).map_err(|error| BridgeError::Listen {
            address: endpoint.clone(),
            key: format!("bridges.{bridge}.bind[{index}]"),
            source: error.into(),
        })?;
    }
    for endpoint in &settings.connect {
        socket
            .connect(endpoint)
            .map_err(|error| failed(&format!("connect {endpoint}"), error))?;
    }
    Ok((socket, monitor))
}

fn configure(socket: &zmq::Socket, settings: &ZmqSettings) -> Result<(), zmq::Error> {
    socket.set_sndhwm(settings.hwm)?;
    socket.set_rcvhwm(settings.hwm)?;
    socket.set_linger(LINGER_MS)?;
    // Validated to fit in i32 milliseconds.
    let millis =
        |duration: std::time::Duration| i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
    socket.set_reconnect_ivl(millis(settings.reconnect_ivl.0))?;
    socket.set_reconnect_ivl_max(millis(settings.reconnect_ivl_max.0))?;
    socket.set_maxmsgsize(settings.hard_limit())?;
    // Long-lived idle subscribers (fedmsg-gateway's ~160k) are found dead by the kernel.
    socket.set_tcp_keepalive(1)?;
    Ok(())
}

/// Subscription prefixes with duplicates and those another one covers removed (a prefix
/// already matches everything its extensions match).
pub fn minimal_prefixes(mut prefixes: Vec<String>) -> Vec<String> {
    prefixes.sort();
    let mut kept: Vec<String> = Vec::new();
    for prefix in prefixes {
        if !kept
            .iter()
            .any(|shorter| prefix.starts_with(shorter.as_str()))
        {
            kept.push(prefix);
        }
    }
    kept
}

/// Runs a sending socket on its own thread until `from_hub` closes (after sending what it
/// holds) or, while it cannot send, `stop` is cancelled; entries it could not send go back
/// to the front of the bridge's queue. The returned channel says why the thread ended.
pub fn spawn_sender(
    socket: zmq::Socket,
    from_hub: mpsc::Receiver<Vec<Outgoing>>,
    ctx: BridgeContext,
    stop: CancellationToken,
    thread_name: String,
) -> Result<oneshot::Receiver<Result<(), zmq::Error>>, BridgeError> {
    let (done, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let _ = done.send(send_loop(&socket, from_hub, &ctx, &stop));
        })
        .map_err(|source| BridgeError::Io {
            context: "start the socket's thread".to_owned(),
            source,
        })?;
    Ok(ended)
}

fn send_loop(
    socket: &zmq::Socket,
    mut from_hub: mpsc::Receiver<Vec<Outgoing>>,
    ctx: &BridgeContext,
    stop: &CancellationToken,
) -> Result<(), zmq::Error> {
    while let Some(burst) = from_hub.blocking_recv() {
        let mut burst = burst.into_iter();
        while let Some(outgoing) = burst.next() {
            match send_one(socket, &outgoing.frames, stop) {
                Ok(true) => ctx.delivered_at(outgoing.entry, Instant::now()),
                outcome => {
                    // Stopped while waiting for room, or the socket failed: keep the rest.
                    let mut unsent = vec![outgoing.entry];
                    unsent.extend(burst.map(|outgoing| outgoing.entry));
                    from_hub.close();
                    while let Ok(more) = from_hub.try_recv() {
                        unsent.extend(more.into_iter().map(|outgoing| outgoing.entry));
                    }
                    ctx.outbound.requeue_front(unsent);
                    return outcome.map(|_| ());
                }
            }
        }
    }
    Ok(())
}

/// Writes one message; waits (polling, so `stop` is seen) while libzmq has no room.
/// `Ok(false)`: stopped before it could be sent.
fn send_one(
    socket: &zmq::Socket,
    frames: &[Bytes],
    stop: &CancellationToken,
) -> Result<bool, zmq::Error> {
    let Some((first, rest)) = frames.split_first() else {
        return Ok(true);
    };
    let more_after = |is_last: bool| if is_last { 0 } else { zmq::SNDMORE };
    loop {
        match socket.send(&first[..], zmq::DONTWAIT | more_after(rest.is_empty())) {
            Ok(()) => break,
            Err(zmq::Error::EAGAIN) => {
                if stop.is_cancelled() {
                    return Ok(false);
                }
                match socket.poll(zmq::POLLOUT, POLL_TIMEOUT_MS) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(error) => return Err(error),
                }
            }
            Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }
    }
    // libzmq grants room per message: once the first frame is taken, the rest are too.
    for (index, frame) in rest.iter().enumerate() {
        socket.send(&frame[..], more_after(index + 1 == rest.len()))?;
    }
    Ok(true)
}

/// The error of a socket that failed while in use.
pub fn failed(source: std::io::Error) -> BridgeError {
    BridgeError::Io {
        context: "the ZeroMQ socket failed".to_owned(),
        source,
    }
}

/// Why the socket's thread ended: its error, or a generic one if it vanished.
pub async fn thread_outcome(
    ended: &mut oneshot::Receiver<Result<(), zmq::Error>>,
) -> Result<(), BridgeError> {
    match ended.await {
        Ok(Ok(())) => Err(BridgeError::Protocol(
            "the socket's thread stopped".to_owned(),
        )),
        Ok(Err(error)) => Err(failed(error.into())),
        Err(_) => Err(BridgeError::Protocol(
            "the socket's thread ended without a word".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_prefixes_are_not_subscribed_twice() {
        let prefixes = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            minimal_prefixes(prefixes(&["org.x.", "org.", "org.x.", "net."])),
            prefixes(&["net.", "org."])
        );
        assert_eq!(minimal_prefixes(prefixes(&["a", ""])), prefixes(&[""]));
        assert!(minimal_prefixes(Vec::new()).is_empty());
    }
}

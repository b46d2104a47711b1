//! A receiving socket (`sub`, `pull`) read on Tokio's reactor, without a thread of its own.
//!
//! libzmq gives each socket a file descriptor (`ZMQ_FD`) that becomes readable when the
//! socket's state may have changed. It is edge-triggered and says nothing by itself: only
//! `ZMQ_EVENTS` tells whether a message is waiting. So the receiver drains what is ready
//! with `DONTWAIT`, and waits on the descriptor only once `ZMQ_EVENTS` reports nothing to
//! read. Tokio keeps an edge that arrives while the receiver looks, so none is missed.
//!
//! A message that arrives wakes the hub's reactor directly: one thread hop fewer than a
//! socket thread handing bursts to a task, which on a lightly loaded path is most of what a
//! message costs.

use std::io;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Most messages read before they are handed on as one burst.
const RECEIVE_BURST: usize = 512;

/// One message as it came off a receiving socket.
#[derive(Debug)]
pub enum Incoming {
    /// Its frames, in order.
    Frames(Vec<Bytes>),
    /// Larger than `max_message` (all frames added up): read and discarded.
    TooLarge {
        /// Its size in bytes.
        bytes: usize,
    },
}

/// A receiving socket registered with Tokio's reactor.
pub struct Receiver {
    /// The socket, watched through its `ZMQ_FD` (deregistered before the socket closes).
    socket: AsyncFd<zmq::Socket>,
    /// Messages larger than this (all frames added up) are read and discarded.
    max_message: usize,
}

impl Receiver {
    /// Registers `socket` with the reactor of the current Tokio runtime.
    pub fn new(socket: zmq::Socket, max_message: usize) -> io::Result<Self> {
        // SAFETY: the descriptor is the socket's own `ZMQ_FD`: it stays open, and the same,
        // for as long as the socket, which the `AsyncFd` owns and closes only after it has
        // deregistered the descriptor.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE)? };
        Ok(Self {
            socket,
            max_message,
        })
    }

    /// The messages that are ready, at least one and at most a burst's worth; waits until
    /// one is. Cancel-safe: a message is either returned or still in libzmq's queue.
    pub async fn next_burst(&mut self) -> io::Result<Vec<Incoming>> {
        loop {
            let burst = self.drain()?;
            if !burst.is_empty() {
                return Ok(burst);
            }
            let mut ready = self.socket.readable_mut().await?;
            // ZMQ_EVENTS also takes in libzmq's pending commands, which may bring a message.
            let events = ready.get_inner().get_events().map_err(io::Error::from)?;
            if !events.contains(zmq::POLLIN) {
                ready.clear_ready();
            }
        }
    }

    /// Reads every message that is ready, up to a burst.
    fn drain(&self) -> io::Result<Vec<Incoming>> {
        let mut burst = Vec::new();
        while burst.len() < RECEIVE_BURST {
            match self.receive_one() {
                Ok(incoming) => burst.push(incoming),
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(burst)
    }

    /// Reads one whole message (every frame) without waiting for the first.
    fn receive_one(&self) -> Result<Incoming, zmq::Error> {
        let socket = self.socket.get_ref();
        let mut frames = Vec::new();
        let mut total = 0usize;
        let mut flags = zmq::DONTWAIT;
        loop {
            // The later frames of a message are already there: libzmq delivers it whole.
            let frame = socket.recv_msg(flags)?;
            flags = 0;
            total = total.saturating_add(frame.len());
            if total <= self.max_message {
                frames.push(Bytes::copy_from_slice(&frame));
            } else {
                frames.clear();
            }
            if !frame.get_more() {
                break;
            }
        }
        if total > self.max_message {
            return Ok(Incoming::TooLarge { bytes: total });
        }
        Ok(Incoming::Frames(frames))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A PUSH socket connected to a PULL socket read by a `Receiver`.
    fn pair(max_message: usize) -> (zmq::Context, zmq::Socket, Receiver) {
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL).unwrap();
        pull.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = pull.get_last_endpoint().unwrap().unwrap();
        let push = context.socket(zmq::PUSH).unwrap();
        push.connect(&endpoint).unwrap();
        (context, push, Receiver::new(pull, max_message).unwrap())
    }

    async fn next_burst(receiver: &mut Receiver) -> Vec<Incoming> {
        tokio::time::timeout(Duration::from_secs(5), receiver.next_burst())
            .await
            .expect("a message that was sent is never announced")
            .unwrap()
    }

    fn body(incoming: &Incoming) -> &[u8] {
        match incoming {
            Incoming::Frames(frames) => &frames[0],
            Incoming::TooLarge { bytes } => panic!("a {bytes}-byte message was refused"),
        }
    }

    #[tokio::test]
    async fn every_lone_message_wakes_a_waiting_receiver() {
        let (_context, push, mut receiver) = pair(1024);
        // Each message arrives while the receiver waits on the descriptor, after it has
        // found the socket empty: the edge-triggered case a missed wake-up would hang on.
        for index in 0..200u32 {
            push.send(index.to_string().as_bytes(), 0).unwrap();
            let burst = next_burst(&mut receiver).await;
            assert_eq!(burst.len(), 1);
            assert_eq!(body(&burst[0]), index.to_string().as_bytes());
        }
    }

    #[tokio::test]
    async fn a_flood_arrives_whole_and_in_order_in_bounded_bursts() {
        let (_context, push, mut receiver) = pair(1024);
        let count = 20_000u32;
        let sender = std::thread::spawn(move || {
            for index in 0..count {
                push.send(index.to_be_bytes().as_slice(), 0).unwrap();
            }
            push
        });
        let mut expected = 0u32;
        while expected < count {
            let burst = next_burst(&mut receiver).await;
            assert!((1..=RECEIVE_BURST).contains(&burst.len()));
            for incoming in &burst {
                assert_eq!(body(incoming), expected.to_be_bytes().as_slice());
                expected += 1;
            }
        }
        drop(sender.join().unwrap());
    }

    #[tokio::test]
    async fn a_message_over_max_message_is_read_and_reported_by_size() {
        let (_context, push, mut receiver) = pair(10);
        push.send("0123456".as_bytes(), zmq::SNDMORE).unwrap();
        push.send("789ab".as_bytes(), 0).unwrap();
        push.send("small".as_bytes(), 0).unwrap();
        let mut received = Vec::new();
        while received.len() < 2 {
            received.extend(next_burst(&mut receiver).await);
        }
        assert!(matches!(received[0], Incoming::TooLarge { bytes: 12 }));
        assert_eq!(body(&received[1]), b"small");
    }
}

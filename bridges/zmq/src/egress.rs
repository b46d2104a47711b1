//! Hub -> ZeroMQ: take queued messages in bursts, write each under its remote name in the
//! bridge's format and framing, and pass the bursts to the socket's thread, which
//! releases each message from the hub once libzmq has taken it (a ZeroMQ hand-off is
//! delivery: the protocol has no acknowledgement).

use bytes::Bytes;
use switchyard_api::{envelope, BridgeContext, BridgeError, DropReason, Format, Outbound};
use tokio::sync::mpsc;

use crate::config::{Framing, ZmqSettings};
use crate::fedmsg;
use crate::framing;
use crate::socket::{self, Outgoing};

/// Most queued messages taken and encoded in one burst.
const SEND_BURST: usize = 256;

/// Bursts in flight between the egress task and the socket's thread. When the thread
/// waits (a `push` socket at its high-water mark), the task waits on this channel and
/// the bridge's queue fills: its `overflow` policy applies.
const BURSTS_IN_FLIGHT: usize = 4;

/// Writes messages in one bridge's format and framing.
pub struct Egress {
    /// How bodies are written.
    format: Format,
    /// How topic and body share the frames.
    framing: Framing,
    /// fedmsg's `i`: messages this socket has sent, counting from 1.
    sequence: u64,
}

impl Egress {
    /// An egress for `settings` in `format`, for a new socket.
    pub fn new(format: Format, settings: &ZmqSettings) -> Self {
        Self {
            format,
            framing: settings.framing,
            sequence: 0,
        }
    }

    /// Runs the sending socket on its thread and feeds it until shutdown; an error when the
    /// socket fails.
    pub async fn run(
        &mut self,
        ctx: &BridgeContext,
        socket: zmq::Socket,
    ) -> Result<(), BridgeError> {
        let (to_socket, from_hub) = mpsc::channel(BURSTS_IN_FLIGHT);
        let stop = ctx.shutdown.child_token();
        let _stop_thread = stop.clone().drop_guard();
        let mut ended = socket::spawn_sender(
            socket,
            from_hub,
            ctx.clone(),
            stop,
            format!("zmq-{}", ctx.name),
        )?;
        let mut batch = Vec::with_capacity(SEND_BURST);
        loop {
            let permit = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                permit = to_socket.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return socket::thread_outcome(&mut ended).await,
                },
            };
            let popped = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                popped = ctx.outbound.pop_batch(&mut batch, SEND_BURST) => popped,
            };
            if !popped {
                break;
            }
            let burst: Vec<Outgoing> = batch
                .drain(..)
                .filter_map(|entry| self.encode(ctx, entry))
                .collect();
            permit.send(burst);
        }
        // Stopping: the thread writes what it holds (giving up only where it would wait).
        drop(to_socket);
        let _ = ended.await;
        Ok(())
    }

    /// The frames of one queued message; `None` when there is nothing to send (settled
    /// here, and counted if dropped).
    pub fn encode(&mut self, ctx: &BridgeContext, entry: Outbound) -> Option<Outgoing> {
        let Some(name) = ctx.remote_name(entry.rule, &entry.message.topic) else {
            // The router only queues messages a rule passes; nothing to send.
            ctx.delivered(entry);
            return None;
        };
        let body = match self.format {
            Format::Fedmsg => {
                let headers = entry.message.outgoing_headers(&ctx.hub_name);
                let mut out = Vec::new();
                let i = self.sequence + 1;
                if let Err(error) =
                    fedmsg::encode(&entry.message, &name, &ctx.hub_name, i, &headers, &mut out)
                {
                    ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!("cannot send {:?} as fedmsg: {error}", entry.message.topic),
                    );
                    if let Some(ack) = entry.ack {
                        ack.confirm();
                    }
                    return None;
                }
                self.sequence = i;
                Bytes::from(out)
            }
            Format::Json => {
                let mut out = Vec::new();
                envelope::encode(&entry.message, &name, &mut out);
                Bytes::from(out)
            }
            Format::Raw | Format::FedoraMessaging => entry.message.payload.clone(),
        };
        Some(Outgoing {
            frames: framing::join(self.framing, &name, body),
            entry,
        })
    }
}

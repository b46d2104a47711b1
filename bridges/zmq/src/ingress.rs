//! ZeroMQ -> hub: split each received message into topic and body, map the topic through
//! the `in` rules (a SUB subscription is only a prefix, so this is the exact filter),
//! read the body in the bridge's format and hand the message to the hub.
//!
//! ZeroMQ has no acknowledgements: messages enter at QoS 0. Malformed input is counted
//! (`invalid`, `too_large`, `loop`) and logged at a limited rate; the socket keeps going.

use bytes::Bytes;
use switchyard_api::message::originated_at;
use switchyard_api::{envelope, BridgeContext, DropReason, Format, Message, QoS, Topic};

use crate::config::{Framing, ZmqSettings};
use crate::fedmsg;
use crate::framing;
use crate::receiver::{Incoming, Receiver};
use crate::socket;

/// Reads messages in one bridge's format and framing.
pub struct Ingress {
    /// How bodies are written.
    format: Format,
    /// How topic and body share the frames.
    framing: Framing,
    /// The `max_message` limit, for the log line of a drop.
    max_message: usize,
}

impl Ingress {
    /// An ingress for `settings` in `format`.
    pub fn new(format: Format, settings: &ZmqSettings) -> Self {
        Self {
            format,
            framing: settings.framing,
            max_message: settings.max_message_bytes(),
        }
    }

    /// Reads the receiving socket and moves what it reads into the hub until shutdown; an
    /// error when the socket fails. While the hub is full this task waits, and libzmq's
    /// own queue (`hwm`) takes the rest; then `sub` drops and `pull` stops reading its peer.
    /// The socket closes on return, so a later run can bind the same endpoints again.
    pub async fn run(
        &self,
        ctx: &BridgeContext,
        socket: zmq::Socket,
    ) -> Result<(), switchyard_api::BridgeError> {
        let mut receiver = Receiver::new(socket, self.max_message).map_err(socket::failed)?;
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                burst = receiver.next_burst() => {
                    for incoming in burst.map_err(socket::failed)? {
                        self.receive(ctx, incoming).await;
                    }
                }
            }
        }
    }

    /// Hands one received message to the hub, or counts why not.
    pub async fn receive(&self, ctx: &BridgeContext, incoming: Incoming) {
        let frames = match incoming {
            Incoming::Frames(frames) => frames,
            Incoming::TooLarge { bytes } => {
                ctx.metrics.dropped(
                    DropReason::TooLarge,
                    format_args!(
                        "a {bytes}-byte message is larger than max_message ({} bytes)",
                        self.max_message
                    ),
                );
                return;
            }
        };
        let (name, body) = match framing::split(self.framing, frames) {
            Ok(split) => split,
            Err(error) => {
                ctx.metrics.dropped(
                    DropReason::Invalid,
                    format_args!("malformed frames: {error}"),
                );
                return;
            }
        };
        // A name no rule passes: the subscription is a coarse prefix; not a drop.
        let Some(inbound) = ctx.inbound(&name) else {
            return;
        };
        let topic = inbound.topic;
        if let Some(mut message) = self.read_body(ctx, &name, topic, body) {
            if originated_at(&message.headers, &ctx.hub_name) {
                ctx.metrics
                    .dropped(DropReason::Loop, "it carries this hub's own origin");
                return;
            }
            message.take_hops_header();
            message.qos = QoS::AtMostOnce;
            ctx.publish(message, None).await;
        }
    }

    /// The message a body makes in the bridge's format; `None` (counted) when it makes none.
    fn read_body(
        &self,
        ctx: &BridgeContext,
        name: &str,
        topic: Topic,
        body: Bytes,
    ) -> Option<Message> {
        match self.format {
            Format::Fedmsg => match fedmsg::decode(&body) {
                Ok(decoded) if fedmsg::sent_by(&decoded, &ctx.hub_name) => {
                    ctx.metrics.dropped(
                        DropReason::Loop,
                        "a fedmsg envelope whose username is this hub's name",
                    );
                    None
                }
                Ok(decoded) => {
                    let mut message = Message::new(topic, decoded.payload);
                    message.headers = decoded.headers;
                    message.id = decoded.id.map(Into::into);
                    if let Some(timestamp) = decoded.timestamp_ms {
                        message.timestamp_ms = timestamp;
                    }
                    Some(message)
                }
                Err(error) => {
                    ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!("a message on {name:?}: {error}"),
                    );
                    None
                }
            },
            Format::Json => match envelope::decode(&body) {
                Ok(decoded) => Some(decoded.into_message(topic)),
                Err(error) => {
                    ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!("a message on {name:?} is not a JSON envelope: {error}"),
                    );
                    None
                }
            },
            Format::Raw | Format::FedoraMessaging => Some(Message::new(topic, body)),
        }
    }
}

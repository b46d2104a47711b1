//! Remote broker -> hub: map each received message through the `in` rules and
//! acknowledge it to the broker only once every destination has it (manual acks).

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesOrdered, StreamExt};
use switchyard_api::message::originated_at;
use switchyard_api::{
    envelope, Ack, AckOutcome, BridgeContext, DropReason, Format, Message, QoS, Topic,
};

use super::packets::IncomingPublish;

/// An acknowledgement the broker is owed once the hub's destinations settle.
pub struct Settled {
    /// QoS level of the received message (1 or 2).
    pub qos: u8,
    /// Its packet id.
    pub pkid: u16,
    /// What the destinations made of it.
    pub outcome: AckOutcome,
}

type PendingAck = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// Incoming messages still waiting for their destinations, in arrival order.
pub struct Ingress {
    format: Format,
    pending: FuturesOrdered<PendingAck>,
}

/// What to do with a received message after looking at it.
pub enum Received {
    /// Handed to the hub; acknowledge when settled (already queued in `pending`).
    Routed,
    /// Not for the hub (or dropped): acknowledge right away when `qos > 0`.
    AckNow,
}

impl Ingress {
    /// Reads messages in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            pending: FuturesOrdered::new(),
        }
    }

    /// Hands one received message to the hub (may wait while destinations push back).
    pub async fn receive(&mut self, ctx: &BridgeContext, publish: IncomingPublish) -> Received {
        // A name no rule passes: the subscription is coarser than the rules; not a drop.
        let Some(inbound) = ctx.inbound(&publish.topic) else {
            return Received::AckNow;
        };
        let Some(message) = self.to_message(ctx, &publish, inbound.topic, inbound.qos) else {
            return Received::AckNow;
        };
        if publish.qos == 0 || message.qos == QoS::AtMostOnce {
            ctx.publish(message, None).await;
            return Received::AckNow;
        }
        let (ack, receiver) = Ack::new();
        ctx.publish(message, Some(ack)).await;
        let (qos, pkid) = (publish.qos, publish.pkid);
        self.pending.push_back(Box::pin(async move {
            Settled {
                qos,
                pkid,
                outcome: receiver.await,
            }
        }));
        Received::Routed
    }

    fn to_message(
        &self,
        ctx: &BridgeContext,
        publish: &IncomingPublish,
        topic: Topic,
        rule_qos: QoS,
    ) -> Option<Message> {
        if originated_at(&publish.headers, &ctx.hub_name) {
            ctx.metrics
                .dropped(DropReason::Loop, "it carries this hub's own origin");
            return None;
        }
        let mut message = match self.format {
            Format::Json => match envelope::decode(&publish.payload) {
                Ok(decoded) => decoded.into_message(topic),
                Err(error) => {
                    ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!(
                            "a message on {:?} is not a JSON envelope: {error}",
                            publish.topic
                        ),
                    );
                    return None;
                }
            },
            _ => {
                let mut message = Message::new(topic, publish.payload.clone());
                message.headers = publish.headers.clone();
                message
            }
        };
        message.take_hops_header();
        message.qos = QoS::from_level(publish.qos).min(rule_qos);
        message.retain = publish.retain;
        Some(message)
    }

    /// The next message whose destinations have settled, in arrival order.
    pub async fn next_settled(&mut self) -> Option<Settled> {
        self.pending.next().await
    }

    /// Whether no message is waiting for its destinations.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

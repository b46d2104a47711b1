//! Client PUBLISH (and will messages) into the hub: topic checks, the access policy, the
//! bridge's `in` rules, and the acknowledgements that wait for the hub's destinations without holding up the
//! connection's read loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesOrdered, StreamExt};
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use switchyard_api::message::originated_at;
use switchyard_api::server::ConnectionId;
use switchyard_api::topic::validate_topic_name;
use switchyard_api::{Ack, AckOutcome, AckReceiver, BridgeContext, DropReason, Message, QoS};

use crate::access::{Access, Identity};
use crate::alias::{AliasError, TopicAliases};
use crate::incoming::{Publish, Will};

/// A PUBLISH that breaks the protocol; the connection is closed.
#[derive(Debug)]
pub struct Violation {
    /// MQTT 5 DISCONNECT reason sent before closing.
    pub reason: DisconnectReasonCode,
    /// What was wrong, for the log.
    pub detail: String,
}

/// The answer a client's QoS 1 or 2 PUBLISH is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The PUBLISH's packet identifier.
    pub pkid: u16,
    /// QoS 2: answer with PUBREC instead of PUBACK.
    pub exactly_once: bool,
    /// The access policy or the `in` rules refused the topic (MQTT 5 answers "not
    /// authorized").
    pub denied: bool,
    /// Every destination has the message; false: leave it unacknowledged.
    pub delivered: bool,
}

/// One acknowledgement in waiting.
struct PendingAck {
    settled: Settled,
    /// Resolves when the hub's destinations are done; `None` when already settled.
    receiver: Option<AckReceiver>,
}

impl Future for PendingAck {
    type Output = Settled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        let mut settled = self.settled;
        if let Some(receiver) = self.receiver.as_mut() {
            match Pin::new(receiver).poll(cx) {
                Poll::Ready(outcome) => settled.delivered = outcome == AckOutcome::Delivered,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(settled)
    }
}

/// The ingress side of one connection.
pub struct Ingress {
    /// The connection, recorded as each message's sender (for MQTT 5 no-local).
    connection: ConnectionId,
    /// The client, for the access policy.
    identity: Arc<Identity>,
    /// Decides which topics the client may publish to.
    access: Arc<dyn Access>,
    /// Largest payload accepted.
    max_payload: usize,
    /// MQTT 5 topic aliases the client defined.
    aliases: TopicAliases,
    /// Acknowledgements in PUBLISH order (MQTT 3.1.1 section 4.6: PUBACKs go out in the
    /// order the PUBLISH packets came in).
    pending: FuturesOrdered<PendingAck>,
}

impl Ingress {
    /// The ingress side of connection `connection`, whose client is `identity`.
    pub fn new(
        connection: ConnectionId,
        identity: Arc<Identity>,
        access: Arc<dyn Access>,
        max_payload: usize,
    ) -> Self {
        Self {
            connection,
            identity,
            access,
            max_payload,
            aliases: TopicAliases::default(),
            pending: FuturesOrdered::new(),
        }
    }

    /// Acknowledgements still waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next acknowledgement to send, in order; never resolves while none is waiting.
    pub async fn next_settled(&mut self) -> Settled {
        match self.pending.next().await {
            Some(settled) => settled,
            None => std::future::pending().await,
        }
    }

    /// Hands a client's PUBLISH to the hub. Waits while the hub applies backpressure. A
    /// QoS 1 or 2 message is answered later, through [`Ingress::next_settled`].
    pub async fn publish(
        &mut self,
        ctx: &BridgeContext,
        publish: Publish,
    ) -> Result<(), Violation> {
        if publish.payload.len() > self.max_payload {
            ctx.metrics.dropped(
                DropReason::TooLarge,
                format_args!("a client published {} bytes", publish.payload.len()),
            );
            return Err(Violation {
                reason: DisconnectReasonCode::PacketTooLarge,
                detail: format!("payload of {} bytes", publish.payload.len()),
            });
        }
        let topic = self
            .aliases
            .resolve(publish.topic, publish.topic_alias)
            .map_err(|error| {
                ctx.metrics
                    .dropped(DropReason::Invalid, format_args!("a client's {error}"));
                let reason = match error {
                    AliasError::OutOfRange(_) => DisconnectReasonCode::TopicAliasInvalid,
                    AliasError::Unknown(_) => DisconnectReasonCode::ProtocolError,
                };
                Violation {
                    reason,
                    detail: error.to_string(),
                }
            })?;
        if let Err(error) = validate_topic_name(&topic) {
            ctx.metrics.dropped(
                DropReason::Invalid,
                format_args!("a client published to an invalid topic ({error})"),
            );
            return Err(Violation {
                reason: DisconnectReasonCode::TopicNameInvalid,
                detail: format!("topic {topic:?}: {error}"),
            });
        }
        let incoming = Incoming {
            topic: &topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            user_properties: publish.user_properties,
        };
        let mut settled = Settled {
            pkid: publish.pkid,
            exactly_once: publish.qos >= 2,
            denied: false,
            delivered: true,
        };
        let receiver = match self.to_message(ctx, incoming) {
            Ok(message) if message.qos == QoS::AtLeastOnce && publish.qos > 0 => {
                let (ack, receiver) = Ack::new();
                ctx.publish(message, Some(ack)).await;
                Some(receiver)
            }
            Ok(message) => {
                ctx.publish(message, None).await;
                None
            }
            Err(reason) => {
                settled.denied = reason == DropReason::Denied;
                None
            }
        };
        if publish.qos > 0 {
            self.pending.push_back(PendingAck { settled, receiver });
        }
        Ok(())
    }
}

/// A message as a client sent it, topic already checked.
struct Incoming<'a> {
    topic: &'a str,
    payload: bytes::Bytes,
    qos: u8,
    retain: bool,
    user_properties: Vec<(String, String)>,
}

impl Ingress {
    /// Publishes the client's will message through the same checks as a PUBLISH (without
    /// waiting for acknowledgement: nobody is left to acknowledge).
    pub async fn publish_will(&self, ctx: &BridgeContext, will: Will) {
        if let Err(error) = validate_topic_name(&will.topic) {
            ctx.metrics.dropped(
                DropReason::Invalid,
                format_args!("a client's will has an invalid topic ({error})"),
            );
            return;
        }
        let incoming = Incoming {
            topic: &will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            user_properties: will.user_properties,
        };
        if let Ok(message) = self.to_message(ctx, incoming) {
            ctx.publish(message, None).await;
        }
    }

    /// The hub message, or why it was dropped (already counted). Every message a client
    /// sends passes here: the access policy first, then the bridge's `in` rules.
    fn to_message(&self, ctx: &BridgeContext, incoming: Incoming) -> Result<Message, DropReason> {
        if !self.access.may_publish(&self.identity, incoming.topic) {
            ctx.metrics.dropped(
                DropReason::Denied,
                "a client published to a topic it is not allowed to publish to",
            );
            return Err(DropReason::Denied);
        }
        let inbound = match ctx.rules.inbound(incoming.topic) {
            Ok(Some(inbound)) => inbound,
            Ok(None) => {
                ctx.metrics.dropped(
                    DropReason::Denied,
                    "a client published to a topic no `in` rule of this bridge accepts",
                );
                return Err(DropReason::Denied);
            }
            Err(invalid) => {
                ctx.metrics.dropped(DropReason::Invalid, &invalid);
                return Err(DropReason::Invalid);
            }
        };
        let looped = originated_at(&incoming.user_properties, &ctx.hub_name);
        if looped {
            ctx.metrics.dropped(
                DropReason::Loop,
                "a client published a message that this hub sent out",
            );
            return Err(DropReason::Loop);
        }
        let mut message = Message::new(inbound.topic, incoming.payload);
        message.headers = incoming.user_properties;
        message.take_hops_header();
        message.qos = QoS::from_level(incoming.qos).min(inbound.qos);
        message.retain = incoming.retain;
        message.sender = self.connection;
        Ok(message)
    }
}

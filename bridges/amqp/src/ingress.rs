//! Broker → hub: consumes the bridge's queue and acknowledges each delivery only once every
//! destination has taken the message.
//!
//! Each delivery is routed with its own [`Ack`]; its [`AckReceiver`] waits in a
//! [`FuturesOrdered`] while the consumer keeps reading (the broker's `prefetch` bounds how
//! many wait). Outcomes are applied in delivery order, so consecutive successes are
//! acknowledged together with one `basic.ack multiple`. A message a destination gave up on
//! is nacked with requeue (the broker delivers it again); one that can never be delivered
//! (not valid in the bridge's format) is rejected without requeue, so a dead-letter
//! exchange catches it. Deliveries that were not acknowledged when the connection failed
//! come back from the broker on the next connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use switchyard_api::{Ack, AckOutcome, AckReceiver, BridgeContext, BridgeError, DropReason};

use crate::config::AmqpConfig;
use crate::format::Codec;
use crate::topology;

/// How long a stopping bridge waits for the outcomes of deliveries already routed, so
/// they can be acknowledged instead of redelivered next time.
const SHUTDOWN_SETTLE_WAIT: Duration = Duration::from_secs(2);

/// What to tell the broker about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Done with it: every destination has it, or it was dropped on purpose.
    Ack,
    /// A destination gave it up: deliver it again.
    Requeue,
    /// It can never be delivered: dead-letter it.
    Reject,
}

/// A delivery waiting for its verdict.
struct Settlement {
    /// The delivery's tag on the consuming channel.
    tag: u64,
    /// The acknowledgement of a routed message; `None` when the verdict is already known.
    waiting: Option<AckReceiver>,
    /// The verdict when nothing is waited for.
    known: Verdict,
}

impl Settlement {
    fn known(tag: u64, verdict: Verdict) -> Self {
        Self {
            tag,
            waiting: None,
            known: verdict,
        }
    }
}

impl Future for Settlement {
    type Output = (u64, Verdict);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, Verdict)> {
        let tag = self.tag;
        match self.waiting.as_mut() {
            None => Poll::Ready((tag, self.known)),
            Some(receiver) => Pin::new(receiver).poll(cx).map(|outcome| match outcome {
                AckOutcome::Delivered => (tag, Verdict::Ack),
                AckOutcome::NotDelivered => (tag, Verdict::Requeue),
            }),
        }
    }
}

/// Opens the consuming channel: prefetch, exchange, queue, bindings, consumer.
pub async fn open(
    connection: &Connection,
    config: &AmqpConfig,
    ctx: &BridgeContext,
) -> Result<(Channel, Consumer), BridgeError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| BridgeError::Protocol(format!("open the consuming channel: {error}")))?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(|error| BridgeError::Protocol(format!("set prefetch: {error}")))?;
    topology::ensure_exchange(&channel, config).await?;
    let queue = topology::declare_queue(&channel, config, &ctx.rules).await?;
    let consumer = channel
        .basic_consume(
            queue.clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| {
            BridgeError::Protocol(format!("consume from queue {:?}: {error}", queue.as_str()))
        })?;
    tracing::info!(
        bridge = %ctx.name,
        "Consuming from queue {:?} bound to exchange {:?} with {:?}.",
        queue.as_str(),
        config.exchange.as_str(),
        topology::binding_keys(&ctx.rules)
    );
    Ok((channel, consumer))
}

/// Consumes one queue into the hub.
pub struct Ingress<'a> {
    /// The consuming channel (acknowledgements go here).
    channel: Channel,
    /// The bridge's context.
    ctx: &'a BridgeContext,
    /// The bridge's format.
    codec: Codec,
    /// Deliveries waiting for their verdict, in delivery order.
    pending: FuturesOrdered<Settlement>,
    /// The last of the consecutive acknowledged deliveries not yet acked to the broker.
    ack_through: Option<u64>,
}

impl<'a> Ingress<'a> {
    /// Consumes on `channel` with `codec`.
    pub fn new(channel: Channel, ctx: &'a BridgeContext, codec: Codec) -> Self {
        Self {
            channel,
            ctx,
            codec,
            pending: FuturesOrdered::new(),
            ack_through: None,
        }
    }

    /// Moves deliveries into the hub until the hub stops or the channel fails.
    pub async fn run(&mut self, consumer: &mut Consumer) -> Result<(), BridgeError> {
        loop {
            tokio::select! {
                biased;
                Some((tag, verdict)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.settle(tag, verdict).await?;
                    while let Some(Some((tag, verdict))) = self.pending.next().now_or_never() {
                        self.settle(tag, verdict).await?;
                    }
                    self.flush_acks().await?;
                }
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let settlement = self.accept(delivery).await;
                        self.pending.push_back(settlement);
                    }
                    Some(Err(error)) => {
                        return Err(BridgeError::Protocol(format!("consuming: {error}")))
                    }
                    None => {
                        return Err(BridgeError::Protocol(
                            "the broker cancelled the consumer (was the queue deleted?)".to_owned(),
                        ))
                    }
                },
                () = self.ctx.shutdown.cancelled() => return self.finish().await,
            }
        }
    }

    /// Routes one delivery into the hub, or decides its fate right away.
    async fn accept(&mut self, delivery: Delivery) -> Settlement {
        let tag = delivery.delivery_tag;
        let routing_key = delivery.routing_key.as_str();
        let inbound = match self.ctx.rules.inbound(routing_key) {
            Ok(Some(inbound)) => inbound,
            // The binding key is coarser than the rule (a prefix ending inside a word):
            // not for us, and not counted as received.
            Ok(None) => return Settlement::known(tag, Verdict::Ack),
            Err(invalid) => {
                self.ctx.metrics.dropped(DropReason::Invalid, &invalid);
                return Settlement::known(tag, Verdict::Reject);
            }
        };
        let topic = inbound.topic;
        let incoming =
            match self
                .codec
                .decode(topic, inbound.qos, &delivery.properties, delivery.data)
            {
                Ok(incoming) => incoming,
                Err(error) => {
                    self.ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!("a message with routing key {routing_key:?}: {error}"),
                    );
                    return Settlement::known(tag, Verdict::Reject);
                }
            };
        if incoming.looped {
            self.ctx.metrics.dropped(
                DropReason::Loop,
                "it carries this hub's own x-switchyard-origin header",
            );
            return Settlement::known(tag, Verdict::Ack);
        }
        let (ack, receiver) = Ack::new();
        self.ctx.publish(incoming.message, Some(ack)).await;
        Settlement {
            tag,
            waiting: Some(receiver),
            known: Verdict::Ack,
        }
    }

    /// Applies one verdict, in delivery order. Acks are gathered; a nack or reject first
    /// sends the acks gathered before it.
    async fn settle(&mut self, tag: u64, verdict: Verdict) -> Result<(), BridgeError> {
        match verdict {
            Verdict::Ack => self.ack_through = Some(tag),
            Verdict::Requeue => {
                self.flush_acks().await?;
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                self.channel
                    .basic_nack(tag, options)
                    .await
                    .map_err(|error| BridgeError::Protocol(format!("basic.nack: {error}")))?;
            }
            Verdict::Reject => {
                self.flush_acks().await?;
                self.channel
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
                    .map_err(|error| BridgeError::Protocol(format!("basic.reject: {error}")))?;
            }
        }
        Ok(())
    }

    /// Acknowledges every delivery up to the last consecutive success at once.
    async fn flush_acks(&mut self) -> Result<(), BridgeError> {
        if let Some(tag) = self.ack_through.take() {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|error| BridgeError::Protocol(format!("basic.ack: {error}")))?;
        }
        Ok(())
    }

    /// The hub is stopping: settles what completes within a short wait; the broker
    /// redelivers the rest to the next consumer.
    async fn finish(&mut self) -> Result<(), BridgeError> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_SETTLE_WAIT;
        while let Ok(Some((tag, verdict))) =
            tokio::time::timeout_at(deadline, self.pending.next()).await
        {
            self.settle(tag, verdict).await?;
        }
        self.flush_acks().await
    }
}

//! Hub → broker: publishes the bridge's outbound queue to the exchange with publisher
//! confirms, many in flight at once.
//!
//! Publishes are started without waiting for lapin to write them ([`publish::start`]), so
//! lapin's I/O thread writes whatever has gathered in one go.
//!
//! Entries move from the hub's queue to [`Outbox::unsent`], then (published, awaiting the
//! broker's confirm) to [`Outbox::in_flight`], and leave on their confirm through
//! `ctx.delivered`, in order. At most `max_in_flight` confirms are outstanding: lapin's
//! confirm bookkeeping scans every pending confirm on each `multiple` ack, so an unbounded
//! backlog costs CPU without adding throughput. Whatever is not confirmed when the
//! connection fails or the hub stops goes back to the front of the hub's queue
//! ([`Outbox::requeue`]) and is published again on the next connection: at least once.
//!
//! A `basic.nack` (the broker could not take the message, e.g. a full queue with
//! `x-overflow = reject-publish`) puts the message back in the queue and pauses for
//! [`NACK_RETRY_DELAY`]. A message returned as unroutable (`mandatory`, no queue bound for
//! its routing key) is dropped and counted with reason `denied` — the broker refused to
//! route it — since retrying cannot help until someone binds a queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};
use switchyard_api::{BridgeContext, BridgeError, DropReason, Outbound};

use crate::config::AmqpConfig;
use crate::format::{self, Codec};
use crate::publish::{self, Settlement};
use crate::topology;

/// Pause after the broker refused (nacked) messages, before publishing them again.
pub const NACK_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a stopping bridge waits for the confirms of messages already published.
const SHUTDOWN_CONFIRM_WAIT: Duration = Duration::from_secs(3);

/// Entries taken from the hub's queue and not yet confirmed. Owned by the bridge's `run`
/// outside the publishing future, so nothing is lost when that future is dropped.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Refused by the broker, waiting to go back to the queue (oldest first).
    nacked: Vec<Outbound>,
    /// Published, waiting for their confirms (in publishing order).
    in_flight: VecDeque<Outbound>,
    /// Taken from the queue, not published yet.
    unsent: VecDeque<Outbound>,
    /// Where `pop_batch` puts entries before they join `unsent`.
    batch: Vec<Outbound>,
}

impl Outbox {
    /// Puts every unconfirmed entry back at the front of the queue, oldest first.
    pub fn requeue(&mut self, ctx: &BridgeContext) {
        let mut entries = std::mem::take(&mut self.nacked);
        entries.extend(self.in_flight.drain(..));
        entries.extend(self.unsent.drain(..));
        entries.append(&mut self.batch);
        if !entries.is_empty() {
            tracing::debug!(
                bridge = %ctx.name,
                "Putting {} unconfirmed message(s) back in the queue.",
                entries.len()
            );
            ctx.outbound.requeue_front(entries);
        }
    }
}

/// Opens the publishing channel: confirms on (when configured), exchange checked.
pub async fn open(connection: &Connection, config: &AmqpConfig) -> Result<Channel, BridgeError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| BridgeError::Protocol(format!("open the publishing channel: {error}")))?;
    if config.confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| {
                BridgeError::Protocol(format!("turn on publisher confirms: {error}"))
            })?;
    }
    topology::ensure_exchange(&channel, config).await?;
    Ok(channel)
}

/// Publishes one bridge's queue on one channel.
pub struct Publisher<'a> {
    /// The publishing channel, shared with the publishes in flight.
    channel: Arc<Channel>,
    /// The bridge's context.
    ctx: &'a BridgeContext,
    /// The bridge's settings.
    config: &'a AmqpConfig,
    /// The bridge's format.
    codec: Codec,
    /// Publishes not settled yet, in step with `Outbox::in_flight` (the i-th belongs to
    /// the i-th).
    settlements: FuturesOrdered<Settlement>,
    /// Messages the broker nacked since the bridge started this connection.
    nacks: u64,
}

impl<'a> Publisher<'a> {
    /// A publisher on `channel`.
    pub fn new(
        channel: Channel,
        ctx: &'a BridgeContext,
        config: &'a AmqpConfig,
        codec: Codec,
    ) -> Self {
        Self {
            channel: Arc::new(channel),
            ctx,
            config,
            codec,
            settlements: FuturesOrdered::new(),
            nacks: 0,
        }
    }

    /// Publishes until the hub stops (then waits briefly for outstanding confirms) or the
    /// channel fails.
    pub async fn run(&mut self, outbox: &mut Outbox) -> Result<(), BridgeError> {
        let max_in_flight = self.config.max_in_flight;
        loop {
            while let Some(Some(result)) = self.settlements.next().now_or_never() {
                self.settle(result, outbox)?;
            }
            if !outbox.nacked.is_empty() {
                if outbox.in_flight.is_empty() && !self.retry_nacked(outbox).await {
                    return Ok(());
                }
                if !outbox.nacked.is_empty() && !self.wait_for_confirm(outbox).await? {
                    return Ok(());
                }
                continue;
            }
            while outbox.in_flight.len() < max_in_flight {
                let Some(entry) = outbox.unsent.pop_front() else {
                    break;
                };
                self.publish(entry, outbox);
            }
            let room = max_in_flight.saturating_sub(outbox.in_flight.len());
            tokio::select! {
                biased;
                Some(result) = self.settlements.next(), if !self.settlements.is_empty() => {
                    self.settle(result, outbox)?;
                }
                open = self.ctx.outbound.pop_batch(&mut outbox.batch, room), if room > 0 => {
                    outbox.unsent.extend(outbox.batch.drain(..));
                    if !open {
                        return self.finish(outbox).await;
                    }
                }
                () = self.ctx.shutdown.cancelled() => return self.finish(outbox).await,
            }
        }
    }

    /// Waits for one confirm; false when the hub stopped first.
    async fn wait_for_confirm(&mut self, outbox: &mut Outbox) -> Result<bool, BridgeError> {
        tokio::select! {
            Some(result) = self.settlements.next() => self.settle(result, outbox).map(|()| true),
            () = self.ctx.shutdown.cancelled() => Ok(false),
        }
    }

    /// Starts publishing one entry; it joins `in_flight` before the write, so that an
    /// interrupted publish is retried rather than lost.
    fn publish(&mut self, entry: Outbound, outbox: &mut Outbox) {
        let message = Arc::clone(&entry.message);
        let Some(name) = self.ctx.remote_name(entry.rule, &message.topic) else {
            // The router matched this rule, so this does not happen; never lose it silently.
            self.drop_invalid(entry, "no out rule of this bridge maps its topic");
            return;
        };
        let encoded = format::routing_key(name).and_then(|routing_key| {
            let (body, properties) = self.codec.encode(&message, routing_key.as_str())?;
            Ok((routing_key, body, properties))
        });
        let (routing_key, body, properties) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => {
                self.drop_invalid(entry, error);
                return;
            }
        };
        outbox.in_flight.push_back(entry);
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory && self.config.confirms,
            immediate: false,
        };
        self.settlements.push_back(publish::start(
            &self.channel,
            self.config.exchange.clone(),
            routing_key,
            options,
            body,
            properties,
        ));
    }

    /// Applies the broker's answer to the oldest in-flight entry.
    fn settle(
        &mut self,
        result: lapin::Result<Confirmation>,
        outbox: &mut Outbox,
    ) -> Result<(), BridgeError> {
        let Some(entry) = outbox.in_flight.pop_front() else {
            return Err(BridgeError::Protocol(
                "a publish settled with no message in flight".to_owned(),
            ));
        };
        match result {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {
                self.ctx.delivered_at(entry, Instant::now());
            }
            Ok(Confirmation::Ack(Some(returned))) => self.drop_returned(entry, &returned),
            Ok(Confirmation::Nack(_)) => {
                self.nacks += 1;
                outbox.nacked.push(entry);
            }
            Err(error) => {
                outbox.in_flight.push_front(entry);
                return Err(BridgeError::Protocol(format!("publish: {error}")));
            }
        }
        Ok(())
    }

    /// Puts nacked entries (and the unsent ones after them) back in the queue and pauses;
    /// false when the hub stopped meanwhile.
    async fn retry_nacked(&mut self, outbox: &mut Outbox) -> bool {
        let refused = outbox.nacked.len();
        tracing::warn!(
            bridge = %self.ctx.name,
            "The broker refused {refused} message(s) with basic.nack ({} on this connection); \
             they go back to the queue and are published again in {NACK_RETRY_DELAY:?}. \
             Check the broker's log and the target queues' limits.",
            self.nacks
        );
        outbox.requeue(self.ctx);
        tokio::select! {
            () = tokio::time::sleep(NACK_RETRY_DELAY) => true,
            () = self.ctx.shutdown.cancelled() => false,
        }
    }

    /// The hub is stopping: gives outstanding confirms a moment to arrive; anything left
    /// unconfirmed is requeued by the caller.
    async fn finish(&mut self, outbox: &mut Outbox) -> Result<(), BridgeError> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_CONFIRM_WAIT;
        while !self.settlements.is_empty() {
            match tokio::time::timeout_at(deadline, self.settlements.next()).await {
                Ok(Some(result)) => self.settle(result, outbox)?,
                Ok(None) | Err(_) => break,
            }
        }
        Ok(())
    }

    /// Counts and drops an entry that cannot be published in this format.
    fn drop_invalid(&self, entry: Outbound, reason: impl std::fmt::Display) {
        self.ctx.metrics.dropped(
            DropReason::Invalid,
            format_args!(
                "cannot publish {:?}: {reason}",
                entry.message.topic.as_str()
            ),
        );
        if let Some(ack) = entry.ack {
            ack.confirm();
        }
    }

    /// Counts and drops an entry the broker returned as unroutable.
    fn drop_returned(&self, entry: Outbound, returned: &BasicReturnMessage) {
        self.ctx.metrics.dropped(
            DropReason::Unroutable,
            format_args!(
                "the broker returned it ({} {}): no queue is bound to routing key {:?} on \
                 exchange {:?}; bind one, or set mandatory = false to let the broker discard \
                 such messages silently",
                returned.reply_code,
                returned.reply_text,
                returned.delivery.routing_key.as_str(),
                returned.delivery.exchange.as_str()
            ),
        );
        if let Some(ack) = entry.ack {
            ack.confirm();
        }
    }
}

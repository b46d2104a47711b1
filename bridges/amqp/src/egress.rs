//! Hub → broker: publishes the bridge's outbound queue to the exchange with publisher
//! confirms, many in flight at once, on a [`Link`] of its own (no lapin thread between
//! the bridge's task and the socket).
//!
//! Each round takes what the hub's queue holds (up to `max_in_flight` unconfirmed),
//! encodes it into one buffer and writes it in one go; confirms are read in the same task.
//! Entries move from the hub's queue to [`Outbox::unsent`], then (published, awaiting the
//! broker's confirm) to [`Outbox::in_flight`], and leave on their confirm through
//! `ctx.delivered`. Whatever is not confirmed when the connection fails or the hub stops
//! goes back to the front of the hub's queue ([`Outbox::requeue`]) and is published again
//! on the next connection: at least once. With `confirms = false` an entry leaves once it
//! is written (at most once).
//!
//! A `basic.nack` (the broker could not take the message, e.g. a full queue with
//! `x-overflow = reject-publish`) puts the message back in the queue and pauses for
//! [`NACK_RETRY_DELAY`]. A message returned as unroutable (`mandatory`, no queue bound for
//! its routing key) is dropped and counted with reason `unroutable`, since retrying cannot
//! help until someone binds a queue. `connection.blocked` (a broker alarm) stops new
//! publishes until `connection.unblocked`; confirms keep being read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchyard_api::{BridgeContext, BridgeError, DropReason, Outbound};

use crate::config::AmqpConfig;
use crate::format::{self, Codec};
use crate::link::confirms::ConfirmWindow;
use crate::link::frames::Publish;
use crate::link::{Event, Link, LinkSettings, Returned};
use crate::session;
use crate::topology;

/// Pause after the broker refused (nacked) messages, before publishing them again.
pub const NACK_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a stopping bridge waits for the confirms of messages already published.
const SHUTDOWN_CONFIRM_WAIT: Duration = Duration::from_secs(3);

/// Most bytes encoded ahead of the socket: beyond this the publisher waits for the writes
/// (and reads confirms meanwhile) before taking more from the queue.
const ROUND_BYTES: usize = 1024 * 1024;

/// How often heartbeats are checked when the broker turned them off (never needed then,
/// but the loop's timer needs a period).
const NO_HEARTBEAT_TICK: Duration = Duration::from_secs(3600);

/// Entries taken from the hub's queue and not yet confirmed. Owned by the bridge's `run`
/// outside the publishing future, so nothing is lost when that future is dropped.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Refused by the broker, waiting to go back to the queue (oldest first).
    nacked: Vec<Outbound>,
    /// Published, waiting for their confirms.
    in_flight: ConfirmWindow<Outbound>,
    /// Taken from the queue, not published yet.
    unsent: VecDeque<Outbound>,
    /// Where `pop_batch` puts entries before they join `unsent`.
    batch: Vec<Outbound>,
}

impl Outbox {
    /// Puts every unconfirmed entry back at the front of the queue, oldest first.
    pub fn requeue(&mut self, ctx: &BridgeContext) {
        let mut entries = std::mem::take(&mut self.nacked);
        entries.extend(self.in_flight.drain());
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

/// Opens the publishing connection named `name`: logged in, one channel, confirms on
/// (when configured), exchange checked; bounded in time like the consuming connection.
pub async fn open(config: &AmqpConfig, name: &str) -> Result<Link, BridgeError> {
    let settings = LinkSettings {
        uri: config.uri.clone(),
        tls: config.tls_client.clone(),
        name: name.to_owned(),
        confirms: config.confirms,
    };
    let opening = async {
        let mut link = Link::open(&settings).await?;
        topology::ensure_exchange_for_publishing(&mut link, config).await?;
        Ok::<_, BridgeError>(link)
    };
    session::bounded("publishing connection to", config, opening).await
}

/// Publishes one bridge's queue on one link.
pub struct Publisher<'a> {
    /// The publishing connection.
    link: &'a mut Link,
    /// The bridge's context.
    ctx: &'a BridgeContext,
    /// The bridge's settings.
    config: &'a AmqpConfig,
    /// The bridge's format.
    codec: Codec,
    /// Returned messages whose confirms have not arrived yet (oldest first).
    returned: VecDeque<Returned>,
    /// Messages the broker nacked since the bridge started this connection.
    nacks: u64,
}

impl<'a> Publisher<'a> {
    /// A publisher on `link`, fresh from [`open`].
    pub fn new(
        link: &'a mut Link,
        ctx: &'a BridgeContext,
        config: &'a AmqpConfig,
        codec: Codec,
    ) -> Self {
        Self {
            link,
            ctx,
            config,
            codec,
            returned: VecDeque::new(),
            nacks: 0,
        }
    }

    /// Publishes until the hub stops (then waits briefly for outstanding confirms) or the
    /// connection fails.
    pub async fn run(&mut self, outbox: &mut Outbox) -> Result<(), BridgeError> {
        let tick = self
            .link
            .heartbeat()
            .map_or(NO_HEARTBEAT_TICK, |interval| interval / 2);
        let mut keep_alive = tokio::time::interval(tick);
        loop {
            if !outbox.nacked.is_empty() && outbox.in_flight.is_empty() {
                if !self.retry_nacked(outbox).await {
                    return Ok(());
                }
                continue;
            }
            let accepting = outbox.nacked.is_empty() && !self.link.blocked();
            if accepting {
                self.publish_unsent(outbox)?;
            }
            if !self.config.confirms && self.link.unwritten() == 0 {
                self.settle_written(outbox);
            }
            let room = match accepting {
                true => self
                    .config
                    .max_in_flight
                    .saturating_sub(outbox.in_flight.len()),
                false => 0,
            };
            tokio::select! {
                biased;
                event = self.link.next_event() => self.on_event(event?, outbox),
                open = self.ctx.outbound.pop_batch(&mut outbox.batch, room), if room > 0 => {
                    outbox.unsent.extend(outbox.batch.drain(..));
                    if !open {
                        return self.finish(outbox).await;
                    }
                }
                _ = keep_alive.tick() => self.link.keep_alive()?,
                () = self.ctx.shutdown.cancelled() => return self.finish(outbox).await,
            }
        }
    }

    /// Encodes unsent entries into the link's buffer, up to `max_in_flight` unconfirmed
    /// and [`ROUND_BYTES`] unwritten.
    fn publish_unsent(&mut self, outbox: &mut Outbox) -> Result<(), BridgeError> {
        while outbox.in_flight.len() < self.config.max_in_flight
            && self.link.unwritten() < ROUND_BYTES
        {
            let Some(entry) = outbox.unsent.pop_front() else {
                break;
            };
            self.publish(entry, outbox)?;
        }
        Ok(())
    }

    /// Encodes one entry; it joins `in_flight`, so that an interrupted publish is retried
    /// rather than lost.
    fn publish(&mut self, entry: Outbound, outbox: &mut Outbox) -> Result<(), BridgeError> {
        let Some(name) = self.ctx.remote_name(entry.rule, &entry.message.topic) else {
            // The router matched this rule, so this does not happen; never lose it silently.
            self.drop_invalid(entry, "no out rule of this bridge maps its topic");
            return Ok(());
        };
        let encoded = format::routing_key(name).and_then(|routing_key| {
            let (body, properties) = self.codec.encode(&entry.message, routing_key.as_str())?;
            Ok((routing_key, body, properties))
        });
        let (routing_key, body, properties) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => {
                self.drop_invalid(entry, error);
                return Ok(());
            }
        };
        outbox.in_flight.push(entry);
        self.link.publish(Publish {
            exchange: self.config.exchange.as_str(),
            routing_key: routing_key.as_str(),
            mandatory: self.config.mandatory && self.config.confirms,
            properties,
            body: &body,
        })
    }

    /// Without confirms, whatever was written has left.
    fn settle_written(&mut self, outbox: &mut Outbox) {
        let now = Instant::now();
        for entry in outbox.in_flight.drain() {
            self.ctx.delivered_at(entry, now);
        }
    }

    /// Applies what the broker said.
    fn on_event(&mut self, event: Event, outbox: &mut Outbox) {
        match event {
            Event::Ack { tag, multiple } => self.confirmed(tag, multiple, true, outbox),
            Event::Nack { tag, multiple } => self.confirmed(tag, multiple, false, outbox),
            Event::Returned(returned) => self.returned.push_back(returned),
            Event::Blocked(reason) => {
                tracing::warn!(
                    bridge = %self.ctx.name,
                    "The broker blocked publishing on this connection ({reason}); messages \
                     wait in the bridge's queue until it unblocks."
                );
            }
            Event::Unblocked => {
                tracing::info!(
                    bridge = %self.ctx.name,
                    "The broker unblocked publishing on this connection."
                );
            }
            // The loop above takes more from the queue, or settles without confirms.
            Event::Written => {}
        }
    }

    /// Settles the entry with delivery tag `tag`, or with `multiple` every unsettled one up
    /// to it: delivered (`ack`) or refused.
    fn confirmed(&mut self, tag: u64, multiple: bool, ack: bool, outbox: &mut Outbox) {
        let now = Instant::now();
        outbox.in_flight.settle(tag, multiple, |entry| {
            if !ack {
                self.nacks += 1;
                outbox.nacked.push(entry);
            } else if let Some(returned) = self.take_return_of(&entry) {
                self.drop_returned(entry, &returned);
            } else {
                self.ctx.delivered_at(entry, now);
            }
        });
    }

    /// The pending return that belongs to `entry`: the broker returns a message before
    /// confirming it, so it is the oldest return with the entry's routing key.
    fn take_return_of(&mut self, entry: &Outbound) -> Option<Returned> {
        if self.returned.is_empty() {
            return None;
        }
        let key = self.ctx.remote_name(entry.rule, &entry.message.topic)?;
        let position = self
            .returned
            .iter()
            .position(|returned| returned.routing_key == key)?;
        self.returned.remove(position)
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
        if !self.config.confirms {
            return Ok(());
        }
        while !outbox.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.link.next_event()).await {
                Ok(Ok(event)) => self.on_event(event, outbox),
                Ok(Err(_)) | Err(_) => break,
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
    fn drop_returned(&self, entry: Outbound, returned: &Returned) {
        self.ctx.metrics.dropped(
            DropReason::Unroutable,
            format_args!(
                "the broker returned it ({} {}): no queue is bound to routing key {:?} on \
                 exchange {:?}; bind one, or set mandatory = false to let the broker discard \
                 such messages silently",
                returned.reply_code, returned.reply_text, returned.routing_key, returned.exchange
            ),
        );
        if let Some(ack) = entry.ack {
            ack.confirm();
        }
    }
}

//! Streams in: Redis streams -> hub, at least once, with a consumer group.
//!
//! Each `in` rule names one stream key. On connect the bridge creates the group where it
//! is missing (`XGROUP CREATE ... $ MKSTREAM`: from the stream's end, the first time only),
//! then recovers before reading anything new:
//! 1. its own pending entries (`XREADGROUP ... 0`): read by this consumer before a crash or
//!    a restart and never acknowledged;
//! 2. entries other consumers left pending longer than `claim_idle` (`XAUTOCLAIM`).
//!
//! Then it reads new entries (`XREADGROUP ... BLOCK block ... >`) on a connection of its own.
//! An entry is acknowledged (`XACK`) only when every destination took its message
//! ([`AckOutcome::Delivered`]); QoS 0 rules, entries that cannot be read and entries that
//! loop back are acknowledged at once (counted when dropped). An entry a destination gave
//! up stays pending and is read again at the next maintenance, every `claim_idle`, which
//! also claims entries of dead consumers. At most `max_unacked` entries wait at once.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use switchyard_api::message::originated_at;
use switchyard_api::{
    Ack, AckOutcome, BoxFuture, BridgeContext, BridgeError, DropReason, Message, QoS,
};

use crate::config::RedisConfig;
use crate::connection::{self, failed};
use crate::fields;
use crate::format::Codec;
use crate::reply::{self, Entry};

/// How long a stopping bridge waits for outcomes of entries already routed, so they can
/// be acknowledged instead of read again next time.
const SHUTDOWN_SETTLE_WAIT: Duration = Duration::from_secs(2);

/// The first id of every stream: "from the beginning" for pending lists and claims.
const FIRST_ID: &str = "0-0";

/// A routed entry whose destinations have all answered.
struct Settled {
    key: usize,
    id: String,
    outcome: AckOutcome,
}

/// Reads the streams of the `in` rules into the hub.
pub struct Consumer<'a> {
    ctx: &'a BridgeContext,
    codec: Codec,
    /// Stream keys, in rule order.
    keys: Vec<String>,
    group: String,
    name: String,
    count: usize,
    block: Duration,
    claim_idle: Duration,
    max_unacked: usize,
    /// For the blocking `XREADGROUP`.
    reader: MultiplexedConnection,
    /// For everything else (`XACK`, `XAUTOCLAIM`, recovery reads).
    control: MultiplexedConnection,
    /// Routed entries waiting for their destinations, by (key index, id).
    in_flight: HashSet<(usize, String)>,
    settling: FuturesUnordered<BoxFuture<'static, Settled>>,
    /// Ids to acknowledge, per key.
    to_ack: Vec<Vec<String>>,
    /// A destination gave an entry up: read this consumer's pending entries again.
    rescan: bool,
}

impl<'a> Consumer<'a> {
    /// Connects and makes sure every stream has the group.
    pub async fn connect(
        config: &RedisConfig,
        ctx: &'a BridgeContext,
        codec: Codec,
    ) -> Result<Consumer<'a>, BridgeError> {
        let settings = &config.settings;
        let streams = &settings.streams;
        let response = settings.response_timeout.0;
        let reader = connection::open(config, response + streams.block.0).await?;
        let mut control = connection::open(config, response).await?;
        for key in &config.stream_keys {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&streams.group)
                .arg("$")
                .arg("MKSTREAM")
                .exec_async(&mut control)
                .await;
            match created {
                Ok(()) => tracing::info!(
                    bridge = %ctx.name,
                    "Created consumer group {:?} on stream {key:?}.",
                    streams.group
                ),
                Err(error) if error.code() == Some("BUSYGROUP") => {}
                Err(error) => return Err(failed(&format!("XGROUP CREATE {key}"), error)),
            }
        }
        let name = config.consumer(&ctx.hub_name, &ctx.name);
        tracing::info!(
            bridge = %ctx.name,
            "Reading streams {:?} as consumer {name:?} of group {:?}.",
            config.stream_keys,
            streams.group
        );
        Ok(Consumer {
            ctx,
            codec,
            to_ack: vec![Vec::new(); config.stream_keys.len()],
            keys: config.stream_keys.clone(),
            group: streams.group.clone(),
            name,
            count: streams.count,
            block: streams.block.0,
            claim_idle: streams.claim_idle.0,
            max_unacked: streams.max_unacked,
            reader,
            control,
            in_flight: HashSet::new(),
            settling: FuturesUnordered::new(),
            rescan: false,
        })
    }

    /// Recovers pending entries, then reads new ones until the hub stops or Redis fails.
    pub async fn run(mut self) -> Result<(), BridgeError> {
        self.maintain(true).await?;
        let mut reads: FuturesUnordered<BoxFuture<'static, RedisResult<Value>>> =
            FuturesUnordered::new();
        let start = tokio::time::Instant::now() + self.claim_idle;
        let mut maintenance = tokio::time::interval_at(start, self.claim_idle);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance_due = false;
        loop {
            if reads.is_empty() {
                if maintenance_due {
                    let rescan = std::mem::take(&mut self.rescan);
                    self.maintain(rescan).await?;
                    maintenance_due = false;
                }
                if self.in_flight.len() < self.max_unacked {
                    reads.push(self.read_new());
                }
            }
            tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => return self.finish().await,
                Some(settled) = self.settling.next(), if !self.settling.is_empty() => {
                    self.settle(settled);
                    while let Some(Some(settled)) = self.settling.next().now_or_never() {
                        self.settle(settled);
                    }
                    self.flush_acks().await?;
                }
                Some(reply) = reads.next(), if !reads.is_empty() => {
                    let reply = reply.map_err(|error| failed("XREADGROUP", error))?;
                    let streams = reply::read_group(reply).map_err(malformed)?;
                    for (key, entries) in streams {
                        let Some(index) = self.keys.iter().position(|k| k.as_bytes() == key) else {
                            continue;
                        };
                        for entry in entries {
                            self.route(index, entry).await?;
                        }
                    }
                    self.flush_acks().await?;
                }
                _ = maintenance.tick() => maintenance_due = true,
            }
        }
    }

    /// A blocking read of new entries on every stream.
    fn read_new(&self) -> BoxFuture<'static, RedisResult<Value>> {
        let mut connection = self.reader.clone();
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(self.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.keys);
        for _ in &self.keys {
            command.arg(">");
        }
        Box::pin(async move { command.query_async(&mut connection).await })
    }

    /// Reads this consumer's pending entries again (when `own` is set), then claims
    /// entries other consumers left idle for `claim_idle`.
    async fn maintain(&mut self, own: bool) -> Result<(), BridgeError> {
        for index in 0..self.keys.len() {
            if own {
                self.reread_pending(index).await?;
            }
            self.claim_idle_entries(index).await?;
        }
        self.flush_acks().await
    }

    /// Routes every entry this consumer read from stream `index` and never acknowledged.
    async fn reread_pending(&mut self, index: usize) -> Result<(), BridgeError> {
        let mut after = FIRST_ID.to_owned();
        loop {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.name)
                .arg("COUNT")
                .arg(self.count)
                .arg("STREAMS")
                .arg(&self.keys[index])
                .arg(&after)
                .query_async(&mut self.control)
                .await
                .map_err(|error| failed("XREADGROUP (pending entries)", error))?;
            let entries: Vec<Entry> = reply::read_group(reply)
                .map_err(malformed)?
                .into_iter()
                .flat_map(|(_, entries)| entries)
                .collect();
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.id.clone();
            for entry in entries {
                self.route(index, entry).await?;
            }
        }
    }

    /// Claims and routes the entries of stream `index` idle longer than `claim_idle`.
    async fn claim_idle_entries(&mut self, index: usize) -> Result<(), BridgeError> {
        let mut cursor = FIRST_ID.to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.keys[index])
                .arg(&self.group)
                .arg(&self.name)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.count)
                .query_async(&mut self.control)
                .await
                .map_err(|error| failed("XAUTOCLAIM", error))?;
            let (next, entries) = reply::auto_claim(reply).map_err(malformed)?;
            if !entries.is_empty() {
                tracing::info!(
                    bridge = %self.ctx.name,
                    "Claimed {} entries of stream {:?} left pending by another consumer.",
                    entries.len(),
                    self.keys[index]
                );
            }
            for entry in entries {
                self.route(index, entry).await?;
            }
            if next == FIRST_ID {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Hands one entry to the hub (unless it is already on its way there).
    async fn route(&mut self, index: usize, entry: Entry) -> Result<(), BridgeError> {
        let key = (index, entry.id);
        if self.in_flight.contains(&key) {
            return Ok(());
        }
        let (index, id) = key;
        while self.in_flight.len() >= self.max_unacked {
            let Some(settled) = self.settling.next().await else {
                break;
            };
            self.settle(settled);
            self.flush_acks().await?;
        }
        let Some(fields) = entry.fields else {
            // Deleted (trimmed) while pending: nothing left to deliver.
            self.to_ack[index].push(id);
            return Ok(());
        };
        let Some((message, rule_qos)) = self.message(index, &id, fields) else {
            self.to_ack[index].push(id);
            return Ok(());
        };
        if rule_qos == QoS::AtMostOnce {
            self.ctx.publish(message, None).await;
            self.to_ack[index].push(id);
            return Ok(());
        }
        let (ack, receiver) = Ack::new();
        self.ctx.publish(message, Some(ack)).await;
        self.in_flight.insert((index, id.clone()));
        self.settling.push(Box::pin(async move {
            Settled {
                key: index,
                id,
                outcome: receiver.await,
            }
        }));
        Ok(())
    }

    /// The message an entry of stream `index` stands for, and its rule's QoS; `None` (the
    /// drop counted) when it cannot be delivered.
    fn message(
        &self,
        index: usize,
        id: &str,
        entry: Vec<(bytes::Bytes, bytes::Bytes)>,
    ) -> Option<(Message, QoS)> {
        let key = &self.keys[index];
        let metrics = &self.ctx.metrics;
        let inbound = self.ctx.inbound(key)?;
        let topic = inbound.topic;
        let decoded = match fields::decode(entry) {
            Ok(decoded) => decoded,
            Err(error) => {
                metrics.dropped(
                    DropReason::Invalid,
                    format_args!("entry {id} of stream {key:?}: {error}"),
                );
                return None;
            }
        };
        let mut message = match self.codec.decode(topic, decoded.payload) {
            Ok(message) => message,
            Err(error) => {
                metrics.dropped(
                    DropReason::Invalid,
                    format_args!("entry {id} of stream {key:?}: {error}"),
                );
                return None;
            }
        };
        if !self.codec.is_envelope() {
            message.headers = decoded.headers;
            message.id = decoded.id.map(Into::into);
            if let Some(timestamp) = decoded.timestamp_ms {
                message.timestamp_ms = timestamp;
            }
        }
        if originated_at(&message.headers, &self.ctx.hub_name) {
            metrics.dropped(DropReason::Loop, "it carries this hub's own origin");
            return None;
        }
        message.take_hops_header();
        message.qos = inbound.qos;
        Some((message, inbound.qos))
    }

    fn settle(&mut self, settled: Settled) {
        self.in_flight.remove(&(settled.key, settled.id.clone()));
        match settled.outcome {
            AckOutcome::Delivered => self.to_ack[settled.key].push(settled.id),
            AckOutcome::NotDelivered => self.rescan = true,
        }
    }

    /// Sends the gathered acknowledgements, one `XACK` per stream, in one pipeline.
    async fn flush_acks(&mut self) -> Result<(), BridgeError> {
        let mut pipeline = redis::pipe();
        for (key, ids) in self.keys.iter().zip(&mut self.to_ack) {
            if !ids.is_empty() {
                pipeline
                    .cmd("XACK")
                    .arg(key)
                    .arg(&self.group)
                    .arg(&*ids)
                    .ignore();
                ids.clear();
            }
        }
        if pipeline.is_empty() {
            return Ok(());
        }
        pipeline
            .exec_async(&mut self.control)
            .await
            .map_err(|error| failed("XACK", error))
    }

    /// The hub is stopping: acknowledges what settles within a short wait; the rest stays
    /// pending and is read again by the next run.
    async fn finish(&mut self) -> Result<(), BridgeError> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_SETTLE_WAIT;
        while let Ok(Some(settled)) = tokio::time::timeout_at(deadline, self.settling.next()).await
        {
            self.settle(settled);
        }
        self.flush_acks().await
    }
}

fn malformed(error: reply::ReplyError) -> BridgeError {
    BridgeError::Protocol(error.to_string())
}

//! Hub -> Redis: `PUBLISH` (pub/sub) or `XADD` (streams), pipelined in batches.
//!
//! Entries taken from the hub's queue wait in the caller's `unconfirmed` list until Redis
//! has answered the pipeline that carries them; only then do they leave the hub
//! (`ctx.delivered`, which confirms the source's acknowledgement share). When the
//! connection fails, the caller puts them back at the front of the queue, so the next
//! connection sends them again, in order: at least once. A command Redis refuses (such as
//! `XADD` to a key that holds another type) would be refused again, so that message is
//! dropped and counted `denied`.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Value};
use switchyard_api::{BridgeContext, BridgeError, DropReason, Outbound};

use crate::connection::failed;
use crate::fields;
use crate::format::Codec;

/// The command each message becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `PUBLISH channel payload`.
    Publish,
    /// `XADD key [MAXLEN ~ maxlen] * field value ...` (see [`crate::fields`]).
    Append {
        /// Approximate most entries kept per stream.
        maxlen: Option<u64>,
    },
}

/// Publishes one bridge's queue on one connection.
pub struct Egress<'a> {
    ctx: &'a BridgeContext,
    connection: MultiplexedConnection,
    codec: Codec,
    command: Command,
    batch: usize,
}

impl<'a> Egress<'a> {
    /// Sends with `command`, at most `batch` messages per pipeline.
    pub fn new(
        ctx: &'a BridgeContext,
        connection: MultiplexedConnection,
        codec: Codec,
        command: Command,
        batch: usize,
    ) -> Self {
        Self {
            ctx,
            connection,
            codec,
            command,
            batch,
        }
    }

    /// Sends until the hub stops (`Ok`) or Redis fails (`Err`); entries not yet confirmed
    /// are left in `unconfirmed` for the caller to put back.
    pub async fn run(&mut self, unconfirmed: &mut Vec<Outbound>) -> Result<(), BridgeError> {
        loop {
            if unconfirmed.is_empty() {
                tokio::select! {
                    () = self.ctx.shutdown.cancelled() => return Ok(()),
                    open = self.ctx.outbound.pop_batch(unconfirmed, self.batch) => {
                        if !open {
                            return Ok(());
                        }
                    }
                }
            }
            self.send(unconfirmed).await?;
        }
    }

    /// Sends `entries` in one pipeline; on success they are all settled and removed.
    async fn send(&mut self, entries: &mut Vec<Outbound>) -> Result<(), BridgeError> {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries.iter() {
            let name = self.ctx.remote_name(entry.rule, &entry.message.topic);
            if let Some(name) = &name {
                self.add(&mut pipeline, name, entry);
            }
            names.push(name);
        }
        let replies: Vec<Value> = if pipeline.is_empty() {
            Vec::new()
        } else {
            pipeline
                .query_async(&mut self.connection)
                .await
                .map_err(|error| failed(self.verb(), error))?
        };
        let now = Instant::now();
        let mut replies = replies.into_iter();
        for (entry, name) in entries.drain(..).zip(names) {
            let Some(name) = name else {
                // The router only queues what a rule passes; never lose it silently.
                self.refused(entry, DropReason::Invalid, "no out rule maps its topic");
                continue;
            };
            match replies.next() {
                Some(Value::ServerError(error)) => self.refused(
                    entry,
                    DropReason::Denied,
                    format_args!("Redis refused {} to {name:?}: {error}", self.verb()),
                ),
                _ => self.ctx.delivered_at(entry, now),
            }
        }
        Ok(())
    }

    /// Adds the command for one entry.
    fn add(&self, pipeline: &mut Pipeline, name: &str, entry: &Outbound) {
        let message = &entry.message;
        let headers = message.outgoing_headers(&self.ctx.hub_name);
        match self.command {
            Command::Publish => {
                let payload = self.codec.encode(message, name, headers);
                pipeline.cmd("PUBLISH").arg(name).arg(&payload[..]);
            }
            Command::Append { maxlen } => {
                let payload = self.codec.encode(message, name, headers.clone());
                let command = pipeline.cmd("XADD").arg(name);
                if let Some(maxlen) = maxlen {
                    command.arg("MAXLEN").arg("~").arg(maxlen);
                }
                command.arg("*");
                for (field, value) in fields::encode(
                    message.topic.as_str(),
                    payload,
                    message.id.as_deref(),
                    message.timestamp_ms,
                    &headers,
                ) {
                    command.arg(field).arg(&value[..]);
                }
            }
        }
    }

    fn verb(&self) -> &'static str {
        match self.command {
            Command::Publish => "PUBLISH",
            Command::Append { .. } => "XADD",
        }
    }

    /// Counts and settles an entry that cannot be sent (retrying would not help).
    fn refused(&self, entry: Outbound, reason: DropReason, detail: impl std::fmt::Display) {
        self.ctx.metrics.dropped(
            reason,
            format_args!("{:?}: {detail}", entry.message.topic.as_str()),
        );
        if let Some(ack) = entry.ack {
            ack.confirm();
        }
    }
}

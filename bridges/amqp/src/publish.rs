//! Starting a publish without waiting for it to be written.
//!
//! lapin hands every publish to its own I/O thread and resolves `basic_publish` once the
//! frames are on the socket. Awaiting that before publishing the next message costs two
//! thread hand-offs and one `write` per message. [`start`] instead polls the publish
//! once, which numbers it (its delivery tag, for confirms) and queues its frames, and
//! returns the rest as a [`Settlement`]: started in order, many at a time, they reach the
//! I/O thread together and go out in few writes.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

/// One publish from its start to the broker's answer: written to the socket, then
/// confirmed (or [`Confirmation::NotRequested`] once written, without confirms).
pub type Settlement = BoxFuture<'static, lapin::Result<Confirmation>>;

/// Starts publishing `body` to `exchange` with `routing_key`. Publishes reach the socket in
/// the order they were started; the returned settlement completes with the broker's answer.
pub fn start(
    channel: &Arc<Channel>,
    exchange: ShortString,
    routing_key: ShortString,
    options: BasicPublishOptions,
    body: Bytes,
    properties: BasicProperties,
) -> Settlement {
    let channel = Arc::clone(channel);
    let mut settlement: Settlement = Box::pin(async move {
        channel
            .basic_publish(exchange, routing_key, options, &body, properties)
            .await?
            .await
    });
    // The first poll numbers the publish and queues its frames; what it then awaits (the
    // write, the confirm) completes later.
    match (&mut settlement).now_or_never() {
        Some(settled) => Box::pin(std::future::ready(settled)),
        None => settlement,
    }
}

//! The retained `$SYS/switchyard/<hub>/bridges/<name>/state` topics: `1` while a bridge is
//! up, `0` while it is down, as Mosquitto's bridge notifications. They go wherever an `out`
//! rule matches them explicitly (a leading wildcard never matches `$SYS`), e.g. the embedded
//! broker's `$SYS/switchyard/#` rule.

use bytes::Bytes;
use switchyard_api::{BridgeContext, Message, QoS, Topic};
use tokio_util::task::TaskTracker;

/// Publishes each bridge's state now and on every change, until shutdown.
pub fn publish_states(tracker: &TaskTracker, contexts: &[BridgeContext]) {
    for ctx in contexts {
        let ctx = ctx.clone();
        let topic = format!(
            "$SYS/switchyard/{}/bridges/{}/state",
            ctx.hub_name, ctx.name
        );
        let Ok(topic) = Topic::new(&topic) else {
            tracing::warn!(bridge = %ctx.name, "No state topic: {topic:?} is not a valid topic.");
            continue;
        };
        tracker.spawn(async move {
            let mut changes = ctx.metrics.watch_up();
            loop {
                let up = *changes.borrow_and_update();
                let mut message = Message::new(
                    topic.clone(),
                    Bytes::from_static(if up { b"1" } else { b"0" }),
                );
                message.retain = true;
                message.qos = QoS::AtLeastOnce;
                message.origin = ctx.id;
                ctx.router.route(ctx.id, message, None).await;
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = ctx.shutdown.cancelled() => return,
                }
            }
        });
    }
}

//! Counting pub/sub gaps: Redis keeps no pub/sub message for a subscriber that is away,
//! so every message published between losing the subscription and subscribing again is
//! lost, and nobody can say how many. The bridge makes each gap visible instead: when it
//! subscribes again it logs how long it was away and counts one
//! `switchyard_messages_dropped_total{reason="lagged"}` per gap (a gap, not a number of
//! messages), beside the reconnect the hub counts.

use std::sync::Mutex;
use std::time::Instant;

use switchyard_api::{BridgeContext, DropReason};

/// When the bridge last lost its subscriptions, across runs.
#[derive(Debug, Default)]
pub struct Gap {
    lost_at: Mutex<Option<Instant>>,
}

impl Gap {
    /// The subscriptions were lost now (an earlier loss not yet resumed is kept).
    pub fn lost(&self) {
        let mut lost_at = self.lock();
        lost_at.get_or_insert_with(Instant::now);
    }

    /// The bridge subscribed again: counts and logs the gap, if there was one.
    pub fn resumed(&self, ctx: &BridgeContext) {
        let Some(lost_at) = self.lock().take() else {
            return;
        };
        let away = lost_at.elapsed();
        tracing::warn!(
            bridge = %ctx.name,
            "Pub/sub gap: the subscriptions were away for {away:?}; messages published on \
             Redis meanwhile are lost (Redis does not keep them). Use mode = \"streams\" \
             for delivery that survives disconnections."
        );
        ctx.metrics.dropped(
            DropReason::Lagged,
            format_args!("pub/sub gap of {away:?} while reconnecting"),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // An Option<Instant> cannot be left inconsistent by a panic.
        self.lost_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

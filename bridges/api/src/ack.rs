//! Acknowledgement fan-in: a source learns when every destination has taken a message.
//!
//! The source creates an [`Ack`] with [`Ack::new`] and hands it to the router with the
//! message. The router gives each destination its own share ([`Ack::share`]) and settles its
//! own; each destination calls [`Ack::confirm`] once the message is safe (publisher confirm,
//! PUBACK, written to a socket). When the last share is gone the source's [`AckReceiver`]
//! resolves: [`AckOutcome::Delivered`] if every share was confirmed, `NotDelivered` if any
//! was dropped unconfirmed (a bridge stopped with the message still queued), so the source
//! can leave the message unacknowledged for its broker to redeliver.
//!
//! A destination with a disk spool holds a different kind of share for what it queued: a
//! receipt for the message's spool record. Confirming it deletes the record; dropping it
//! unconfirmed keeps the record, so the message is replayed after a restart. Adapters
//! cannot tell the two kinds apart and need not: they confirm what they delivered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// What became of a message across all its destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Every destination confirmed (or none was interested).
    Delivered,
    /// At least one destination gave the message up unconfirmed.
    NotDelivered,
}

struct AckState {
    /// Set when any share is dropped without confirming.
    failed: AtomicBool,
    /// Fired once, when the last share is gone.
    done: Option<oneshot::Sender<AckOutcome>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        let outcome = if self.failed.load(Ordering::Acquire) {
            AckOutcome::NotDelivered
        } else {
            AckOutcome::Delivered
        };
        if let Some(done) = self.done.take() {
            // The source may have stopped waiting; then nobody needs the outcome.
            let _ = done.send(outcome);
        }
    }
}

/// Where a spool receipt reports that its record may be deleted (the spool's journal).
pub(crate) trait Settle: Send + Sync {
    /// The destination is done with record `seq`.
    fn settle(&self, seq: u64);
}

/// A spooled entry's claim on its spool record.
#[derive(Clone)]
pub(crate) struct Receipt {
    /// Where to report the record done.
    pub(crate) journal: Arc<dyn Settle>,
    /// The record's sequence number in its spool.
    pub(crate) seq: u64,
    /// Whether the record is (or is being) written; a QoS 0 entry held in memory has a
    /// number but no record unless the hub stops with it still queued.
    pub(crate) written: bool,
}

enum Share {
    /// A share of a source's acknowledgement.
    Source(Arc<AckState>),
    /// A spooled entry's record.
    Spooled(Receipt),
}

/// One share of a message's acknowledgement. Dropping it unconfirmed marks the message
/// as not delivered (or, for a spooled entry, keeps its record for a later replay).
pub struct Ack {
    share: Share,
    settled: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("settled", &self.settled)
            .finish()
    }
}

impl Ack {
    /// A new acknowledgement and the receiver that resolves when all its shares are gone.
    pub fn new() -> (Ack, AckReceiver) {
        let (done, receiver) = oneshot::channel();
        let state = Arc::new(AckState {
            failed: AtomicBool::new(false),
            done: Some(done),
        });
        (
            Ack {
                share: Share::Source(state),
                settled: false,
            },
            AckReceiver(receiver),
        )
    }

    /// A receipt for a spool record.
    pub(crate) fn spooled(receipt: Receipt) -> Ack {
        Ack {
            share: Share::Spooled(receipt),
            settled: false,
        }
    }

    /// The spool receipt this share is, if it is one.
    pub(crate) fn receipt(&self) -> Option<&Receipt> {
        match &self.share {
            Share::Spooled(receipt) => Some(receipt),
            Share::Source(_) => None,
        }
    }

    /// Another unsettled share of the same acknowledgement (no allocation).
    pub fn share(&self) -> Ack {
        let share = match &self.share {
            Share::Source(state) => Share::Source(Arc::clone(state)),
            Share::Spooled(receipt) => Share::Spooled(receipt.clone()),
        };
        Ack {
            share,
            settled: false,
        }
    }

    /// This share's destination has the message safe.
    pub fn confirm(mut self) {
        self.settled = true;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        match &self.share {
            Share::Source(state) if !self.settled => state.failed.store(true, Ordering::Release),
            Share::Spooled(receipt) if self.settled && receipt.written => {
                receipt.journal.settle(receipt.seq);
            }
            _ => {}
        }
    }
}

/// Resolves with the outcome once every share of an [`Ack`] is confirmed or dropped.
pub struct AckReceiver(oneshot::Receiver<AckOutcome>);

impl Future for AckReceiver {
    type Output = AckOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AckOutcome> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(AckOutcome::NotDelivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_confirmed_is_delivered() {
        let (ack, receiver) = Ack::new();
        let first = ack.share();
        let second = ack.share();
        ack.confirm();
        first.confirm();
        second.confirm();
        assert_eq!(receiver.await, AckOutcome::Delivered);
    }

    #[tokio::test]
    async fn one_dropped_share_is_not_delivered() {
        let (ack, receiver) = Ack::new();
        let first = ack.share();
        let second = ack.share();
        ack.confirm();
        first.confirm();
        drop(second);
        assert_eq!(receiver.await, AckOutcome::NotDelivered);
    }

    #[tokio::test]
    async fn waits_for_the_last_share() {
        let (ack, mut receiver) = Ack::new();
        let pending = ack.share();
        ack.confirm();
        assert!(futures_util::poll!(Pin::new(&mut receiver)).is_pending());
        pending.confirm();
        assert_eq!(receiver.await, AckOutcome::Delivered);
    }
}

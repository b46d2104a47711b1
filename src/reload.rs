//! Asking the running hub to re-read its configuration: SIGHUP, or `POST /api/reload` on
//! the admin endpoint. Both go to the run loop, which reloads one request at a time.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// How many reload requests may wait while one is being applied.
const PENDING: usize = 8;

/// The outcome of a reload: what changed, or why the new configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration is in force; the text says what changed.
    Applied(String),
    /// The new configuration was refused (the old one keeps running); the text says why.
    Refused(String),
}

/// A request and where its outcome goes.
pub type ReloadRequest = oneshot::Sender<ReloadOutcome>;

/// The sending side, held by the admin endpoint.
#[derive(Clone, Debug)]
pub struct ReloadRequests(mpsc::Sender<ReloadRequest>);

impl ReloadRequests {
    /// A new channel: the handle for requesters and the run loop's receiver.
    pub fn channel() -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (sender, receiver) = mpsc::channel(PENDING);
        (Self(sender), receiver)
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn request(&self) -> ReloadOutcome {
        let (reply, outcome) = oneshot::channel();
        if self.0.send(reply).await.is_err() {
            return ReloadOutcome::Refused("the hub is stopping".to_owned());
        }
        outcome
            .await
            .unwrap_or_else(|_| ReloadOutcome::Refused("the hub is stopping".to_owned()))
    }
}

/// SIGHUP, as a stream of signals.
pub fn hangups() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

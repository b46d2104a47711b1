//! What can stop a benchmark run.

use std::fmt::Display;

/// A benchmark that could not run, or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `--from`/`--to` URL that does not name an endpoint this tool knows.
    #[error("{url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it, and what would be right.
        reason: String,
    },
    /// An endpoint that failed: connecting, subscribing, sending.
    #[error("{url}: {action}: {detail}")]
    Endpoint {
        /// The endpoint's URL as given.
        url: String,
        /// What the tool was doing (`connect`, `subscribe`, `publish`, ...).
        action: &'static str,
        /// The protocol library's message.
        detail: String,
    },
    /// Options that do not make sense together (a rate of zero, say).
    #[error("{0}")]
    Usage(String),
    /// The sender thread could not start or ended without an answer.
    #[error("sender thread: {0}")]
    Sender(String),
}

impl BenchError {
    /// An [`BenchError::Endpoint`] error from any displayable library error.
    pub fn endpoint(url: &str, action: &'static str, detail: impl Display) -> BenchError {
        BenchError::Endpoint {
            url: url.to_owned(),
            action,
            detail: detail.to_string(),
        }
    }
}

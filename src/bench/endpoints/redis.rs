//! Redis pub/sub: PUBLISH to one channel (pipelined by a writer task), or SUBSCRIBE.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::redis::aio::MultiplexedConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{Client, IntoConnectionInfo};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// Most PUBLISH commands in one pipeline.
const BATCH: usize = 256;
/// Payloads waiting for the writer. When full, `send` waits and the schedule falls
/// behind, which the receiver sees as latency (the sender is still open-loop).
const QUEUE: usize = 100_000;

/// Publishes every payload to one channel through a writer task that pipelines what is
/// waiting, so a send never waits for Redis's reply.
pub struct Publisher {
    /// The endpoint's URL, for messages.
    url: String,
    /// Payloads for the writer task.
    queue: mpsc::Sender<Vec<u8>>,
    /// The writer; aborted on drop.
    writer: JoinHandle<()>,
}

impl Publisher {
    /// Connects (TCP_NODELAY on) and starts the writer.
    pub async fn connect(
        url: &str,
        server: &str,
        channel: &str,
        failures: Arc<AtomicU64>,
    ) -> Result<Publisher, BenchError> {
        let client = client(url, server)?;
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| BenchError::endpoint(url, "connect", "no answer in time"))?
                .map_err(|e| BenchError::endpoint(url, "connect", e))?;
        let (queue, waiting) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(
            connection,
            channel.to_owned(),
            waiting,
            failures,
            url.to_owned(),
        ));
        Ok(Publisher {
            url: url.to_owned(),
            queue,
            writer,
        })
    }

    /// Hands one payload to the writer.
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        self.queue
            .send(payload)
            .await
            .map_err(|_| BenchError::endpoint(&self.url, "publish", "the writer stopped"))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Drains what is waiting (up to [`BATCH`]) into one pipeline, sends it, repeats.
async fn write(
    mut connection: MultiplexedConnection,
    channel: String,
    mut waiting: mpsc::Receiver<Vec<u8>>,
    failures: Arc<AtomicU64>,
    label: String,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while waiting.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipeline = ::redis::pipe();
        for payload in &batch {
            pipeline.cmd("PUBLISH").arg(&channel).arg(payload).ignore();
        }
        if let Err(error) = pipeline.query_async::<()>(&mut connection).await {
            failures.fetch_add(batch.len() as u64, Ordering::Relaxed);
            eprintln!("switchyard bench: {label}: PUBLISH failed: {error}");
        }
        batch.clear();
    }
}

/// Subscribes to `channel` and records every message; returns after Redis confirmed the
/// subscription.
pub async fn subscribe(
    url: &str,
    server: &str,
    channel: &str,
    tally: SharedTally,
) -> Result<JoinHandle<()>, BenchError> {
    let client = client(url, server)?;
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BenchError::endpoint(url, "connect", "no answer in time"))?
        .map_err(|e| BenchError::endpoint(url, "connect", e))?;
    pubsub
        .subscribe(channel)
        .await
        .map_err(|e| BenchError::endpoint(url, "subscribe", e))?;
    let mut messages = pubsub.into_on_message();
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            tally.record(message.get_payload_bytes());
        }
    }))
}

fn client(url: &str, server: &str) -> Result<Client, BenchError> {
    let info = server
        .into_connection_info()
        .map_err(|e| BenchError::endpoint(url, "parse", e))?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Client::open(info).map_err(|e| BenchError::endpoint(url, "connect", e))
}

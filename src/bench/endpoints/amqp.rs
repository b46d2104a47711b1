//! AMQP 0-9-1 (lapin): publish to an exchange with a routing key (publisher confirms at
//! QoS 1), or receive through a server-named, exclusive queue bound with the key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};

use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_amqp::publish::{self, Settlement};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// Publishes awaited at once (their writes, and their confirms at QoS 1); beyond this
/// `send` waits (and the schedule falls behind, which shows as latency).
const PUBLISHES_IN_FLIGHT: usize = 10_000;

/// Publishes every payload to one exchange with one routing key.
pub struct Publisher {
    /// The endpoint's URL, for messages.
    url: String,
    /// Kept open for the channel's life.
    _connection: Connection,
    /// The channel published on.
    channel: Arc<Channel>,
    /// The exchange.
    exchange: String,
    /// The routing key.
    key: String,
    /// Started publishes, for the settling task.
    settlements: mpsc::Sender<Settlement>,
    /// Awaits the publishes in order and counts failures and nacks; aborted on drop.
    settling: JoinHandle<()>,
}

impl Publisher {
    /// Connects and opens a channel, with publisher confirms when `qos` is 1.
    pub async fn connect(
        url: &str,
        server: &str,
        exchange: &str,
        key: &str,
        qos: u8,
        failures: Arc<AtomicU64>,
    ) -> Result<Publisher, BenchError> {
        let (connection, channel) = open(url, server).await?;
        if qos > 0 {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| BenchError::endpoint(url, "confirm.select", e))?;
        }
        let (settlements, started) = mpsc::channel(PUBLISHES_IN_FLIGHT);
        let settling = tokio::spawn(settle(started, failures, url.to_owned()));
        Ok(Publisher {
            url: url.to_owned(),
            _connection: connection,
            channel: Arc::new(channel),
            exchange: exchange.to_owned(),
            key: key.to_owned(),
            settlements,
            settling,
        })
    }

    /// Publishes one message (transient, like the peers' QoS 0/1 defaults). Returns once
    /// lapin has queued it, as the hub's own bridge does; the settling task awaits its write
    /// (and at QoS 1 its confirm).
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        let settlement = publish::start(
            &self.channel,
            self.exchange.as_str().into(),
            self.key.as_str().into(),
            BasicPublishOptions::default(),
            payload.into(),
            BasicProperties::default(),
        );
        self.settlements
            .send(settlement)
            .await
            .map_err(|_| BenchError::endpoint(&self.url, "publish", "settling task stopped"))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.settling.abort();
    }
}

/// Awaits started publishes in order; a failed write or a nacked confirm is a failure.
async fn settle(mut started: mpsc::Receiver<Settlement>, failures: Arc<AtomicU64>, label: String) {
    while let Some(settlement) = started.recv().await {
        match settlement.await {
            Ok(confirmation) if !confirmation.is_nack() => {}
            Ok(_) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("switchyard bench: {label}: publish failed: {error}");
            }
        }
    }
}

/// Declares a server-named exclusive queue, binds it with `key`, and records every
/// delivery (no-ack consumer); returns once the consumer is registered.
pub async fn subscribe(
    url: &str,
    server: &str,
    exchange: &str,
    key: &str,
    tally: SharedTally,
) -> Result<JoinHandle<()>, BenchError> {
    let (connection, channel) = open(url, server).await?;
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .map_err(|e| BenchError::endpoint(url, "queue.declare", e))?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| BenchError::endpoint(url, "queue.bind", e))?;
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            consume,
            FieldTable::default(),
        )
        .await
        .map_err(|e| BenchError::endpoint(url, "basic.consume", e))?;
    let label = url.to_owned();
    Ok(tokio::spawn(async move {
        let _connection = connection;
        while let Some(delivery) = consumer.next().await {
            match delivery {
                Ok(delivery) => tally.record(&delivery.data),
                Err(error) => {
                    eprintln!("switchyard bench: {label}: {error}");
                    break;
                }
            }
        }
    }))
}

async fn open(url: &str, server: &str) -> Result<(Connection, Channel), BenchError> {
    let connecting = Connection::connect(server, ConnectionProperties::default());
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| BenchError::endpoint(url, "connect", "no answer in time"))?
        .map_err(|e| BenchError::endpoint(url, "connect", e))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| BenchError::endpoint(url, "channel.open", e))?;
    Ok((connection, channel))
}

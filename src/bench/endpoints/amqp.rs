//! AMQP 0-9-1: publish to an exchange with a routing key (publisher confirms at QoS 1) on
//! the hub's own publishing connection ([`Link`]), or receive through a server-named,
//! exclusive queue bound with the key (lapin).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_amqp::link::confirms::ConfirmWindow;
use switchyard_amqp::link::frames::Publish;
use switchyard_amqp::link::{Event, Link, LinkSettings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// Publishes unconfirmed at once (at QoS 1); beyond this `send` waits (and the schedule
/// falls behind, which shows as latency).
const PUBLISHES_IN_FLIGHT: usize = 10_000;

/// Publishes every payload to one exchange with one routing key.
pub struct Publisher {
    /// The endpoint's URL, for messages.
    url: String,
    /// Payloads for the publishing task.
    payloads: mpsc::Sender<Vec<u8>>,
    /// Owns the connection: writes what `send` hands it in batches, reads confirms, and
    /// counts failures and nacks; aborted on drop.
    publishing: JoinHandle<()>,
}

impl Publisher {
    /// Connects, with publisher confirms when `qos` is 1.
    pub async fn connect(
        url: &str,
        server: &str,
        exchange: &str,
        key: &str,
        qos: u8,
        failures: Arc<AtomicU64>,
    ) -> Result<Publisher, BenchError> {
        let uri = lapin::uri::AMQPUri::from_str(server)
            .map_err(|e| BenchError::endpoint(url, "url", e))?;
        let settings = LinkSettings {
            uri,
            tls: None,
            name: "switchyard bench".to_owned(),
            confirms: qos > 0,
        };
        let link = tokio::time::timeout(CONNECT_TIMEOUT, Link::open(&settings))
            .await
            .map_err(|_| BenchError::endpoint(url, "connect", "no answer in time"))?
            .map_err(|e| BenchError::endpoint(url, "connect", e))?;
        let (payloads, received) = mpsc::channel(PUBLISHES_IN_FLIGHT);
        let target = Target {
            exchange: exchange.to_owned(),
            key: key.to_owned(),
            label: url.to_owned(),
            confirms: settings.confirms,
        };
        let publishing = tokio::spawn(publish(link, received, target, failures));
        Ok(Publisher {
            url: url.to_owned(),
            payloads,
            publishing,
        })
    }

    /// Hands one message (transient, like the peers' QoS 0/1 defaults) to the publishing
    /// task, which writes whatever has gathered in one go, as the hub's own bridge does.
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        self.payloads
            .send(payload)
            .await
            .map_err(|_| BenchError::endpoint(&self.url, "publish", "the connection failed"))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.publishing.abort();
    }
}

/// Where the publishing task publishes.
struct Target {
    /// The exchange.
    exchange: String,
    /// The routing key.
    key: String,
    /// The endpoint's URL, for messages.
    label: String,
    /// Whether publisher confirms are on (QoS 1).
    confirms: bool,
}

/// The publishing task: publishes what arrives, up to [`PUBLISHES_IN_FLIGHT`]
/// unconfirmed; a nack or a failed connection counts as failures.
async fn publish(
    mut link: Link,
    mut payloads: mpsc::Receiver<Vec<u8>>,
    target: Target,
    failures: Arc<AtomicU64>,
) {
    let mut unconfirmed = ConfirmWindow::default();
    let mut batch = Vec::new();
    let tick = link
        .heartbeat()
        .map_or(Duration::from_secs(3600), |interval| interval / 2);
    let mut keep_alive = tokio::time::interval(tick);
    let failed = loop {
        let room = PUBLISHES_IN_FLIGHT.saturating_sub(unconfirmed.len());
        tokio::select! {
            biased;
            event = link.next_event() => match event {
                Ok(Event::Ack { tag, multiple }) => unconfirmed.settle(tag, multiple, drop),
                Ok(Event::Nack { tag, multiple }) => unconfirmed.settle(tag, multiple, |()| {
                    failures.fetch_add(1, Ordering::Relaxed);
                }),
                Ok(_) => {}
                Err(error) => break error,
            },
            received = payloads.recv_many(&mut batch, room), if room > 0 => {
                if received == 0 {
                    return;
                }
                if let Err(error) = publish_batch(&mut link, &mut batch, &target, &mut unconfirmed).await {
                    break error;
                }
            }
            _ = keep_alive.tick() => {
                if let Err(error) = link.keep_alive() {
                    break error;
                }
            }
        }
    };
    let lost = unconfirmed.drain().count() + batch.len();
    failures.fetch_add(lost as u64 + 1, Ordering::Relaxed);
    eprintln!(
        "switchyard bench: {}: publish failed: {failed}",
        target.label
    );
}

/// Encodes `batch` and writes it in one go; without confirms, written is done.
async fn publish_batch(
    link: &mut Link,
    batch: &mut Vec<Vec<u8>>,
    target: &Target,
    unconfirmed: &mut ConfirmWindow<()>,
) -> Result<(), switchyard_api::BridgeError> {
    for payload in batch.drain(..) {
        link.publish(Publish {
            exchange: &target.exchange,
            routing_key: &target.key,
            mandatory: false,
            properties: BasicProperties::default(),
            body: &payload,
        })?;
        if target.confirms {
            unconfirmed.push(());
        }
    }
    link.flush().await
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

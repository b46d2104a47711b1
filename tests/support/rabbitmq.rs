//! RabbitMQ for integration tests: the machine's shared broker (127.0.0.1:5672,
//! guest/guest), a lapin client for the test's side, and `rabbitmqctl` to inspect queues
//! and to close one hub's connection (found by its `connection_name`) without touching
//! the connections of other tests.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::process::{require_command, run_with_timeout};

/// The shared broker every test uses.
pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Bound on waiting for one AMQP message or a broker operation.
pub const AMQP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one `rabbitmqctl` or Python run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// A name no other test (or test run) uses.
pub fn unique(test: &str) -> String {
    format!("switchyard-test.{}.{test}", std::process::id())
}

/// A test's own AMQP client.
pub struct Rabbit {
    /// The connection (for more channels).
    pub connection: Connection,
    /// A channel with publisher confirms on.
    pub channel: Channel,
}

impl Rabbit {
    /// Connects to the shared broker; a missing broker fails the test (never a skip).
    pub async fn connect() -> Rabbit {
        Rabbit::connect_to(RABBITMQ_URL).await
    }

    /// Connects to the broker at `url` (e.g. a private node's).
    pub async fn connect_to(url: &str) -> Rabbit {
        let connecting = Connection::connect(url, ConnectionProperties::default());
        let connection = tokio::time::timeout(AMQP_TIMEOUT, connecting)
            .await
            .expect("RabbitMQ answers within the timeout")
            .unwrap_or_else(|e| {
                panic!("RabbitMQ is not reachable at {url}: {e}; run scripts/test, which starts it")
            });
        let channel = connection.create_channel().await.expect("open a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("publisher confirms");
        Rabbit {
            connection,
            channel,
        }
    }

    /// Declares a durable topic exchange, as the hub's `declare_exchange` does.
    pub async fn exchange(&self, name: &str) {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await
            .expect("declare the exchange");
    }

    /// A named queue bound to `exchange` with `keys`, and a consumer on it.
    pub async fn consume(&self, queue: &str, exchange: &str, keys: &[&str]) -> Consumer {
        self.declare_queue(queue, exchange, keys).await;
        self.channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume")
    }

    /// A named, non-exclusive queue bound to `exchange` with `keys`.
    pub async fn declare_queue(&self, queue: &str, exchange: &str, keys: &[&str]) {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the queue");
        for key in keys {
            self.channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the queue");
        }
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish");
        let confirmation = tokio::time::timeout(AMQP_TIMEOUT, confirm)
            .await
            .expect("a confirm within the timeout")
            .expect("confirm");
        assert!(confirmation.is_ack(), "the broker nacked a test message");
    }

    /// Deletes what a test declared (best effort: a leftover only costs broker memory).
    pub async fn delete(&self, exchanges: &[&str], queues: &[&str]) {
        for queue in queues {
            let _ = self
                .channel
                .queue_delete((*queue).into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in exchanges {
            let _ = self
                .channel
                .exchange_delete((*exchange).into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

/// The next delivery on `consumer`, acknowledged, or a panic naming what was awaited.
pub async fn next_delivery(consumer: &mut Consumer, awaited: &str) -> lapin::message::Delivery {
    let delivery = tokio::time::timeout(AMQP_TIMEOUT, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no AMQP message ({awaited}) within {AMQP_TIMEOUT:?}"))
        .expect("the consumer is open")
        .expect("a delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    delivery
}

/// Runs `rabbitmqctl ARGS` and returns its standard output.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = run_with_timeout(
        Command::new(require_command("rabbitmqctl")).args(args),
        TOOL_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Closes, from the broker's side, every connection named `name` (the hub's
/// `connection_name`) and no other; returns how many were closed.
pub fn close_connection_named(name: &str) -> usize {
    let listing = rabbitmqctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "-q",
        "--no-table-headers",
    ]);
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.split('\t').next())
        .collect();
    for pid in &pids {
        rabbitmqctl(&[
            "close_connection",
            pid,
            "switchyard test: cutting the hub's connection",
        ]);
    }
    pids.len()
}

/// `rabbitmqctl` arguments that list queues with their ready and unacknowledged counts,
/// for [`counts_in_listing`].
pub const LIST_QUEUE_COUNTS: [&str; 6] = [
    "list_queues",
    "name",
    "messages_ready",
    "messages_unacknowledged",
    "-q",
    "--no-table-headers",
];

/// Ready and unacknowledged messages of `queue`.
pub fn queue_counts(queue: &str) -> Option<(u64, u64)> {
    counts_in_listing(&rabbitmqctl(&LIST_QUEUE_COUNTS), queue)
}

/// `queue`'s ready and unacknowledged counts in the output of [`LIST_QUEUE_COUNTS`].
pub fn counts_in_listing(listing: &str, queue: &str) -> Option<(u64, u64)> {
    listing.lines().find_map(|line| {
        let mut fields = line.split('\t');
        (fields.next()? == queue).then_some(())?;
        Some((
            fields.next()?.trim().parse().ok()?,
            fields.next()?.trim().parse().ok()?,
        ))
    })
}

//! One file per protocol, each with the same two halves: a publisher (`connect`, `send`)
//! and a subscriber (`subscribe`, which records every arrival in a
//! [`SharedTally`]). This module only dispatches on the endpoint's [`Target`].
//!
//! Every TCP socket the tool opens has Nagle's algorithm off (TCP_NODELAY), so the
//! tool does not add the delays it is there to measure; libzmq sets it by itself.

pub mod amqp;
pub mod mqtt;
pub mod redis;
pub mod websocket;
pub mod zmq;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::endpoint::{Endpoint, Target};
use super::tally::SharedTally;
use super::BenchError;

/// How long connecting (and subscribing) may take before the run gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Fan-out and idle connections: connections being opened at once (a listen backlog's
/// worth, so the server's accept queue never overflows into SYN retries).
const CONNECTING_AT_ONCE: usize = 64;

/// Identifies this run's clients to brokers (MQTT client ids, AMQP connection names).
#[derive(Debug, Clone)]
pub struct ClientName(pub String);

impl ClientName {
    /// This run's name for one role (`tx`, `rx`).
    pub fn role(&self, role: &str) -> String {
        format!("{}-{role}", self.0)
    }
}

/// The sending half of a run, connected and ready.
pub enum Publisher {
    /// An MQTT client.
    Mqtt(mqtt::Publisher),
    /// A Redis connection with a pipelining writer.
    Redis(redis::Publisher),
    /// An AMQP channel (with confirms at QoS 1).
    Amqp(Box<amqp::Publisher>),
    /// A ZeroMQ PUB or PUSH socket.
    Zmq(zmq::Publisher),
}

impl Publisher {
    /// Connects to `endpoint`. Failures that surface after a send returned (a nacked
    /// confirm, a failed pipeline) are counted in `failures`.
    pub async fn connect(
        endpoint: &Endpoint,
        qos: u8,
        name: &ClientName,
        failures: Arc<AtomicU64>,
    ) -> Result<Publisher, BenchError> {
        let url = endpoint.url.as_str();
        Ok(match &endpoint.target {
            Target::Mqtt { addr, topic } => Publisher::Mqtt(
                mqtt::Publisher::connect(url, addr, topic, qos, &name.role("tx")).await?,
            ),
            Target::Redis {
                url: server,
                channel,
            } => Publisher::Redis(redis::Publisher::connect(url, server, channel, failures).await?),
            Target::Amqp {
                url: server,
                exchange,
                key,
            } => Publisher::Amqp(Box::new(
                amqp::Publisher::connect(url, server, exchange, key, qos, failures).await?,
            )),
            Target::Zmq {
                pattern,
                endpoint: address,
                bind,
                topic,
                fedmsg,
            } => Publisher::Zmq(zmq::Publisher::connect(
                url, *pattern, address, *bind, topic, *fedmsg,
            )?),
            Target::WebSocket { .. } => {
                return Err(BenchError::Url {
                    url: url.to_owned(),
                    reason: "the WebSocket firehose only receives; use it with --to".into(),
                })
            }
        })
    }

    /// Sends one payload. Returns once the protocol client took it (not when it arrived):
    /// the sender never waits for the receiving side.
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        match self {
            Publisher::Mqtt(publisher) => publisher.send(payload).await,
            Publisher::Redis(publisher) => publisher.send(payload).await,
            Publisher::Amqp(publisher) => publisher.send(payload).await,
            Publisher::Zmq(publisher) => publisher.send(&payload),
        }
    }
}

/// The receiving half of a run: background tasks (or a thread) that record arrivals.
/// Dropping it stops them.
#[derive(Default)]
pub struct Subscription {
    /// Tasks reading from the protocol client.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Asks a receiving thread (ZeroMQ) to end.
    stop: Option<Arc<AtomicBool>>,
}

impl Subscription {
    /// Subscribes through `endpoint`; returns once the subscription is in place (as far
    /// as the protocol can tell: MQTT SUBACK, Redis SUBSCRIBE reply, AMQP bind-ok).
    pub async fn start(
        endpoint: &Endpoint,
        qos: u8,
        name: &ClientName,
        tally: SharedTally,
    ) -> Result<Subscription, BenchError> {
        let url = endpoint.url.as_str();
        Ok(match &endpoint.target {
            Target::Mqtt { addr, topic } => Subscription::task(
                mqtt::subscribe(url, addr, topic, qos, &name.role("rx"), tally).await?,
            ),
            Target::WebSocket { url } => {
                Subscription::task(websocket::subscribe(url, tally).await?)
            }
            Target::Redis {
                url: server,
                channel,
            } => Subscription::task(redis::subscribe(url, server, channel, tally).await?),
            Target::Amqp {
                url: server,
                exchange,
                key,
            } => Subscription::task(amqp::subscribe(url, server, exchange, key, tally).await?),
            Target::Zmq {
                pattern,
                endpoint: address,
                bind,
                topic,
                ..
            } => Subscription {
                tasks: Vec::new(),
                stop: Some(zmq::subscribe(url, *pattern, address, *bind, topic, tally)?),
            },
        })
    }

    /// Opens `count` receiving connections on `endpoint` (MQTT or the WebSocket firehose
    /// when above 1), the i-th recording as receiver i of `tally`; returns once all are
    /// subscribed, or with the first failure.
    pub async fn start_many(
        endpoint: &Endpoint,
        qos: u8,
        name: &ClientName,
        tally: SharedTally,
        count: usize,
    ) -> Result<Subscription, BenchError> {
        if count <= 1 {
            return Subscription::start(endpoint, qos, name, tally).await;
        }
        if !matches!(
            endpoint.target,
            Target::Mqtt { .. } | Target::WebSocket { .. }
        ) {
            return Err(BenchError::Url {
                url: endpoint.url.clone(),
                reason: "--subscribers above 1 needs an mqtt:// or ws:// --to".into(),
            });
        }
        let opened: Vec<Subscription> = stream::iter(0..count)
            .map(|index| {
                let name = ClientName(format!("{}-{index}", name.0));
                let tally = tally.receiver(index);
                async move { Subscription::start(endpoint, qos, &name, tally).await }
            })
            .buffer_unordered(CONNECTING_AT_ONCE)
            .try_collect()
            .await?;
        let mut all = Subscription::default();
        for mut one in opened {
            all.tasks.append(&mut one.tasks);
        }
        Ok(all)
    }

    fn task(task: tokio::task::JoinHandle<()>) -> Subscription {
        Subscription {
            tasks: vec![task],
            stop: None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

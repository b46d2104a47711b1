//! MQTT (3.1.1, rumqttc): publish to a topic, or subscribe to a topic or filter.
//!
//! rumqttc only makes progress while its event loop is polled, so each client's loop runs
//! on its own task; the publisher hands messages to the client's request queue.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// Requests (publishes) buffered in the client before `send` waits: enough for a burst of
/// a late schedule; beyond it the sender falls behind, which shows as latency.
const REQUEST_QUEUE: usize = 10_000;
/// QoS 1 publishes in flight before rumqttc waits for PUBACKs.
const INFLIGHT: u16 = 1_000;
/// A subscriber publishes nothing; rumqttc allocates its in-flight window and request
/// queue per client, which adds up over a fan-out of 10,000 subscribers.
const SUBSCRIBER_WINDOW: u16 = 4;
/// Largest packet either way (the probe is at most what `--size` asks for).
const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Keep-alive: long enough that a busy run never needs a PINGREQ.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Pause before polling again after a connection error (rumqttc then reconnects).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Publishes every payload to one topic.
pub struct Publisher {
    /// The endpoint's URL, for messages.
    url: String,
    /// The client's request side.
    client: AsyncClient,
    /// The topic.
    topic: String,
    /// QoS of every publish.
    qos: QoS,
    /// The task polling the event loop; aborted on drop.
    event_loop: JoinHandle<()>,
}

impl Publisher {
    /// Connects and waits for the CONNACK.
    pub async fn connect(
        url: &str,
        addr: &str,
        topic: &str,
        qos: u8,
        client_id: &str,
    ) -> Result<Publisher, BenchError> {
        let (client, event_loop) = client(url, addr, client_id, INFLIGHT)?;
        let (ready, connected) = oneshot::channel();
        let event_loop = tokio::spawn(drive(
            event_loop,
            url.to_owned(),
            Awaited::ConnAck,
            ready,
            None,
        ));
        await_ready(url, "connect", connected).await?;
        Ok(Publisher {
            url: url.to_owned(),
            client,
            topic: topic.to_owned(),
            qos: to_qos(qos),
            event_loop,
        })
    }

    /// Queues one PUBLISH.
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), BenchError> {
        self.client
            .publish(self.topic.as_str(), self.qos, false, payload)
            .await
            .map_err(|e| BenchError::endpoint(&self.url, "publish", e))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}

/// Subscribes to `topic` and records every PUBLISH that arrives; returns after the SUBACK.
pub async fn subscribe(
    url: &str,
    addr: &str,
    topic: &str,
    qos: u8,
    client_id: &str,
    tally: SharedTally,
) -> Result<JoinHandle<()>, BenchError> {
    let (client, event_loop) = client(url, addr, client_id, SUBSCRIBER_WINDOW)?;
    client
        .subscribe(topic, to_qos(qos))
        .await
        .map_err(|e| BenchError::endpoint(url, "subscribe", e))?;
    let (ready, subscribed) = oneshot::channel();
    let task = tokio::spawn(async move {
        // The client must outlive the loop: dropping every handle ends the session.
        let _client = client;
        drive(
            event_loop,
            String::new(),
            Awaited::SubAck,
            ready,
            Some(tally),
        )
        .await;
    });
    if let Err(error) = await_ready(url, "subscribe", subscribed).await {
        task.abort();
        return Err(error);
    }
    Ok(task)
}

/// The packet after which a client is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    ConnAck,
    SubAck,
}

fn client(
    url: &str,
    addr: &str,
    client_id: &str,
    window: u16,
) -> Result<(AsyncClient, EventLoop), BenchError> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| BenchError::Url {
            url: url.to_owned(),
            reason: "expected HOST:PORT".into(),
        })?;
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(window)
        .set_clean_session(true);
    let queue = if window == SUBSCRIBER_WINDOW {
        usize::from(window)
    } else {
        REQUEST_QUEUE
    };
    let (client, mut event_loop) = AsyncClient::new(options, queue);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    event_loop.set_network_options(network);
    Ok((client, event_loop))
}

/// Polls the event loop until the task is aborted: reports readiness (or the first
/// error) once, records arrivals, and keeps going through connection errors (rumqttc
/// reconnects on the next poll).
async fn drive(
    mut event_loop: EventLoop,
    label: String,
    awaited: Awaited,
    ready: oneshot::Sender<Result<(), String>>,
    tally: Option<SharedTally>,
) {
    let mut ready = Some(ready);
    let mut failing = false;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(tally) = &tally {
                    tally.record(&publish.payload);
                }
            }
            Ok(Event::Incoming(packet)) => {
                failing = false;
                let done = matches!(
                    (&packet, awaited),
                    (Packet::ConnAck(_), Awaited::ConnAck) | (Packet::SubAck(_), Awaited::SubAck)
                );
                if done {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(error) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error.to_string()));
                    return;
                }
                if !failing {
                    eprintln!("switchyard bench: {label} connection lost: {error}; reconnecting");
                    failing = true;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn await_ready(
    url: &str,
    action: &'static str,
    ready: oneshot::Receiver<Result<(), String>>,
) -> Result<(), BenchError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, ready).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(detail))) => Err(BenchError::endpoint(url, action, detail)),
        Ok(Err(_)) => Err(BenchError::endpoint(url, action, "the client stopped")),
        Err(_) => Err(BenchError::endpoint(
            url,
            action,
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

fn to_qos(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

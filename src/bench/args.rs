//! The command line of `switchyard bench`.

use std::time::Duration;

use clap::Args;

/// Send messages on a fixed schedule through one endpoint, receive them through another,
/// and report loss, duplicates, reordering and latency from the scheduled send time.
///
/// Endpoint URLs:
///   mqtt://HOST:PORT/TOPIC                     publish or subscribe (TCP_NODELAY on)
///   ws://HOST:PORT/PATH?subscribe=FILTER       switchyard's JSON firehose (receive only)
///   redis://HOST:PORT/CHANNEL                  PUBLISH (pipelined) or SUBSCRIBE
///   amqp://USER:PASS@HOST:PORT/VHOST?exchange=X&key=K
///                                              publish (confirms at --qos 1), or receive
///                                              through a server-named queue bound with K
///   zmq+pub://, zmq+push://, zmq+sub://, zmq+pull://HOST:PORT/TOPIC[?bind=1][&format=fedmsg]
///                                              frames [TOPIC, payload]; connects unless
///                                              bind=1; format=fedmsg sends an unsigned fedmsg
///                                              envelope, msg = {"probe": payload}
///
/// Fan-out: --subscribers N opens N receiving connections on --to (mqtt or ws), each of
/// which should get every message; latency is recorded per delivery.
/// Idle connections: --idle opens --subscribers connections on --to, prints
/// {"connected":N} once they are all up, holds them for --duration, and sends nothing.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// Where messages are sent (not needed with --idle).
    #[arg(long, value_name = "URL", required_unless_present = "idle")]
    pub from: Option<String>,
    /// Where messages are received.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Messages per second, sent on a fixed schedule (with --sweep: the first rate tried).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send at each rate (e.g. "10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Payload size in bytes (at least the probe header, 57 bytes).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// QoS: 0 at most once, 1 at least once (MQTT QoS 1, AMQP publisher confirms).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Pause between subscribing and the first send, so subscriptions reach every broker
    /// and bridge on the path.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// After the last send, how long to wait for the messages still on their way.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Search for the highest rate with no loss and p99 under --max-p99: double from
    /// --rate until a run fails, then bisect.
    #[arg(long)]
    pub sweep: bool,
    /// Sweep: the p99 latency a passing run stays under.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// Sweep: the highest rate tried.
    #[arg(long, default_value_t = 200_000.0)]
    pub max_rate: f64,
    /// Receiving connections on --to (fan-out: each should get every message; mqtt and ws
    /// only when above 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
    /// Open --subscribers idle connections on --to, hold them for --duration, send nothing.
    #[arg(long)]
    pub idle: bool,
}

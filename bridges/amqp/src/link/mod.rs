//! A publishing connection of switchyard's own: one AMQP 0-9-1 connection with one
//! channel, driven entirely by the task that owns it.
//!
//! lapin runs each connection on an I/O thread of its own, and every publish, every socket
//! event and every confirm crosses between that thread and the bridge's task. Profiles put
//! those hand-offs at most of the hub's CPU on the MQTT → AMQP path (benchmarks/PROFILE.md).
//! A [`Link`] has no thread: its owner encodes publishes into one buffer ([`Link::publish`]),
//! writes it in one go ([`Link::flush`]) and reads the broker's confirms, returns and flow
//! control as [`Event`]s ([`Link::next_event`]), all in its own task. amq-protocol, lapin's
//! own codec, encodes and parses the frames.
//!
//! The connection is opened as the spec's section 2.2.4 describes (protocol header, start,
//! tune, open), with SASL PLAIN, AMQPLAIN or EXTERNAL, heartbeats as negotiated, and the
//! capabilities RabbitMQ checks for: publisher confirms, `basic.nack`, `connection.blocked`
//! and `authentication_failure_close` (so a refused login is reported, not just a closed
//! socket).

pub mod confirms;
pub mod frames;
pub mod transport;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use amq_protocol::auth::Credentials;
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use rustls::ClientConfig;
use switchyard_api::BridgeError;
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

use self::frames::{FrameBuffer, FrameReader, Publish};
use switchyard_api::client_stream::Stream;

/// The one channel a link opens.
const CHANNEL: u16 = 1;

/// Frames accepted before `connection.tune` sets `frame_max` (the spec's minimum is 4096;
/// RabbitMQ's `connection.start` is well under this).
const HANDSHAKE_FRAME_MAX: usize = 128 * 1024;

/// `frame_max` when neither side limits it.
const DEFAULT_FRAME_MAX: u32 = 128 * 1024;

/// How long a clean close may wait for the broker's `connection.close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a link connects, and how.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The broker's address, credentials, virtual host, heartbeat and frame size.
    pub uri: amq_protocol::uri::AMQPUri,
    /// The TLS client configuration, for `amqps://`.
    pub tls: Option<Arc<ClientConfig>>,
    /// The connection's name in the broker's management tools.
    pub name: String,
    /// Whether to turn on publisher confirms (`confirm.select`).
    pub confirms: bool,
}

/// A message the broker returned (`basic.return`): unroutable with `mandatory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The broker's reply code (312 NO_ROUTE).
    pub reply_code: u16,
    /// The broker's explanation.
    pub reply_text: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
}

/// What the broker tells a publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `basic.ack`: the publish numbered `tag` (and with `multiple`, every earlier one) is
    /// safely with the broker.
    Ack {
        /// The delivery tag (publishes are numbered from 1 after `confirm.select`).
        tag: u64,
        /// Whether every unconfirmed publish up to `tag` is meant.
        multiple: bool,
    },
    /// `basic.nack`: the broker could not take the publish numbered `tag` (and with
    /// `multiple`, every earlier unconfirmed one).
    Nack {
        /// The delivery tag.
        tag: u64,
        /// Whether every unconfirmed publish up to `tag` is meant.
        multiple: bool,
    },
    /// A mandatory publish no queue was bound for; its confirm follows.
    Returned(Returned),
    /// `connection.blocked`: the broker stopped reading publishes (e.g. a memory alarm).
    Blocked(String),
    /// `connection.unblocked`.
    Unblocked,
    /// Every outgoing frame is written: room for more.
    Written,
}

/// Returned messages as they arrive: `basic.return`, then a content header and body
/// frames, which a publisher only counts.
#[derive(Debug, Default)]
struct ReturnReader {
    /// The return being read, and its body bytes still to come (`None` until the content
    /// header arrives).
    current: Option<(Returned, Option<u64>)>,
}

impl ReturnReader {
    /// A `basic.return` arrived.
    fn begin(&mut self, returned: Returned) {
        self.current = Some((returned, None));
    }

    /// A content header (`header`) or body frame of `size` bytes arrived; the returned
    /// message once all of its body has.
    fn content(&mut self, size: u64, header: bool) -> Option<Returned> {
        let (_, remaining) = self.current.as_mut()?;
        let left = match (header, *remaining) {
            (true, _) => size,
            (false, Some(left)) => left.saturating_sub(size),
            (false, None) => return None,
        };
        *remaining = Some(left);
        if left > 0 {
            return None;
        }
        self.current.take().map(|(returned, _)| returned)
    }
}

/// An open connection with one open channel.
pub struct Link {
    /// The socket.
    stream: Box<dyn Stream>,
    /// Incoming bytes and the frames they hold.
    reader: FrameReader,
    /// Outgoing frames not written yet.
    outgoing: FrameBuffer,
    /// How many bytes of `outgoing` are written already.
    written: usize,
    /// Whether the stream holds written bytes it must still be told to flush (TLS).
    needs_flush: bool,
    /// Whether the broker blocked publishing (`connection.blocked`, until `unblocked`).
    blocked: bool,
    /// The negotiated largest frame.
    frame_max: usize,
    /// The negotiated heartbeat interval; `None` when off.
    heartbeat: Option<Duration>,
    /// When bytes last arrived.
    last_read: Instant,
    /// When bytes were last written.
    last_write: Instant,
    /// Returned messages being read.
    returns: ReturnReader,
    /// Whether the broker closed the connection (and waits for our `close-ok`).
    closed_by_broker: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("frame_max", &self.frame_max)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connects, logs in, opens the virtual host and one channel, and turns on confirms
    /// when asked.
    pub async fn open(settings: &LinkSettings) -> Result<Link, BridgeError> {
        let stream = transport::connect(&settings.uri, settings.tls.as_ref()).await?;
        let now = Instant::now();
        let mut link = Link {
            stream,
            reader: FrameReader::new(HANDSHAKE_FRAME_MAX),
            outgoing: FrameBuffer::default(),
            written: 0,
            needs_flush: false,
            blocked: false,
            frame_max: HANDSHAKE_FRAME_MAX,
            heartbeat: None,
            last_read: now,
            last_write: now,
            returns: ReturnReader::default(),
            closed_by_broker: false,
        };
        link.handshake(settings).await?;
        link.call(
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        if settings.confirms {
            let select = confirm::Select { nowait: false };
            link.call(
                CHANNEL,
                AMQPClass::Confirm(confirm::AMQPMethod::Select(select)),
            )
            .await?;
        }
        Ok(link)
    }

    /// Declares an exchange (or, `passive`, checks that it exists). The broker's refusal
    /// closes the channel, so the link is then unusable and the error says why.
    pub async fn declare_exchange(
        &mut self,
        name: &str,
        kind: &str,
        passive: bool,
    ) -> Result<(), BridgeError> {
        let declare = exchange::Declare {
            exchange: name.into(),
            kind: kind.into(),
            passive,
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        self.call(
            CHANNEL,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(declare)),
        )
        .await
        .map(drop)
    }

    /// Whether the broker blocked publishing (`connection.blocked`, until
    /// `connection.unblocked`).
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// The negotiated heartbeat interval; `None` when heartbeats are off.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// Adds one publish to the outgoing frames; [`Link::next_event`] (or [`Link::flush`])
    /// writes them.
    pub fn publish(&mut self, publish: Publish<'_>) -> Result<(), BridgeError> {
        self.outgoing.publish(CHANNEL, self.frame_max, publish)
    }

    /// Outgoing bytes not written yet.
    pub fn unwritten(&self) -> usize {
        self.outgoing.bytes().len() - self.written
    }

    /// Writes every outgoing frame (used where nothing else needs the socket meanwhile:
    /// the handshake, closing, the load generator).
    pub async fn flush(&mut self) -> Result<(), BridgeError> {
        std::future::poll_fn(|cx| {
            while self.wants_write() {
                std::task::ready!(self.poll_write(cx))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Keeps heartbeats going: fails when nothing arrived for two intervals, and queues a
    /// heartbeat when nothing was written for half of one. Call it every half interval.
    pub fn keep_alive(&mut self) -> Result<(), BridgeError> {
        let Some(interval) = self.heartbeat else {
            return Ok(());
        };
        if self.last_read.elapsed() > interval * 2 {
            return Err(BridgeError::Protocol(format!(
                "nothing from the broker for {:?} (two heartbeat intervals): the connection is \
                 dead",
                self.last_read.elapsed()
            )));
        }
        // A blocked broker stops reading on purpose; otherwise bytes that do not leave
        // mean a broker that no longer reads.
        if self.wants_write() && !self.blocked && self.last_write.elapsed() > interval * 2 {
            return Err(BridgeError::Protocol(format!(
                "the broker took none of our bytes for {:?} (two heartbeat intervals) without \
                 blocking the connection: it stopped reading",
                self.last_write.elapsed()
            )));
        }
        if self.last_write.elapsed() >= interval / 2 && self.outgoing.is_empty() {
            self.outgoing.heartbeat();
        }
        Ok(())
    }

    /// Writes the outgoing frames and reads what the broker sends, both as the socket
    /// allows, until there is something to tell: what the broker said, or that everything
    /// is written. Cancel-safe: partly written frames and partly read ones stay where they
    /// are for the next call.
    pub async fn next_event(&mut self) -> Result<Event, BridgeError> {
        loop {
            while let Some(frame) = self.reader.next_frame()? {
                if let Some(event) = self.on_frame(frame)? {
                    return Ok(event);
                }
            }
            let wrote_all = std::future::poll_fn(|cx| {
                if self.wants_write() {
                    if let Poll::Ready(written) = self.poll_write(cx) {
                        return Poll::Ready(written.map(|()| !self.wants_write()));
                    }
                }
                self.poll_read(cx).map_ok(|()| false)
            })
            .await?;
            if wrote_all {
                return Ok(Event::Written);
            }
        }
    }

    /// Closes the connection politely: answers the broker's close, or sends ours and
    /// waits briefly for its `close-ok`. Failures are only logged: the connection is being
    /// dropped anyway.
    pub async fn close(mut self, reason: &str) {
        let closing = async {
            if !self.closed_by_broker {
                let close = connection::Close {
                    reply_code: 200,
                    reply_text: reason.into(),
                    class_id: 0,
                    method_id: 0,
                };
                self.outgoing.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(close)),
                )?;
            }
            self.flush().await?;
            if self.closed_by_broker {
                return Ok::<(), BridgeError>(());
            }
            loop {
                while let Some(frame) = self.reader.next_frame()? {
                    if let AMQPFrame::Method(0, AMQPClass::Connection(method)) = frame {
                        if matches!(
                            method,
                            connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_)
                        ) {
                            return Ok(());
                        }
                    }
                }
                self.read().await?;
            }
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!("Closing the AMQP connection: {error}."),
            Err(_) => {
                tracing::debug!("The broker did not confirm the close within {CLOSE_TIMEOUT:?}.")
            }
        }
    }

    /// The handshake of spec section 2.2.4, up to `connection.open-ok`.
    async fn handshake(&mut self, settings: &LinkSettings) -> Result<(), BridgeError> {
        let uri = &settings.uri;
        self.outgoing.protocol_header();
        self.flush().await?;
        let start = match self.next_method(0).await {
            Ok(AMQPClass::Connection(connection::AMQPMethod::Start(start))) => start,
            Ok(other) => return Err(unexpected("connection.start", &other)),
            Err(error) if settings.tls.is_some() => {
                // With TLS 1.3 a broker that requires a client certificate refuses it
                // after the handshake, and its close can overtake its alert.
                return Err(BridgeError::Protocol(format!(
                    "{error} (before the broker's greeting: if it requires a client \
                     certificate, set tls.cert and tls.key)"
                )));
            }
            Err(error) => return Err(error),
        };
        let mechanism = uri.query.auth_mechanism.unwrap_or_default();
        let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !offered.split(' ').any(|name| name == mechanism.name()) {
            return Err(BridgeError::Protocol(format!(
                "the broker does not offer SASL mechanism {mechanism}; it offers {offered:?} \
                 (set auth_mechanism in the url's query)"
            )));
        }
        let credentials = Credentials::new(
            uri.authority.userinfo.username.as_str().into(),
            uri.authority.userinfo.password.as_str().into(),
        );
        let start_ok = connection::StartOk {
            client_properties: client_properties(&settings.name),
            mechanism: mechanism.name().into(),
            response: credentials.sasl_auth_string(mechanism),
            locale: "en_US".into(),
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
        )
        .await?;
        let tune = match self.next_method(0).await {
            Ok(AMQPClass::Connection(connection::AMQPMethod::Tune(tune))) => tune,
            Ok(AMQPClass::Connection(connection::AMQPMethod::Secure(_))) => {
                return Err(BridgeError::Protocol(format!(
                    "the broker asked for a SASL challenge, which {mechanism} does not have"
                )))
            }
            Ok(other) => return Err(unexpected("connection.tune", &other)),
            Err(error) => return Err(error),
        };
        let frame_max = negotiate(
            uri.query.frame_max.unwrap_or(0),
            tune.frame_max,
            DEFAULT_FRAME_MAX,
        );
        let heartbeat = negotiate(uri.query.heartbeat.unwrap_or(0), tune.heartbeat, 0);
        let tune_ok = connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max,
            heartbeat,
        };
        self.outgoing.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)),
        )?;
        self.frame_max = frame_max as usize;
        self.reader.set_frame_max(self.frame_max);
        self.heartbeat = (heartbeat > 0).then(|| Duration::from_secs(heartbeat.into()));
        let open = connection::Open {
            virtual_host: uri.vhost.as_str().into(),
        };
        match self
            .call(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))
            .await?
        {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(()),
            other => Err(unexpected("connection.open-ok", &other)),
        }
    }

    /// Sends a synchronous method and returns the broker's reply on the same channel.
    async fn call(&mut self, channel: u16, method: AMQPClass) -> Result<AMQPClass, BridgeError> {
        self.send(channel, method).await?;
        self.next_method(channel).await
    }

    /// Queues a method frame and writes the outgoing frames.
    async fn send(&mut self, channel: u16, method: AMQPClass) -> Result<(), BridgeError> {
        self.outgoing.method(channel, method)?;
        self.flush().await
    }

    /// The next method the broker sends on `channel`, skipping heartbeats and flow
    /// control; the broker closing the connection or the channel is an error.
    async fn next_method(&mut self, channel: u16) -> Result<AMQPClass, BridgeError> {
        loop {
            while let Some(frame) = self.reader.next_frame()? {
                match frame {
                    AMQPFrame::Method(on, method) if on == channel && !is_close(&method) => {
                        return Ok(method)
                    }
                    frame => {
                        if let Some(event) = self.on_frame(frame)? {
                            tracing::debug!("While waiting for a reply: {event:?}.");
                        }
                    }
                }
            }
            self.read().await?;
        }
    }

    /// Reads more bytes; the end of the stream is an error.
    async fn read(&mut self) -> Result<(), BridgeError> {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }

    /// Whether outgoing bytes wait to be written or flushed.
    fn wants_write(&self) -> bool {
        self.unwritten() > 0 || self.needs_flush
    }

    /// Reads what the socket has; the end of the stream is an error.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
        let read = std::task::ready!(poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            self.reader.buffer()
        ));
        Poll::Ready(match read {
            Ok(0) => Err(BridgeError::Protocol(
                "the broker closed the connection without a reason (end of stream)".to_owned(),
            )),
            Ok(_) => {
                self.last_read = Instant::now();
                Ok(())
            }
            Err(source) => Err(BridgeError::Io {
                context: "read from the broker".to_owned(),
                source,
            }),
        })
    }

    /// Writes what the socket takes of the outgoing frames, then flushes the stream (TLS
    /// holds written bytes until flushed; for TCP flushing does nothing).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
        let failed = |source| BridgeError::Io {
            context: "write to the broker".to_owned(),
            source,
        };
        if self.unwritten() > 0 {
            let bytes = &self.outgoing.bytes()[self.written..];
            let count = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, bytes))
                .map_err(failed)?;
            if count == 0 {
                return Poll::Ready(Err(failed(std::io::ErrorKind::WriteZero.into())));
            }
            self.written += count;
            self.last_write = Instant::now();
            if self.unwritten() == 0 {
                self.outgoing.clear();
                self.written = 0;
                self.needs_flush = true;
            }
            return Poll::Ready(Ok(()));
        }
        if self.needs_flush {
            std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(failed)?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Applies one incoming frame: an event for the publisher, nothing, or the error of a
    /// closed connection or channel (whose `close-ok` is then queued).
    fn on_frame(&mut self, frame: AMQPFrame) -> Result<Option<Event>, BridgeError> {
        match frame {
            AMQPFrame::Method(_, AMQPClass::Basic(method)) => Ok(self.on_basic(method)),
            AMQPFrame::Method(0, AMQPClass::Connection(method)) => self.on_connection(method),
            AMQPFrame::Method(channel, AMQPClass::Channel(channel::AMQPMethod::Close(close))) => {
                let close_ok = channel::AMQPMethod::CloseOk(channel::CloseOk {});
                self.outgoing
                    .method(channel, AMQPClass::Channel(close_ok))?;
                Err(BridgeError::Protocol(format!(
                    "the broker closed the channel: {} {}{}",
                    close.reply_code,
                    close.reply_text,
                    culprit(close.class_id, close.method_id)
                )))
            }
            AMQPFrame::Header(_, header) => Ok(self
                .returns
                .content(header.body_size, true)
                .map(Event::Returned)),
            AMQPFrame::Body(_, body) => Ok(self
                .returns
                .content(body.len() as u64, false)
                .map(Event::Returned)),
            AMQPFrame::Heartbeat => Ok(None),
            other => {
                tracing::debug!("Ignoring a frame a publisher does not use: {other}.");
                Ok(None)
            }
        }
    }

    /// `basic.*` methods: confirms and returns.
    fn on_basic(&mut self, method: basic::AMQPMethod) -> Option<Event> {
        match method {
            basic::AMQPMethod::Ack(ack) => Some(Event::Ack {
                tag: ack.delivery_tag,
                multiple: ack.multiple,
            }),
            basic::AMQPMethod::Nack(nack) => Some(Event::Nack {
                tag: nack.delivery_tag,
                multiple: nack.multiple,
            }),
            basic::AMQPMethod::Return(returned) => {
                self.returns.begin(Returned {
                    reply_code: returned.reply_code,
                    reply_text: returned.reply_text.to_string(),
                    exchange: returned.exchange.to_string(),
                    routing_key: returned.routing_key.to_string(),
                });
                None
            }
            other => {
                tracing::debug!("Ignoring {other:?}: a publisher does not use it.");
                None
            }
        }
    }

    /// `connection.*` methods after the handshake: flow control and the broker's close.
    fn on_connection(
        &mut self,
        method: connection::AMQPMethod,
    ) -> Result<Option<Event>, BridgeError> {
        match method {
            connection::AMQPMethod::Blocked(blocked) => {
                self.blocked = true;
                Ok(Some(Event::Blocked(blocked.reason.to_string())))
            }
            connection::AMQPMethod::Unblocked(_) => {
                self.blocked = false;
                Ok(Some(Event::Unblocked))
            }
            connection::AMQPMethod::Close(close) => {
                let close_ok = connection::AMQPMethod::CloseOk(connection::CloseOk {});
                self.outgoing.method(0, AMQPClass::Connection(close_ok))?;
                self.closed_by_broker = true;
                Err(BridgeError::Protocol(format!(
                    "the broker closed the connection: {} {}{}",
                    close.reply_code,
                    close.reply_text,
                    culprit(close.class_id, close.method_id)
                )))
            }
            other => {
                tracing::debug!("Ignoring {other:?}: a publisher does not use it.");
                Ok(None)
            }
        }
    }
}

/// Whether `method` closes a connection or a channel.
fn is_close(method: &AMQPClass) -> bool {
    matches!(
        method,
        AMQPClass::Connection(connection::AMQPMethod::Close(_))
            | AMQPClass::Channel(channel::AMQPMethod::Close(_))
    )
}

/// The error for a reply other than the one expected.
fn unexpected(expected: &str, found: &AMQPClass) -> BridgeError {
    BridgeError::Protocol(format!(
        "expected {expected} from the broker, found {found:?}"
    ))
}

/// " (in reply to class.method)" when the broker named the method it refused.
fn culprit(class_id: u16, method_id: u16) -> String {
    match (class_id, method_id) {
        (0, _) => String::new(),
        (class, method) => format!(" (in reply to method {class}.{method})"),
    }
}

/// Tune negotiation as RabbitMQ does it: when one side says 0 (no limit), the other's
/// value; otherwise the smaller; `fallback` when both say 0.
fn negotiate<T: Ord + Default + Copy>(ours: T, theirs: T, fallback: T) -> T {
    let zero = T::default();
    match (ours == zero, theirs == zero) {
        (true, true) => fallback,
        (true, false) => theirs,
        (false, true) => ours,
        (false, false) => ours.min(theirs),
    }
}

/// What the client tells the broker about itself in `connection.start-ok`.
fn client_properties(name: &str) -> FieldTable {
    let mut capabilities = FieldTable::default();
    for capability in [
        "publisher_confirms",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "exchange_exchange_bindings",
        "consumer_cancel_notify",
    ] {
        capabilities.insert(capability.into(), AMQPValue::Boolean(true));
    }
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    let mut properties = FieldTable::default();
    properties.insert("product".into(), text("switchyard"));
    properties.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    properties.insert("platform".into(), text("Rust"));
    properties.insert(
        ShortString::from("capabilities"),
        AMQPValue::FieldTable(capabilities),
    );
    properties.insert("connection_name".into(), text(name));
    properties
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_values_follow_rabbitmqs_rules() {
        assert_eq!(negotiate(0u32, 131_072, 4096), 131_072);
        assert_eq!(negotiate(65_536u32, 131_072, 4096), 65_536);
        assert_eq!(negotiate(65_536u32, 0, 4096), 65_536);
        assert_eq!(negotiate(0u16, 0, 0), 0);
        assert_eq!(negotiate(30u16, 60, 0), 30);
    }

    #[test]
    fn client_properties_name_the_connection_and_ask_for_the_capabilities_used() {
        let properties = client_properties("switchyard/hub/out");
        let inner = properties.inner();
        assert_eq!(
            inner.get("connection_name"),
            Some(&AMQPValue::LongString("switchyard/hub/out".into()))
        );
        let Some(AMQPValue::FieldTable(capabilities)) = inner.get("capabilities") else {
            panic!("no capabilities table");
        };
        for wanted in ["publisher_confirms", "basic.nack", "connection.blocked"] {
            assert_eq!(
                capabilities.inner().get(wanted),
                Some(&AMQPValue::Boolean(true)),
                "{wanted}"
            );
        }
    }

    #[test]
    fn a_returned_message_completes_with_its_last_body_frame() {
        let returned = Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
        };
        let mut returns = ReturnReader::default();
        assert_eq!(returns.content(10, true), None, "no return begun");
        returns.begin(returned.clone());
        assert_eq!(returns.content(10, true), None);
        assert_eq!(returns.content(4, false), None);
        assert_eq!(returns.content(6, false), Some(returned.clone()));
        assert_eq!(returns.content(6, false), None, "only once");
        returns.begin(returned.clone());
        assert_eq!(returns.content(0, true), Some(returned), "an empty body");
    }
}

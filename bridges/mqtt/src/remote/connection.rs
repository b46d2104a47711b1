//! One connection to a remote broker, read and written on the bridge's own task (no
//! client library's event loop beside it): packets are encoded into one output buffer
//! and written as the socket takes them, many per write; the broker's packets are read
//! in large reads and decoded in turn. Keepalive, PINGRESP and the QoS 2 handshake are
//! handled here; everything else the bridge hears is an [`Event`].

use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls::ClientConfig;
use switchyard_api::client_stream::{self, Stream};
use switchyard_api::BridgeError;
use tokio::io::AsyncWrite;
use tokio::time::{sleep, Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::config::BrokerAddress;
use super::packets::{
    self, ConnAck, ConnectRequest, FromBroker, IncomingPublish, MAX_INCOMING_PACKET,
};
use crate::codec::{CodecError, Protocol};
use crate::websocket;

/// Room made for each read: large, so a burst of PUBACKs or messages is one read.
const READ_SIZE: usize = 64 * 1024;

/// An idle buffer larger than this is given back.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// One entry of the failover list: where to connect, and with which TLS configuration.
pub struct Endpoint {
    /// Host, port and, for WebSockets, the URL.
    pub address: BrokerAddress,
    /// For `mqtts://` and `wss://`.
    pub tls: Option<Arc<ClientConfig>>,
}

/// Something the broker did, for the bridge.
#[derive(Debug)]
pub enum Event {
    /// A message arrived.
    Publish(IncomingPublish),
    /// The broker answered our QoS 1 message `pkid`; `refusal` is the MQTT 5 reason when
    /// it did not take it.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Why it refused the message, if it did.
        refusal: Option<String>,
    },
    /// The broker answered SUBSCRIBE `pkid`; `refusal` is why, when it refused it.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// Why the subscription was refused, if it was.
        refusal: Option<String>,
    },
    /// Bytes left for the broker: [`Connection::written`] moved.
    Written,
}

/// A connection the broker accepted.
pub struct Opened {
    /// The connection.
    pub connection: Connection,
    /// Whether the broker resumed a stored session.
    pub session_present: bool,
    /// MQTT 5: most unacknowledged QoS 1 messages the broker takes from us.
    pub receive_maximum: Option<u16>,
}

/// A connection to the broker, after CONNACK.
pub struct Connection {
    protocol: Protocol,
    stream: Box<dyn Stream>,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Packets encoded and not yet written.
    output: BytesMut,
    /// Bytes handed to the socket since the connection opened.
    written: u64,
    /// Whether bytes were written since the last flush (TLS and WebSocket hold them).
    unflushed: bool,
    keep_alive: Duration,
    /// When bytes last left: after `keep_alive` of silence a PINGREQ goes out.
    last_write: Instant,
    /// When the PINGREQ still unanswered went out.
    ping_sent: Option<Instant>,
    /// Wakes the connection for its next keepalive check.
    keepalive_timer: Pin<Box<Sleep>>,
    /// MQTT 5: the largest packet the broker takes.
    max_packet: Option<u32>,
    /// The client identifier this connection logged in with, for the errors.
    client_id: String,
}

impl Connection {
    /// Connects to `endpoint` (TCP, TLS, WebSocket), sends CONNECT and waits for the
    /// CONNACK. A refusal is an error naming the broker's reason.
    pub async fn open(
        endpoint: &Endpoint,
        protocol: Protocol,
        request: &ConnectRequest<'_>,
        keep_alive: Duration,
    ) -> Result<Opened, BridgeError> {
        let address = &endpoint.address;
        let stream =
            client_stream::connect(&address.host, address.port, endpoint.tls.as_ref()).await?;
        let stream: Box<dyn Stream> = match &address.websocket_url {
            None => stream,
            Some(url) => Box::new(
                websocket::connect(stream, url, MAX_INCOMING_PACKET)
                    .await
                    .map_err(|error| {
                        BridgeError::Protocol(format!("WebSocket handshake with {url}: {error}"))
                    })?,
            ),
        };
        let mut connection = Connection {
            protocol,
            stream,
            input: BytesMut::new(),
            output: BytesMut::new(),
            written: 0,
            unflushed: false,
            keep_alive,
            last_write: Instant::now(),
            ping_sent: None,
            keepalive_timer: Box::pin(sleep(keep_alive)),
            max_packet: None,
            client_id: request.client_id.to_owned(),
        };
        packets::encode_connect(protocol, &mut connection.output, request)
            .map_err(|error| encoding_failed("CONNECT", error))?;
        let ack = poll_fn(|cx| connection.poll_connack(cx)).await?;
        if let Some(refusal) = ack.refusal {
            return Err(BridgeError::Protocol(format!(
                "the broker refused the connection: {refusal}"
            )));
        }
        connection.max_packet = ack.max_packet;
        Ok(Opened {
            connection,
            session_present: ack.session_present,
            receive_maximum: ack.receive_maximum,
        })
    }

    /// The MQTT version spoken.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Bytes handed to the socket so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes encoded so far (written or waiting): a packet encoded now is written once
    /// [`Connection::written`] reaches this.
    pub fn encoded(&self) -> u64 {
        self.written + self.output.len() as u64
    }

    /// Bytes encoded and not yet written.
    pub fn unwritten(&self) -> usize {
        self.output.len()
    }

    /// Encodes a PUBLISH; too large for the broker's announced limit is an error and
    /// nothing is encoded.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &Bytes,
        qos: u8,
        pkid: u16,
        retain: bool,
        properties: Vec<(String, String)>,
    ) -> Result<(), CodecError> {
        self.protocol.encode_publish(
            &mut self.output,
            topic,
            payload,
            qos,
            pkid,
            retain,
            properties,
            self.max_packet,
        )
    }

    /// Acknowledges message `pkid` received at QoS `qos` (PUBACK, or PUBREC for QoS 2).
    pub fn acknowledge(&mut self, qos: u8, pkid: u16) -> Result<(), BridgeError> {
        let encoded = if qos >= 2 {
            self.protocol.encode_pubrec(&mut self.output, pkid, false)
        } else {
            self.protocol.encode_puback(&mut self.output, pkid, false)
        };
        encoded.map_err(|error| encoding_failed("PUBACK", error))
    }

    /// Encodes SUBSCRIBE `pkid` for `filter`.
    pub fn subscribe(
        &mut self,
        pkid: u16,
        filter: &str,
        qos: u8,
        no_local: bool,
    ) -> Result<(), BridgeError> {
        packets::encode_subscribe(self.protocol, &mut self.output, pkid, filter, qos, no_local)
            .map_err(|error| encoding_failed("SUBSCRIBE", error))
    }

    /// Says goodbye (the broker drops the will), then writes everything left, closes
    /// the stream, and returns.
    pub async fn close(&mut self) -> Result<(), BridgeError> {
        packets::encode_disconnect(self.protocol, &mut self.output)
            .map_err(|error| encoding_failed("DISCONNECT", error))?;
        poll_fn(|cx| {
            self.poll_write_out(cx)?;
            if self.output.is_empty() && !self.unflushed {
                Poll::Ready(Ok::<(), BridgeError>(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx))
            .await
            .map_err(|source| BridgeError::Io {
                context: "close the connection to the broker".to_owned(),
                source,
            })
    }

    /// Writes what is encoded as the socket takes it, reads and decodes what the broker
    /// sent, and keeps the connection alive, until there is something to tell. Cancel
    /// safe: all progress is kept in `self`.
    pub async fn next_event(&mut self) -> Result<Event, BridgeError> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, BridgeError>> {
        if let Some(event) = self.take_event()? {
            return Poll::Ready(Ok(event));
        }
        // Before writing: it may add a PINGREQ.
        self.poll_keepalive(cx)?;
        let wrote = self.poll_write_out(cx)?;
        while let Poll::Ready(read) = self.poll_read(cx) {
            read?;
            if let Some(event) = self.take_event()? {
                return Poll::Ready(Ok(event));
            }
        }
        if wrote {
            return Poll::Ready(Ok(Event::Written));
        }
        Poll::Pending
    }

    /// Decodes packets already read until one is for the bridge.
    fn take_event(&mut self) -> Result<Option<Event>, BridgeError> {
        while let Some(packet) = self.take_packet()? {
            match packet {
                FromBroker::Publish(publish) => return Ok(Some(Event::Publish(publish))),
                FromBroker::PubAck { pkid, refusal } => {
                    return Ok(Some(Event::PubAck { pkid, refusal }))
                }
                FromBroker::SubAck { pkid, refusal } => {
                    return Ok(Some(Event::SubAck { pkid, refusal }))
                }
                FromBroker::PingResp => self.ping_sent = None,
                FromBroker::PubRel(pkid) => self
                    .protocol
                    .encode_pubcomp(&mut self.output, pkid)
                    .map_err(|error| encoding_failed("PUBCOMP", error))?,
                FromBroker::Disconnect(reason) => return Err(closed_by_broker(&reason)),
                FromBroker::ConnAck(_) => {
                    return Err(BridgeError::Protocol(
                        "the broker sent a second CONNACK".to_owned(),
                    ))
                }
            }
        }
        if self.input.is_empty() && self.input.capacity() > SHRINK_ABOVE {
            self.input = BytesMut::new();
        }
        Ok(None)
    }

    fn take_packet(&mut self) -> Result<Option<FromBroker>, BridgeError> {
        packets::decode(self.protocol, &mut self.input).map_err(|error| {
            BridgeError::Protocol(format!(
                "the broker sent a packet the bridge cannot read: {error}"
            ))
        })
    }

    /// Writes the first packets until the broker's CONNACK arrives.
    fn poll_connack(&mut self, cx: &mut Context<'_>) -> Poll<Result<ConnAck, BridgeError>> {
        loop {
            match self.take_packet()? {
                Some(FromBroker::ConnAck(ack)) => return Poll::Ready(Ok(ack)),
                Some(FromBroker::Disconnect(reason)) => {
                    return Poll::Ready(Err(closed_by_broker(&reason)))
                }
                Some(other) => {
                    return Poll::Ready(Err(BridgeError::Protocol(format!(
                        "expected CONNACK, the broker sent {other:?}"
                    ))))
                }
                None => {}
            }
            self.poll_write_out(cx)?;
            ready!(self.poll_read(cx))?;
        }
    }

    /// One read into `input`; an error when the broker closed the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
        if self.input.capacity() - self.input.len() < READ_SIZE / 4 {
            self.input.reserve(READ_SIZE);
        }
        match ready!(poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.input
        )) {
            Ok(0) => Poll::Ready(Err(BridgeError::Protocol(format!(
                "the broker closed the connection of client {:?} (is another client \
                 connected with the same client_id?)",
                self.client_id
            )))),
            Ok(_) => Poll::Ready(Ok(())),
            Err(source) => Poll::Ready(Err(BridgeError::Io {
                context: "read from the broker".to_owned(),
                source,
            })),
        }
    }

    /// Writes as much of `output` as the socket takes, then flushes; true when bytes
    /// were written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Result<bool, BridgeError> {
        let mut wrote = false;
        while !self.output.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.output) {
                Poll::Ready(Ok(0)) => {
                    return Err(BridgeError::Protocol(
                        "the broker's socket takes no more bytes".to_owned(),
                    ))
                }
                Poll::Ready(Ok(count)) => {
                    self.output.advance(count);
                    self.written += count as u64;
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Ready(Err(source)) => return Err(write_failed(source)),
                Poll::Pending => break,
            }
        }
        if wrote {
            self.last_write = Instant::now();
            if self.output.is_empty() && self.output.capacity() > SHRINK_ABOVE {
                self.output = BytesMut::new();
            }
        }
        if self.unflushed {
            if let Poll::Ready(flushed) = Pin::new(&mut self.stream).poll_flush(cx) {
                flushed.map_err(write_failed)?;
                self.unflushed = false;
            }
        }
        Ok(wrote)
    }

    /// Sends PINGREQ after a keepalive of silence from us; an error when the last one
    /// went unanswered for a keepalive (the broker, or the way to it, is gone).
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Result<(), BridgeError> {
        while self.keepalive_timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.ping_sent {
                Some(sent) if now >= sent + self.keep_alive => {
                    return Err(BridgeError::Protocol(format!(
                        "the broker did not answer PINGREQ within the keepalive ({:?})",
                        self.keep_alive
                    )))
                }
                Some(sent) => sent + self.keep_alive,
                None if now >= self.last_write + self.keep_alive => {
                    packets::encode_pingreq(self.protocol, &mut self.output)
                        .map_err(|error| encoding_failed("PINGREQ", error))?;
                    self.ping_sent = Some(now);
                    now + self.keep_alive
                }
                None => self.last_write + self.keep_alive,
            };
            self.keepalive_timer.as_mut().reset(next);
        }
        Ok(())
    }
}

/// The broker's MQTT 5 DISCONNECT, with its reason.
fn closed_by_broker(reason: &str) -> BridgeError {
    BridgeError::Protocol(format!("the broker closed the connection: {reason}"))
}

fn write_failed(source: std::io::Error) -> BridgeError {
    BridgeError::Io {
        context: "write to the broker".to_owned(),
        source,
    }
}

fn encoding_failed(packet: &str, error: CodecError) -> BridgeError {
    BridgeError::Protocol(format!("cannot encode {packet}: {error}"))
}

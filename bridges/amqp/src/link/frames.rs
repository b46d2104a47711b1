//! AMQP 0-9-1 frames on the wire (spec section 4.2.3): outgoing frames gathered in one
//! buffer so that many go out in one write, and incoming frames cut from the bytes read.
//!
//! amq-protocol (lapin's own codec) encodes and parses the methods and content headers.
//! The publishing hot path is written here by hand: `basic.publish` is four fields, and a
//! body frame is the payload between a seven-byte header and the frame-end octet, so a
//! publish costs no allocation beyond the buffer's growth.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{AMQPClass, BasicProperties};
use bytes::{Buf, BytesMut};
use switchyard_api::BridgeError;

/// Frame type of a method frame.
const FRAME_METHOD: u8 = 1;
/// Frame type of a content body frame.
const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
const FRAME_END: u8 = 0xCE;
/// Type, channel and payload size: the bytes before a frame's payload.
const FRAME_HEADER_SIZE: usize = 7;
/// A frame's bytes besides its payload: the header and the frame-end octet.
const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// Class id of `basic`.
const BASIC_CLASS: u16 = 60;
/// Method id of `basic.publish`.
const PUBLISH_METHOD: u16 = 40;
/// The least room a read gets: confirms are 21-byte frames, so one read takes hundreds.
const READ_SIZE: usize = 16 * 1024;
/// The protocol header a client opens with: "AMQP", 0, then version 0-9-1.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// Outgoing frames not written yet.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    /// The encoded frames, in order.
    bytes: Vec<u8>,
}

impl FrameBuffer {
    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Forgets what was written.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The protocol header that opens a connection.
    pub fn protocol_header(&mut self) {
        self.bytes.extend_from_slice(PROTOCOL_HEADER);
    }

    /// A heartbeat frame (on channel 0).
    pub fn heartbeat(&mut self) {
        self.bytes
            .extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    /// A method frame on `channel`.
    pub fn method(&mut self, channel: u16, method: AMQPClass) -> Result<(), BridgeError> {
        self.generated(&AMQPFrame::Method(channel, method))
    }

    /// One publish: `basic.publish`, its content header, and its body in frames of at most
    /// `frame_max` bytes.
    pub fn publish(
        &mut self,
        channel: u16,
        frame_max: usize,
        publish: Publish<'_>,
    ) -> Result<(), BridgeError> {
        let Publish {
            exchange,
            routing_key,
            mandatory,
            properties,
            body,
        } = publish;
        let payload_size = 2 + 2 + 2 + 1 + exchange.len() + 1 + routing_key.len() + 1;
        self.frame_start(FRAME_METHOD, channel, payload_size);
        self.bytes.extend_from_slice(&BASIC_CLASS.to_be_bytes());
        self.bytes.extend_from_slice(&PUBLISH_METHOD.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0]); // reserved (ticket)
        self.short_string(exchange);
        self.short_string(routing_key);
        self.bytes.push(u8::from(mandatory));
        self.bytes.push(FRAME_END);
        self.generated(&AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: BASIC_CLASS,
                body_size: body.len() as u64,
                properties,
            },
        ))?;
        let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        self.bytes
            .reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
        for part in body.chunks(chunk) {
            self.frame_start(FRAME_BODY, channel, part.len());
            self.bytes.extend_from_slice(part);
            self.bytes.push(FRAME_END);
        }
        Ok(())
    }

    /// A frame's type, channel and payload size.
    fn frame_start(&mut self, kind: u8, channel: u16, payload_size: usize) {
        self.bytes.push(kind);
        self.bytes.extend_from_slice(&channel.to_be_bytes());
        // Payload sizes are bounded by frame_max (a u32) or by short strings.
        self.bytes
            .extend_from_slice(&(payload_size as u32).to_be_bytes());
    }

    /// A short string: one length octet, then the bytes (callers check the length).
    fn short_string(&mut self, text: &str) {
        self.bytes.push(text.len() as u8);
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// Any frame, through amq-protocol's generator.
    fn generated(&mut self, frame: &AMQPFrame) -> Result<(), BridgeError> {
        let written = gen_frame(frame)(WriteContext::from(std::mem::take(&mut self.bytes)));
        match written {
            Ok(context) => {
                self.bytes = context.into_inner().0;
                Ok(())
            }
            Err(error) => Err(BridgeError::Protocol(format!(
                "cannot encode {frame}: {error}"
            ))),
        }
    }
}

/// What one `basic.publish` carries.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The exchange (at most 255 bytes).
    pub exchange: &'a str,
    /// The routing key (at most 255 bytes).
    pub routing_key: &'a str,
    /// Ask the broker to return the message when no queue is bound for it.
    pub mandatory: bool,
    /// The content header's properties.
    pub properties: BasicProperties,
    /// The body.
    pub body: &'a [u8],
}

/// Incoming bytes, cut into frames as they complete.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes read and not parsed yet.
    buffer: BytesMut,
    /// The largest frame accepted: the negotiated `frame_max`.
    frame_max: usize,
}

impl FrameReader {
    /// A reader accepting frames of up to `frame_max` bytes.
    pub fn new(frame_max: usize) -> Self {
        Self {
            buffer: BytesMut::with_capacity(READ_SIZE),
            frame_max,
        }
    }

    /// Accepts frames of up to `frame_max` bytes from now on.
    pub fn set_frame_max(&mut self, frame_max: usize) {
        self.frame_max = frame_max;
    }

    /// Where the next read puts its bytes, with room for at least [`READ_SIZE`] more.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.buffer.reserve(READ_SIZE);
        &mut self.buffer
    }

    /// The next complete frame, if the bytes read hold one; an error for bytes that are
    /// not an AMQP 0-9-1 frame.
    pub fn next_frame(&mut self) -> Result<Option<AMQPFrame>, BridgeError> {
        if self.buffer.first() == Some(&PROTOCOL_HEADER[0]) {
            return Err(BridgeError::Protocol(format!(
                "the server does not speak AMQP 0-9-1: it answered with the protocol header \
                 {:?}",
                String::from_utf8_lossy(&self.buffer[..self.buffer.len().min(8)])
            )));
        }
        if self.buffer.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let payload_size = u32::from_be_bytes([
            self.buffer[3],
            self.buffer[4],
            self.buffer[5],
            self.buffer[6],
        ]) as usize;
        let frame_size = payload_size + FRAME_OVERHEAD;
        if frame_size > self.frame_max {
            return Err(BridgeError::Protocol(format!(
                "expected frames of at most {} bytes (frame_max), found one of {frame_size}",
                self.frame_max
            )));
        }
        if self.buffer.len() < frame_size {
            self.buffer.reserve(frame_size - self.buffer.len());
            return Ok(None);
        }
        if self.buffer[frame_size - 1] != FRAME_END {
            return Err(BridgeError::Protocol(format!(
                "expected the frame-end octet 0xCE after a frame of type {}, found {:#04x}",
                self.buffer[0],
                self.buffer[frame_size - 1]
            )));
        }
        let parsed = parse_frame(&self.buffer[..frame_size]).map(|(_, frame)| frame);
        self.buffer.advance(frame_size);
        parsed.map(Some).map_err(|error| {
            BridgeError::Protocol(format!("the server sent a malformed frame: {error}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::{basic, connection};

    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<AMQPFrame> {
        let mut reader = FrameReader::new(1 << 20);
        reader.buffer().extend_from_slice(bytes);
        std::iter::from_fn(|| reader.next_frame().unwrap()).collect()
    }

    #[test]
    fn a_publish_is_method_header_and_body_frames_within_frame_max() {
        let mut buffer = FrameBuffer::default();
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let properties = BasicProperties::default().with_delivery_mode(2);
        let publish = Publish {
            exchange: "amq.topic",
            routing_key: "a.b",
            mandatory: true,
            properties: properties.clone(),
            body: &body,
        };
        buffer.publish(3, 4096, publish).unwrap();
        let frames = parse_all(buffer.bytes());
        assert_eq!(
            frames[0],
            AMQPFrame::Method(
                3,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "amq.topic".into(),
                    routing_key: "a.b".into(),
                    mandatory: true,
                    immediate: false,
                }))
            )
        );
        assert_eq!(
            frames[1],
            AMQPFrame::Header(
                3,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 10_000,
                    properties
                }
            )
        );
        let mut joined = Vec::new();
        for frame in &frames[2..] {
            let AMQPFrame::Body(3, part) = frame else {
                panic!("expected body frames, found {frame}");
            };
            assert!(part.len() + FRAME_OVERHEAD <= 4096);
            joined.extend_from_slice(part);
        }
        assert_eq!(frames.len(), 2 + 3);
        assert_eq!(joined, body);
    }

    #[test]
    fn an_empty_body_has_no_body_frame() {
        let mut buffer = FrameBuffer::default();
        let publish = Publish {
            exchange: "",
            routing_key: "q",
            mandatory: false,
            properties: BasicProperties::default(),
            body: &[],
        };
        buffer.publish(1, 4096, publish).unwrap();
        assert_eq!(parse_all(buffer.bytes()).len(), 2);
    }

    #[test]
    fn frames_come_out_only_once_complete() {
        let mut buffer = FrameBuffer::default();
        buffer
            .method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            )
            .unwrap();
        buffer.heartbeat();
        let bytes = buffer.bytes().to_vec();
        let mut reader = FrameReader::new(4096);
        let mut frames = Vec::new();
        for byte in bytes {
            reader.buffer().extend_from_slice(&[byte]);
            frames.extend(reader.next_frame().unwrap());
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], AMQPFrame::Heartbeat);
    }

    #[test]
    fn bad_frames_are_errors_that_say_what_was_found() {
        let mut reader = FrameReader::new(4096);
        reader
            .buffer()
            .extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0x00]);
        let error = reader.next_frame().unwrap_err().to_string();
        assert!(error.contains("frame-end octet"), "{error}");

        let mut reader = FrameReader::new(4096);
        reader.buffer().extend_from_slice(&[1, 0, 0, 0, 1, 0, 0]);
        let error = reader.next_frame().unwrap_err().to_string();
        assert!(error.contains("at most 4096 bytes"), "{error}");

        let mut reader = FrameReader::new(4096);
        reader.buffer().extend_from_slice(b"AMQP\x00\x00\x09\x01");
        let error = reader.next_frame().unwrap_err().to_string();
        assert!(error.contains("protocol header"), "{error}");

        let mut reader = FrameReader::new(4096);
        reader
            .buffer()
            .extend_from_slice(&[1, 0, 0, 0, 0, 0, 2, 0xff, 0xff, FRAME_END]);
        let error = reader.next_frame().unwrap_err().to_string();
        assert!(error.contains("malformed"), "{error}");
    }
}

//! Between AMQP content (body and properties) and the hub's [`Message`], per `format`.
//!
//! - `raw`: body = payload. `message_id`, `timestamp` (seconds) and `content_type` (as the
//!   `content-type` header) carry the message's id, time and headers; every other header is
//!   an AMQP header with a string value.
//! - `json`: body = the JSON envelope of `switchyard_api::envelope` (topic shown = the
//!   routing key); `content_type = application/json`.
//! - `fedora-messaging`: what fedora-messaging's `Message._build_properties` writes
//!   (DESIGN.md): body = payload (a UTF-8 JSON object), `content_type = application/json`,
//!   `content_encoding = utf-8`, `delivery_mode = 2`, `message_id` (a UUID4 when the
//!   message has none), `priority`, and the headers `fedora_messaging_schema`
//!   (`base.message` unless the message carries one), `sent-at` (RFC 3339 of the
//!   message's time), `fedora_messaging_severity` (20 = INFO unless carried) and
//!   `priority` (0 unless carried). Headers that came in such a message go back out with
//!   their types: severity and priority as integers, `fedora_messaging_<object>_<id>`
//!   filter headers as `true`.
//!
//! Every format writes the loop guard headers `x-switchyard-origin` (the hub the message
//! first entered, kept across hubs; else this one) and `x-switchyard-hops` (hops + 1). On
//! the way in, the hop count moves into `Message::hops`, the origin stays a header, and a
//! message whose origin is this hub is flagged as looped.

use std::sync::Arc;

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use switchyard_api::envelope::{self, EnvelopeError};
use switchyard_api::message::{HOPS_HEADER, ORIGIN_HEADER};
use switchyard_api::{Format, Message, QoS, Topic};
use thiserror::Error;

/// The content type of JSON bodies (the `json` and `fedora-messaging` formats).
const JSON_CONTENT_TYPE: &str = "application/json";

/// The content encoding fedora-messaging requires.
const UTF8_ENCODING: &str = "utf-8";

/// The message header that mirrors the AMQP `content_type` property in `raw` format.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// fedora-messaging's header naming the message's schema (entry point name).
pub const SCHEMA_HEADER: &str = "fedora_messaging_schema";

/// The schema of fedora-messaging's base `Message` class.
pub const DEFAULT_SCHEMA: &str = "base.message";

/// fedora-messaging's header with the time the message was sent (RFC 3339).
pub const SENT_AT_HEADER: &str = "sent-at";

/// fedora-messaging's header with the message's importance (10, 20, 30 or 40).
pub const SEVERITY_HEADER: &str = "fedora_messaging_severity";

/// fedora-messaging's INFO severity, its default.
pub const DEFAULT_SEVERITY: i32 = 20;

/// fedora-messaging's header (and property) with the message's priority.
pub const PRIORITY_HEADER: &str = "priority";

/// The prefix of fedora-messaging's filter headers (`fedora_messaging_user_jcline`).
const FILTER_HEADER_PREFIX: &str = "fedora_messaging_";

/// AMQP's persistent delivery mode.
const PERSISTENT: u8 = 2;

/// AMQP's transient delivery mode.
const TRANSIENT: u8 = 1;

/// The longest AMQP short string (routing keys, message ids, header names).
const MAX_SHORT_STRING: usize = 255;

/// Why content cannot cross between AMQP and the hub in the bridge's format. The message
/// is dropped with reason `invalid` (and an incoming one rejected without requeue).
#[derive(Debug, Error)]
pub enum FormatError {
    /// The format needs a JSON object and the body is not one.
    #[error("the {0} format needs a body that is a UTF-8 JSON object")]
    NotJsonObject(&'static str),
    /// A JSON envelope that does not parse.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// A name AMQP limits to 255 bytes is longer.
    #[error("the {what} is {length} bytes; AMQP allows at most {MAX_SHORT_STRING}")]
    TooLong {
        /// Which name.
        what: &'static str,
        /// Its length.
        length: usize,
    },
}

/// A message read from AMQP.
#[derive(Debug)]
pub struct Incoming {
    /// The hub's message.
    pub message: Message,
    /// Whether it carries this hub's own origin header (it went round a loop).
    pub looped: bool,
}

/// Encodes and decodes one bridge's messages.
#[derive(Debug, Clone)]
pub struct Codec {
    /// The bridge's format.
    format: Format,
    /// This hub's name, written as and compared with the origin header.
    hub_name: Arc<str>,
    /// `delivery_mode` of published messages.
    delivery_mode: u8,
}

impl Codec {
    /// A codec for `format`, publishing as hub `hub_name`.
    pub fn new(format: Format, hub_name: Arc<str>, persistent: bool) -> Self {
        Self {
            format,
            hub_name,
            delivery_mode: if persistent { PERSISTENT } else { TRANSIENT },
        }
    }

    /// Reads a delivery routed to hub topic `topic` through a rule allowing `qos`.
    pub fn decode(
        &self,
        topic: Topic,
        qos: QoS,
        properties: &BasicProperties,
        body: Vec<u8>,
    ) -> Result<Incoming, FormatError> {
        let mut message = Message::new(topic, Bytes::from(body));
        message.qos = qos;
        let mut looped = false;
        let mut headers = Vec::new();
        if let Some(table) = properties.headers() {
            for (name, value) in table.inner() {
                match name.as_str() {
                    HOPS_HEADER => message.hops = hops_of(value),
                    name => {
                        let text = text_of(value);
                        looped |= name == ORIGIN_HEADER && text == *self.hub_name;
                        headers.push((name.to_owned(), text));
                    }
                }
            }
        }
        message.id = properties
            .message_id()
            .as_ref()
            .map(|id| Arc::from(id.as_str()));
        if let Some(seconds) = properties.timestamp() {
            message.timestamp_ms = seconds.saturating_mul(1000);
        }
        match self.format {
            Format::Json => {
                let envelope = envelope::decode(&message.payload)?;
                message.payload = envelope.payload;
                message.qos = qos.min(envelope.qos);
                message.retain = envelope.retain;
                message.headers = envelope.headers;
                if let Some(id) = envelope.id {
                    message.id = Some(Arc::from(id));
                }
                if let Some(timestamp) = envelope.timestamp_ms {
                    message.timestamp_ms = timestamp;
                }
            }
            Format::FedoraMessaging => {
                if !is_json_object(&message.payload) {
                    return Err(FormatError::NotJsonObject(Format::FedoraMessaging.as_str()));
                }
                if let Some(sent_at) = headers
                    .iter()
                    .find(|(name, _)| name == SENT_AT_HEADER)
                    .and_then(|(_, value)| crate::rfc3339::parse(value))
                {
                    message.timestamp_ms = sent_at;
                }
                message.headers = headers;
            }
            Format::Raw | Format::Fedmsg => {
                if let Some(content_type) = properties.content_type() {
                    headers.push((CONTENT_TYPE_HEADER.to_owned(), content_type.to_string()));
                }
                message.headers = headers;
            }
        }
        Ok(Incoming { message, looped })
    }

    /// Builds the body and properties of `message` published with `routing_key`. The body
    /// is the payload itself (shared, not copied), or the envelope.
    pub fn encode(
        &self,
        message: &Message,
        routing_key: &str,
    ) -> Result<(Bytes, BasicProperties), FormatError> {
        let mut headers = FieldTable::default();
        let origin = message.header(ORIGIN_HEADER).unwrap_or(&self.hub_name);
        headers.insert(ORIGIN_HEADER.into(), string_value(origin));
        headers.insert(
            HOPS_HEADER.into(),
            AMQPValue::LongInt(i32::from(message.hops.saturating_add(1))),
        );
        let mut properties = BasicProperties::default()
            .with_delivery_mode(self.delivery_mode)
            .with_timestamp(message.timestamp_ms / 1000);
        if let Some(id) = &message.id {
            properties = properties.with_message_id(short("message id", id)?);
        }
        let body = match self.format {
            Format::Json => {
                properties = properties.with_content_type(JSON_CONTENT_TYPE.into());
                envelope::encode_to_bytes(message, routing_key)
            }
            Format::FedoraMessaging => {
                if !is_json_object(&message.payload) {
                    return Err(FormatError::NotJsonObject(Format::FedoraMessaging.as_str()));
                }
                properties = self.fedora_properties(message, properties, &mut headers)?;
                message.payload.clone()
            }
            Format::Raw | Format::Fedmsg => {
                for (name, value) in forwarded(&message.headers) {
                    if name == CONTENT_TYPE_HEADER {
                        properties = properties.with_content_type(short("content type", value)?);
                    } else {
                        headers.insert(short("header name", name)?, string_value(value));
                    }
                }
                message.payload.clone()
            }
        };
        Ok((body, properties.with_headers(headers)))
    }

    /// The properties and headers fedora-messaging writes, keeping the ones the message
    /// already carries (it came from fedora-messaging).
    fn fedora_properties(
        &self,
        message: &Message,
        properties: BasicProperties,
        headers: &mut FieldTable,
    ) -> Result<BasicProperties, FormatError> {
        let mut priority = 0;
        for (name, value) in forwarded(&message.headers) {
            let typed = match name.as_str() {
                SEVERITY_HEADER | PRIORITY_HEADER => match value.parse::<i32>() {
                    Ok(number) => {
                        if name == PRIORITY_HEADER {
                            priority = u8::try_from(number).unwrap_or(0);
                        }
                        AMQPValue::LongInt(number)
                    }
                    Err(_) => string_value(value),
                },
                filter if filter.starts_with(FILTER_HEADER_PREFIX) && value == "true" => {
                    AMQPValue::Boolean(true)
                }
                _ => string_value(value),
            };
            headers.insert(short("header name", name)?, typed);
        }
        let defaults = [
            (SCHEMA_HEADER, string_value(DEFAULT_SCHEMA)),
            (
                SENT_AT_HEADER,
                string_value(&crate::rfc3339::format(message.timestamp_ms)),
            ),
            (SEVERITY_HEADER, AMQPValue::LongInt(DEFAULT_SEVERITY)),
            (PRIORITY_HEADER, AMQPValue::LongInt(0)),
        ];
        for (name, value) in defaults {
            if !headers.contains_key(name) {
                headers.insert(name.into(), value);
            }
        }
        let properties = properties
            .with_content_type(JSON_CONTENT_TYPE.into())
            .with_content_encoding(UTF8_ENCODING.into())
            .with_priority(priority);
        Ok(if message.id.is_none() {
            properties.with_message_id(uuid::Uuid::new_v4().to_string().into())
        } else {
            properties
        })
    }
}

/// A header value as the message's string: text as is, numbers and booleans spelled out,
/// tables and arrays as JSON.
fn text_of(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.to_string(),
        AMQPValue::ByteArray(bytes) => String::from_utf8_lossy(bytes.as_slice()).into_owned(),
        AMQPValue::Void => String::new(),
        other => json_of(other).to_string(),
    }
}

/// A header value as JSON (for nested tables and arrays).
fn json_of(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(flag) => Value::from(*flag),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(decimal) => {
            Value::from(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
        }
        AMQPValue::Timestamp(seconds) => Value::from(*seconds),
        AMQPValue::FieldArray(array) => array.as_slice().iter().map(json_of).collect(),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(name, value)| (name.to_string(), json_of(value)))
                .collect(),
        ),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) | AMQPValue::ByteArray(_) => {
            Value::from(text_of(value))
        }
        AMQPValue::Void => Value::Null,
    }
}

/// The hops count of a header written by a hub (an integer) or by hand (a string).
fn hops_of(value: &AMQPValue) -> u8 {
    let number = match value {
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        other => text_of(other).trim().parse().unwrap_or(0),
    };
    u8::try_from(number.max(0)).unwrap_or(u8::MAX)
}

/// The message's headers but the loop guard's, which the encoder writes itself.
fn forwarded(headers: &[(String, String)]) -> impl Iterator<Item = &(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name != HOPS_HEADER && name != ORIGIN_HEADER)
}

fn string_value(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes()))
}

fn short(what: &'static str, text: &str) -> Result<ShortString, FormatError> {
    ShortString::try_new(text).map_err(|_| FormatError::TooLong {
        what,
        length: text.len(),
    })
}

/// Whether `body` is UTF-8 JSON whose value is an object.
fn is_json_object(body: &[u8]) -> bool {
    let starts_as_object = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    starts_as_object && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// A routing key as AMQP can carry it.
pub fn routing_key(name: String) -> Result<ShortString, FormatError> {
    let length = name.len();
    ShortString::try_new(name).map_err(|_| FormatError::TooLong {
        what: "routing key",
        length,
    })
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;

//! The hub's message: what every adapter translates its protocol to and from.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;

use crate::topic::Topic;

/// Delivery guarantee of a message or a rule. The hub does not do exactly-once: MQTT QoS 2
/// from a client is accepted and handled as QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// Fire and forget; may be dropped under overflow.
    #[default]
    AtMostOnce = 0,
    /// Delivered at least once; never dropped for space.
    AtLeastOnce = 1,
}

impl QoS {
    /// Maps a protocol's numeric level; anything above 1 is capped at 1.
    pub fn from_level(level: u8) -> QoS {
        if level == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    /// The numeric level (0 or 1).
    pub fn level(self) -> u8 {
        self as u8
    }
}

impl<'de> Deserialize<'de> for QoS {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u8::deserialize(deserializer)? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            other => Err(serde::de::Error::custom(format!(
                "expected 0 or 1, found {other}"
            ))),
        }
    }
}

/// Header name that carries how many hubs a message has crossed.
pub const HOPS_HEADER: &str = "x-switchyard-hops";

/// Header name that carries the name of the hub a message was first published through.
pub const ORIGIN_HEADER: &str = "x-switchyard-origin";

/// One message inside the hub. Shared between destinations as `Arc<Message>`; the payload
/// is never copied per destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Hub topic (MQTT form).
    pub topic: Topic,
    /// The body, byte for byte as received.
    pub payload: Bytes,
    /// Name/value pairs carried beside the payload (MQTT user properties, AMQP headers).
    pub headers: Vec<(String, String)>,
    /// The guarantee asked for by the source (capped by the rules it passes).
    pub qos: QoS,
    /// Whether the message is the retained state of its topic.
    pub retain: bool,
    /// Identifier from the source, used for duplicate suppression.
    pub id: Option<Arc<str>>,
    /// Milliseconds since the Unix epoch when the message was first published.
    pub timestamp_ms: u64,
    /// How many hubs the message crossed before this one.
    pub hops: u8,
    /// The bridge it entered the hub through (set by the hub).
    pub origin: usize,
    /// Which connection of a server bridge published it (0 when not from a client), so
    /// that bridge can honour MQTT v5 no-local.
    pub sender: u64,
}

impl Message {
    /// A message stamped with the current time, no headers, no id.
    pub fn new(topic: Topic, payload: Bytes) -> Self {
        Self {
            topic,
            payload,
            headers: Vec::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            id: None,
            timestamp_ms: now_ms(),
            hops: 0,
            origin: 0,
            sender: 0,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Moves a hop count carried in the [`HOPS_HEADER`] header into `hops` (an unreadable
    /// count is taken as 0) and removes the header.
    pub fn take_hops_header(&mut self) {
        if let Some(index) = self.headers.iter().position(|(key, _)| key == HOPS_HEADER) {
            let (_, value) = self.headers.remove(index);
            self.hops = value.trim().parse().unwrap_or(0);
        }
    }

    /// The headers to send out through hub `hub`: the message's own, the origin (kept
    /// from the first hub, else `hub`) and one more hop, so the next hub can guard
    /// against loops.
    pub fn outgoing_headers(&self, hub: &str) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(key, _)| key != HOPS_HEADER && key != ORIGIN_HEADER)
            .cloned()
            .collect();
        let origin = self.header(ORIGIN_HEADER).unwrap_or(hub).to_owned();
        headers.push((ORIGIN_HEADER.to_owned(), origin));
        headers.push((
            HOPS_HEADER.to_owned(),
            self.hops.saturating_add(1).to_string(),
        ));
        headers
    }

    /// Bytes the message holds, as counted against queue limits.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.topic.len()
            + self
                .headers
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
    }
}

/// Whether `headers` say a message was first published through hub `hub`: it has come
/// back around a loop.
pub fn originated_at(headers: &[(String, String)], hub: &str) -> bool {
    headers
        .iter()
        .any(|(key, value)| key == ORIGIN_HEADER && value == hub)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

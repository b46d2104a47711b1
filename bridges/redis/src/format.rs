//! Payloads in the bridge's format: `raw` (the bytes as they are) or `json` (the hub's
//! JSON envelope, which also carries id, timestamp and headers).

use bytes::Bytes;
use switchyard_api::envelope::{self, EnvelopeError};
use switchyard_api::{Format, Message, Topic};

/// Reads and writes payloads in one format.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    format: Format,
}

impl Codec {
    /// A codec for `format` (`raw` or `json`; the hub allows no other for this type).
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    /// Whether payloads are envelopes that carry id, timestamp and headers themselves.
    pub fn is_envelope(&self) -> bool {
        self.format == Format::Json
    }

    /// The message a payload received on `topic` stands for.
    pub fn decode(&self, topic: Topic, payload: Bytes) -> Result<Message, EnvelopeError> {
        match self.format {
            Format::Json => Ok(envelope::decode(&payload)?.into_message(topic)),
            _ => Ok(Message::new(topic, payload)),
        }
    }

    /// The payload to send for `message` under the remote name `name`. In `json`, the
    /// envelope carries the headers to send (origin and hop count included).
    pub fn encode(&self, message: &Message, name: &str, headers: Vec<(String, String)>) -> Bytes {
        match self.format {
            Format::Json => {
                let mut outgoing = message.clone();
                outgoing.headers = headers;
                envelope::encode_to_bytes(&outgoing, name)
            }
            _ => message.payload.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_metadata_and_raw_is_untouched() {
        let topic = Topic::new("a/b").expect("valid topic");
        let mut message = Message::new(topic.clone(), Bytes::from_static(b"{\"x\":1}"));
        message.id = Some("m-1".into());
        message.hops = 1;
        let headers = message.outgoing_headers("hub");
        let json = Codec::new(Format::Json);
        let encoded = json.encode(&message, "a.b", headers);
        let mut decoded = json.decode(topic.clone(), encoded).expect("an envelope");
        decoded.take_hops_header();
        assert_eq!(decoded.payload, message.payload);
        assert_eq!(decoded.id.as_deref(), Some("m-1"));
        assert_eq!(decoded.hops, 2);
        assert_eq!(decoded.header("x-switchyard-origin"), Some("hub"));
        assert!(json
            .decode(topic.clone(), Bytes::from_static(b"nope"))
            .is_err());

        let raw = Codec::new(Format::Raw);
        let bytes = Bytes::from_static(b"\xff\x00");
        assert_eq!(raw.encode(&message, "a.b", Vec::new()), message.payload);
        assert_eq!(
            raw.decode(topic, bytes.clone()).expect("raw").payload,
            bytes
        );
    }
}

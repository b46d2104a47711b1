//! The JSON envelope: how a message is written for WebSocket clients (always) and for any
//! bridge with `format = "json"`.
//!
//! `{"topic","payload"|"payload_base64","headers","qos","retain","id","ts"}`, where `ts` is
//! milliseconds since the Unix epoch. A payload that is a JSON object, array, number,
//! `true`, `false` or `null`, with no surrounding white space, is embedded verbatim, so it
//! comes back byte for byte; other valid UTF-8 (including a JSON string, which would
//! otherwise be indistinguishable from plain text) is a JSON string; anything else is
//! base64 in `payload_base64`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::message::{Message, QoS};
use crate::topic::Topic;

/// Why an envelope could not be read.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// Not JSON, or not an object of the expected shape.
    #[error("expected a JSON object with at least a \"topic\": {0}")]
    Json(#[from] serde_json::Error),
    /// `payload_base64` is not base64.
    #[error("payload_base64 is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Both payload fields are present.
    #[error("give either payload or payload_base64, not both")]
    TwoPayloads,
    /// `qos` outside 0..=2.
    #[error("qos must be 0, 1 or 2, found {0}")]
    QoS(u8),
}

/// The fields of an envelope read from outside, before the topic is validated or mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Topic as written by the sender.
    pub topic: String,
    /// Decoded payload bytes.
    pub payload: Bytes,
    /// Headers (string values).
    pub headers: Vec<(String, String)>,
    /// Requested QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Sender's message id.
    pub id: Option<String>,
    /// Sender's timestamp (ms since epoch).
    pub timestamp_ms: Option<u64>,
}

impl Envelope {
    /// The message this envelope stands for on `topic` (the protocol's own name, mapped by
    /// the rules; the envelope's `topic` field is only informative): payload, headers, id,
    /// retain flag and timestamp. The QoS stays the caller's to set.
    pub fn into_message(self, topic: Topic) -> Message {
        let mut message = Message::new(topic, self.payload);
        message.headers = self.headers;
        message.id = self.id.map(Into::into);
        message.retain = self.retain;
        if let Some(timestamp) = self.timestamp_ms {
            message.timestamp_ms = timestamp;
        }
        message
    }
}

#[derive(Deserialize)]
struct EnvelopeFields<'a> {
    topic: String,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ts: Option<u64>,
}

/// A present `payload` is kept even when it is `null` (which `Option` would swallow).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Reads an envelope; unknown fields (such as a WebSocket `op`) are ignored.
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let fields: EnvelopeFields<'_> = serde_json::from_slice(bytes)?;
    let payload = match (fields.payload, fields.payload_base64) {
        (Some(_), Some(_)) => return Err(EnvelopeError::TwoPayloads),
        (Some(raw), None) => decode_payload(raw)?,
        (None, Some(encoded)) => Bytes::from(BASE64.decode(encoded)?),
        (None, None) => Bytes::new(),
    };
    if fields.qos > 2 {
        return Err(EnvelopeError::QoS(fields.qos));
    }
    Ok(Envelope {
        topic: fields.topic,
        payload,
        headers: fields.headers.into_iter().collect(),
        qos: QoS::from_level(fields.qos),
        retain: fields.retain,
        id: fields.id,
        timestamp_ms: fields.ts,
    })
}

fn decode_payload(raw: &RawValue) -> Result<Bytes, serde_json::Error> {
    let text = raw.get();
    if text.starts_with('"') {
        let string: String = serde_json::from_str(text)?;
        Ok(Bytes::from(string))
    } else {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// The envelope of `message` (with `topic` as the name shown), ready to send.
pub fn encode_to_bytes(message: &Message, topic: &str) -> Bytes {
    let mut out = Vec::new();
    encode(message, topic, &mut out);
    Bytes::from(out)
}

/// Appends the envelope of `message` (with `topic` as the name shown) to `out`.
pub fn encode(message: &Message, topic: &str, out: &mut Vec<u8>) {
    out.reserve(message.payload.len() + topic.len() + 96);
    out.extend_from_slice(b"{\"topic\":");
    write_json_string(topic, out);
    match payload_form(&message.payload) {
        PayloadForm::Json => {
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(&message.payload);
        }
        PayloadForm::Text(text) => {
            out.extend_from_slice(b",\"payload\":");
            write_json_string(text, out);
        }
        PayloadForm::Binary => {
            out.extend_from_slice(b",\"payload_base64\":\"");
            let start = out.len();
            out.resize(
                start + base64::encoded_len(message.payload.len(), true).unwrap_or(0),
                0,
            );
            let written = BASE64
                .encode_slice(&message.payload, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"headers\":{");
    for (index, (key, value)) in message.headers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json_string(key, out);
        out.push(b':');
        write_json_string(value, out);
    }
    out.extend_from_slice(b"},\"qos\":");
    out.push(b'0' + message.qos.level());
    out.extend_from_slice(if message.retain {
        b",\"retain\":true"
    } else {
        b",\"retain\":false"
    });
    if let Some(id) = &message.id {
        out.extend_from_slice(b",\"id\":");
        write_json_string(id, out);
    }
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(message.timestamp_ms.to_string().as_bytes());
    out.push(b'}');
}

enum PayloadForm<'a> {
    Json,
    Text(&'a str),
    Binary,
}

fn payload_form(payload: &[u8]) -> PayloadForm<'_> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return PayloadForm::Binary;
    };
    let embeddable = matches!(
        text.as_bytes().first(),
        Some(b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    ) && !text.ends_with(|c: char| c.is_ascii_whitespace())
        && serde_json::from_str::<&RawValue>(text).is_ok();
    if embeddable {
        PayloadForm::Json
    } else {
        PayloadForm::Text(text)
    }
}

fn write_json_string(text: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_of(payload: &[u8]) -> (String, Envelope) {
        let mut message = Message::new(Topic::new("a/b").unwrap(), Bytes::copy_from_slice(payload));
        message.headers.push(("k".into(), "v\"".into()));
        message.id = Some("id-1".into());
        let mut out = Vec::new();
        encode(&message, "a/b", &mut out);
        let text = String::from_utf8(out).expect("the envelope is UTF-8");
        let decoded = decode(text.as_bytes()).expect("the envelope decodes");
        (text, decoded)
    }

    #[test]
    fn json_payloads_are_embedded_verbatim() {
        for payload in [
            &b"{\"x\": [1, 2.50, null]}"[..],
            b"[]",
            b"-3.0e2",
            b"true",
            b"null",
        ] {
            let (text, decoded) = envelope_of(payload);
            let needle = format!("\"payload\":{}", std::str::from_utf8(payload).unwrap());
            assert!(text.contains(&needle), "{text}");
            assert_eq!(decoded.payload, payload);
        }
    }

    #[test]
    fn text_and_json_strings_become_strings() {
        for payload in [
            &b"hello \xc3\xa9"[..],
            b"\"quoted\"",
            b"{not json",
            b" {}",
            b"{} ",
        ] {
            let (text, decoded) = envelope_of(payload);
            let expected: String =
                serde_json::to_string(std::str::from_utf8(payload).unwrap()).unwrap();
            assert!(text.contains(&format!("\"payload\":{expected}")), "{text}");
            assert_eq!(decoded.payload, payload);
        }
    }

    #[test]
    fn binary_becomes_base64() {
        let (text, decoded) = envelope_of(&[0xff, 0x00, 0xfe]);
        assert!(text.contains("\"payload_base64\":\"/wD+\""), "{text}");
        assert_eq!(decoded.payload, &[0xff, 0x00, 0xfe][..]);
        assert_eq!(decoded.headers, vec![("k".to_owned(), "v\"".to_owned())]);
        assert_eq!(decoded.id.as_deref(), Some("id-1"));
    }

    #[test]
    fn bad_envelopes_are_refused_with_a_reason() {
        assert!(matches!(decode(b"[1]"), Err(EnvelopeError::Json(_))));
        assert!(matches!(
            decode(b"{\"payload\":1}"),
            Err(EnvelopeError::Json(_))
        ));
        assert!(matches!(
            decode(b"{\"topic\":\"t\",\"payload\":1,\"payload_base64\":\"\"}"),
            Err(EnvelopeError::TwoPayloads)
        ));
        assert!(matches!(
            decode(b"{\"topic\":\"t\",\"payload_base64\":\"!\"}"),
            Err(EnvelopeError::Base64(_))
        ));
        assert!(matches!(
            decode(b"{\"topic\":\"t\",\"qos\":7}"),
            Err(EnvelopeError::QoS(7))
        ));
    }
}

//! The fedmsg envelope, both ways.
//!
//! fedmsg (Fedora's ZeroMQ bus) sends frames `[topic, envelope]`, the envelope being a
//! JSON object `{"i","msg","msg_id","timestamp","topic","username"}`, written with sorted
//! keys and no spaces (`fedmsg.encoding.dumps`), plus `crypto`, `signature` and
//! `certificate` when signed, and `headers` in later versions.
//!
//! In: the payload is the exact bytes of `msg` (shared with the frame, not re-encoded),
//! `msg_id` becomes the message id, `timestamp` (seconds, integer or fractional) the
//! message time, the entries of `headers` become headers as they are, and every other
//! field `F` becomes the header `fedmsg-F` (`fedmsg-i`, `fedmsg-topic`,
//! `fedmsg-username`, `fedmsg-timestamp`, `fedmsg-crypto`, `fedmsg-signature`,
//! `fedmsg-certificate`, ...): a string as it is, any other value as compact JSON.
//!
//! Out: the payload (which must be JSON) is embedded byte for byte as `msg`;
//! `username` is the hub's name, `i` a per-socket counter from 1, `msg_id` the message's
//! id when it came from fedmsg (it has a `fedmsg-username` header) and otherwise
//! `<year>-<uuid4>` as fedmsg makes them, `timestamp` the message time in seconds (an
//! integer when whole, as fedmsg writes it), `topic` the remote name, and `headers` the
//! message's headers other than `fedmsg-*` (with the hub's origin and hop count). The
//! original `crypto`/`signature`/`certificate` are not copied: the signature covered the
//! old envelope, whose `username` and `i` are replaced.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use switchyard_api::Message;
use thiserror::Error;

/// Prefix of the headers that carry the envelope's fields other than `msg`, `msg_id`
/// and `headers`.
pub const HEADER_PREFIX: &str = "fedmsg-";

/// The header that says a message came from fedmsg, and who sent it.
pub const USERNAME_HEADER: &str = "fedmsg-username";

/// Why an envelope could not be read or written.
#[derive(Debug, Error)]
pub enum FedmsgError {
    /// The envelope is not a JSON object.
    #[error("the envelope is not a JSON object: {0}")]
    NotAnObject(serde_json::Error),
    /// The envelope has no `msg`.
    #[error("the envelope has no \"msg\" field")]
    NoMsg,
    /// A field has the wrong type.
    #[error("the envelope's {field:?} must be {expected}")]
    FieldType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The payload to send is not JSON, so it cannot be a fedmsg `msg`.
    #[error("the payload is not JSON, which fedmsg's \"msg\" must be: {0}")]
    PayloadNotJson(serde_json::Error),
}

/// What an incoming envelope carries, before the hub topic is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The exact bytes of `msg`.
    pub payload: Bytes,
    /// `msg_id`.
    pub id: Option<String>,
    /// `timestamp`, in milliseconds since the epoch.
    pub timestamp_ms: Option<u64>,
    /// `username`.
    pub username: Option<String>,
    /// The other fields (`fedmsg-*`) and the entries of `headers`.
    pub headers: Vec<(String, String)>,
}

/// Reads an envelope. `payload` shares `body`'s bytes.
pub fn decode(body: &Bytes) -> Result<Decoded, FedmsgError> {
    let fields: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(FedmsgError::NotAnObject)?;
    let msg = fields.get("msg").ok_or(FedmsgError::NoMsg)?;
    let mut decoded = Decoded {
        payload: body.slice_ref(msg.get().as_bytes()),
        id: None,
        timestamp_ms: None,
        username: None,
        headers: Vec::new(),
    };
    for (field, value) in &fields {
        match field.as_str() {
            "msg" => continue,
            "msg_id" => {
                decoded.id = Some(string_field("msg_id", value)?);
                continue;
            }
            "headers" => {
                let headers: BTreeMap<String, &RawValue> = serde_json::from_str(value.get())
                    .map_err(|_| FedmsgError::FieldType {
                        field: "headers",
                        expected: "an object",
                    })?;
                decoded.headers.extend(
                    headers
                        .into_iter()
                        .map(|(key, value)| (key, text_of(value))),
                );
                continue;
            }
            "timestamp" => decoded.timestamp_ms = Some(timestamp_ms(value)?),
            "username" => decoded.username = Some(string_field("username", value)?),
            _ => {}
        }
        decoded
            .headers
            .push((format!("{HEADER_PREFIX}{field}"), text_of(value)));
    }
    Ok(decoded)
}

fn string_field(field: &'static str, value: &RawValue) -> Result<String, FedmsgError> {
    serde_json::from_str(value.get()).map_err(|_| FedmsgError::FieldType {
        field,
        expected: "a string",
    })
}

/// A string's text; any other value as its compact JSON.
fn text_of(value: &RawValue) -> String {
    let json = value.get();
    // Only a string is parsed: a failed parse would build an error message per field.
    if json.starts_with('"') {
        if let Ok(text) = serde_json::from_str::<String>(json) {
            return text;
        }
    }
    json.to_owned()
}

/// fedmsg writes whole seconds (`int(time.time())`); fractions are accepted too.
fn timestamp_ms(value: &RawValue) -> Result<u64, FedmsgError> {
    let seconds: f64 = serde_json::from_str(value.get())
        .ok()
        .filter(|seconds: &f64| seconds.is_finite() && *seconds >= 0.0)
        .ok_or(FedmsgError::FieldType {
            field: "timestamp",
            expected: "a number of seconds since the epoch",
        })?;
    Ok((seconds * 1000.0).round() as u64)
}

/// The envelope as written, fields in sorted order (serde keeps declaration order).
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, &'a str>,
    i: u64,
    msg: &'a RawValue,
    msg_id: &'a str,
    timestamp: serde_json::Number,
    topic: &'a str,
    username: &'a str,
}

/// Writes the envelope of `message` under remote name `topic` into `out`: the `i`th
/// message of its socket, sent by hub `hub` with `headers` (already including the
/// origin and hop count).
pub fn encode(
    message: &Message,
    topic: &str,
    hub: &str,
    i: u64,
    headers: &[(String, String)],
    out: &mut Vec<u8>,
) -> Result<(), FedmsgError> {
    let payload = std::str::from_utf8(&message.payload).map_err(|_| {
        FedmsgError::PayloadNotJson(serde::de::Error::custom("it is not valid UTF-8"))
    })?;
    let msg: &RawValue = serde_json::from_str(payload).map_err(FedmsgError::PayloadNotJson)?;
    let from_fedmsg = message.header(USERNAME_HEADER).is_some();
    let fresh_id;
    let msg_id = match (&message.id, from_fedmsg) {
        (Some(id), true) => id.as_ref(),
        _ => {
            fresh_id = new_msg_id(message.timestamp_ms);
            fresh_id.as_str()
        }
    };
    let envelope = Envelope {
        headers: headers
            .iter()
            .filter(|(key, _)| !key.starts_with(HEADER_PREFIX))
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect(),
        i,
        msg,
        msg_id,
        timestamp: seconds(message.timestamp_ms),
        topic,
        username: hub,
    };
    // Writing into a Vec cannot fail, and every field serializes.
    serde_json::to_writer(out, &envelope).map_err(FedmsgError::PayloadNotJson)
}

/// Milliseconds as seconds: an integer when whole (as fedmsg writes), else a fraction.
fn seconds(timestamp_ms: u64) -> serde_json::Number {
    if timestamp_ms.is_multiple_of(1000) {
        serde_json::Number::from(timestamp_ms / 1000)
    } else {
        serde_json::Number::from_f64(timestamp_ms as f64 / 1000.0)
            .unwrap_or_else(|| serde_json::Number::from(timestamp_ms / 1000))
    }
}

/// A fresh `msg_id` the way fedmsg makes them: `<year>-<uuid4>`, the year of the
/// message's time, or of now when that time is past year 9999 (which RFC 3339, and
/// humantime, cannot write; a sender can claim any `ts`).
fn new_msg_id(timestamp_ms: u64) -> String {
    use std::fmt::Write;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms);
    let mut date = String::new();
    if write!(date, "{}", humantime::format_rfc3339_seconds(time)).is_err() {
        date.clear();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let _ = write!(date, "{now}");
    }
    let year = date.split('-').next().unwrap_or("1970");
    format!("{year}-{}", uuid::Uuid::new_v4())
}

/// Whether a decoded envelope was sent by hub `hub` itself (it came back around a loop).
pub fn sent_by(decoded: &Decoded, hub: &str) -> bool {
    decoded.username.as_deref() == Some(hub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::Topic;

    const FEDORA: &[u8] = br#"{"i":3,"msg":{"z": [1, 2.50], "a":"x"},"msg_id":"2024-5b1f","timestamp":1700000000,"topic":"org.fedoraproject.prod.git.receive","username":"apache"}"#;

    #[test]
    fn incoming_msg_is_kept_byte_for_byte() {
        let decoded = decode(&Bytes::from_static(FEDORA)).expect("decodes");
        assert_eq!(&decoded.payload[..], br#"{"z": [1, 2.50], "a":"x"}"#);
        assert_eq!(decoded.id.as_deref(), Some("2024-5b1f"));
        assert_eq!(decoded.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(decoded.username.as_deref(), Some("apache"));
        assert_eq!(
            decoded.headers,
            vec![
                ("fedmsg-i".to_owned(), "3".to_owned()),
                ("fedmsg-timestamp".to_owned(), "1700000000".to_owned()),
                (
                    "fedmsg-topic".to_owned(),
                    "org.fedoraproject.prod.git.receive".to_owned()
                ),
                ("fedmsg-username".to_owned(), "apache".to_owned()),
            ]
        );
    }

    #[test]
    fn signatures_headers_and_fractional_times_are_read() {
        let body = br#"{"crypto":"x509","signature":"c2ln","headers":{"x-switchyard-hops":"1","n":2},"msg":null,"timestamp":1.5}"#;
        let decoded = decode(&Bytes::from_static(body)).expect("decodes");
        assert_eq!(&decoded.payload[..], b"null");
        assert_eq!(decoded.timestamp_ms, Some(1500));
        assert!(decoded
            .headers
            .contains(&("fedmsg-crypto".into(), "x509".into())));
        assert!(decoded
            .headers
            .contains(&("fedmsg-signature".into(), "c2ln".into())));
        assert!(decoded
            .headers
            .contains(&("x-switchyard-hops".into(), "1".into())));
        assert!(decoded.headers.contains(&("n".into(), "2".into())));
    }

    #[test]
    fn bad_envelopes_are_refused() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"\"a string\"",
            b"{\"i\":1}",
            b"{\"msg\":{},\"msg_id\":7}",
            b"{\"msg\":{},\"timestamp\":\"yesterday\"}",
            b"{\"msg\":{},\"headers\":[]}",
        ] {
            assert!(
                decode(&Bytes::copy_from_slice(body)).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn message(payload: &'static [u8]) -> Message {
        let mut message = Message::new(
            Topic::new("fedora/prod/git/receive").expect("topic"),
            Bytes::from_static(payload),
        );
        message.timestamp_ms = 1_700_000_000_000;
        message
    }

    #[test]
    fn outgoing_envelopes_are_compact_and_sorted() {
        let message = message(br#"{"z": 1, "a": [true]}"#);
        let headers = vec![
            ("x-switchyard-origin".to_owned(), "hub-1".to_owned()),
            ("fedmsg-i".to_owned(), "9".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        let mut out = Vec::new();
        encode(
            &message,
            "org.example.git.receive",
            "hub-1",
            1,
            &headers,
            &mut out,
        )
        .expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        let msg_id_start = text.find("\"msg_id\":\"").expect("msg_id") + 10;
        let msg_id = &text[msg_id_start..msg_id_start + 41];
        assert!(msg_id.starts_with("2023-"), "{msg_id}");
        assert!(uuid::Uuid::parse_str(&msg_id[5..]).is_ok(), "{msg_id}");
        assert_eq!(
            text,
            format!(
                r#"{{"headers":{{"b":"2","x-switchyard-origin":"hub-1"}},"i":1,"msg":{{"z": 1, "a": [true]}},"msg_id":"{msg_id}","timestamp":1700000000,"topic":"org.example.git.receive","username":"hub-1"}}"#
            )
        );
    }

    #[test]
    fn msg_id_is_kept_from_fedmsg_and_times_keep_fractions() {
        let decoded = decode(&Bytes::from_static(FEDORA)).expect("decodes");
        let mut message = message(b"{}");
        message.payload = decoded.payload;
        message.id = decoded.id.map(Into::into);
        message.headers = decoded.headers;
        message.timestamp_ms = 1_700_000_000_250;
        let mut out = Vec::new();
        encode(&message, "t", "hub", 7, &[], &mut out).expect("encodes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"i":7,"msg":{"z": [1, 2.50], "a":"x"},"msg_id":"2024-5b1f","timestamp":1700000000.25,"topic":"t","username":"hub"}"#
        );
    }

    /// Found by the `fedmsg` fuzz target: an envelope with `"timestamp":329912544190`
    /// (year 12424) and no `msg_id` panicked the sending side, which formats the year.
    #[test]
    fn a_time_past_year_9999_still_gets_a_msg_id() {
        for timestamp_ms in [329_912_544_190_000, 253_402_300_800_000, u64::MAX] {
            let mut message = message(b"{}");
            message.timestamp_ms = timestamp_ms;
            let mut out = Vec::new();
            encode(&message, "t", "hub", 1, &[], &mut out).expect("encodes");
            let decoded = decode(&Bytes::from(out)).expect("decodes");
            let id = decoded.id.expect("a msg_id");
            let (year, uuid) = id.split_once('-').expect("<year>-<uuid>");
            assert!(year.parse::<u16>().is_ok(), "{id}");
            assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
        }
    }

    #[test]
    fn a_payload_that_is_not_json_cannot_be_sent() {
        let mut out = Vec::new();
        for payload in [&b"plain text"[..], b"\xff\xfe", b""] {
            let message = message(b"{}");
            let message = Message {
                payload: Bytes::copy_from_slice(payload),
                ..message
            };
            assert!(matches!(
                encode(&message, "t", "hub", 1, &[], &mut out),
                Err(FedmsgError::PayloadNotJson(_))
            ));
        }
    }

    #[test]
    fn the_hubs_own_envelopes_are_recognised() {
        let decoded = decode(&Bytes::from_static(FEDORA)).expect("decodes");
        assert!(sent_by(&decoded, "apache"));
        assert!(!sent_by(&decoded, "switchyard"));
    }
}

//! How a message is laid out as the fields of a stream entry.
//!
//! `XADD` writes, in this order:
//! - `topic`: the hub topic (for readers; the stream key is the remote name);
//! - `payload`: the payload, binary safe (in `json` format, the JSON envelope);
//! - `id`: the message id, when it has one;
//! - `ts`: milliseconds since the Unix epoch when it was first published;
//! - `headers`: a JSON object of string values, with the hub's origin and hop count.
//!
//! Reading takes the same fields; only `payload` matters, and an entry without one (written
//! by a program that does not know this layout, e.g. `XADD s * temp 21`) becomes a JSON
//! object of all its fields, so nothing is lost. The hub topic of an entry comes from its
//! stream key through the bridge's rule, never from the `topic` field.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

/// Field with the hub topic.
pub const TOPIC: &str = "topic";
/// Field with the payload.
pub const PAYLOAD: &str = "payload";
/// Field with the message id.
pub const ID: &str = "id";
/// Field with the timestamp (ms since the epoch).
pub const TS: &str = "ts";
/// Field with the headers (a JSON object).
pub const HEADERS: &str = "headers";

/// A stream entry's contents that do not fit the layout.
#[derive(Debug, Error)]
pub enum FieldError {
    /// `headers` is not a JSON object of strings.
    #[error("the headers field is not a JSON object of strings: {0}")]
    Headers(serde_json::Error),
    /// `ts` is not a number.
    #[error("the ts field is not a number of milliseconds: {0:?}")]
    Timestamp(String),
}

/// The fields of an entry to append, in `XADD` order.
pub fn encode(
    topic: &str,
    payload: Bytes,
    id: Option<&str>,
    timestamp_ms: u64,
    headers: &[(String, String)],
) -> Vec<(&'static str, Bytes)> {
    let mut fields = Vec::with_capacity(5);
    fields.push((TOPIC, Bytes::copy_from_slice(topic.as_bytes())));
    fields.push((PAYLOAD, payload));
    if let Some(id) = id {
        fields.push((ID, Bytes::copy_from_slice(id.as_bytes())));
    }
    fields.push((TS, Bytes::from(timestamp_ms.to_string())));
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    // Serialising a map of strings cannot fail.
    let headers = serde_json::to_vec(&headers).unwrap_or_else(|_| b"{}".to_vec());
    fields.push((HEADERS, Bytes::from(headers)));
    fields
}

/// What an entry read from a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The payload (or the JSON object of every field, when there is no `payload`).
    pub payload: Bytes,
    /// The `id` field.
    pub id: Option<String>,
    /// The `ts` field.
    pub timestamp_ms: Option<u64>,
    /// The `headers` field's pairs.
    pub headers: Vec<(String, String)>,
}

/// Reads an entry's field/value pairs.
pub fn decode(fields: Vec<(Bytes, Bytes)>) -> Result<Decoded, FieldError> {
    let mut decoded = Decoded {
        payload: Bytes::new(),
        id: None,
        timestamp_ms: None,
        headers: Vec::new(),
    };
    let mut payload = None;
    for (name, value) in &fields {
        match &name[..] {
            b"payload" => payload = Some(value.clone()),
            b"id" => decoded.id = Some(String::from_utf8_lossy(value).into_owned()),
            b"ts" => {
                let text = String::from_utf8_lossy(value);
                let timestamp = text
                    .trim()
                    .parse()
                    .map_err(|_| FieldError::Timestamp(text.clone().into_owned()))?;
                decoded.timestamp_ms = Some(timestamp);
            }
            b"headers" => {
                let headers: BTreeMap<String, String> =
                    serde_json::from_slice(value).map_err(FieldError::Headers)?;
                decoded.headers = headers.into_iter().collect();
            }
            _ => {}
        }
    }
    decoded.payload = match payload {
        Some(payload) => payload,
        None => fields_as_json(&fields),
    };
    Ok(decoded)
}

/// `{"field":"value",...}` of every field (invalid UTF-8 replaced).
fn fields_as_json(fields: &[(Bytes, Bytes)]) -> Bytes {
    let object: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                serde_json::Value::String(String::from_utf8_lossy(value).into_owned()),
            )
        })
        .collect();
    // Serialising a JSON value cannot fail.
    Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(fields: Vec<(&'static str, Bytes)>) -> Vec<(Bytes, Bytes)> {
        fields
            .into_iter()
            .map(|(name, value)| (Bytes::from_static(name.as_bytes()), value))
            .collect()
    }

    #[test]
    fn fields_round_trip_binary_payloads_and_headers() {
        let headers = vec![
            ("x-switchyard-hops".to_owned(), "1".to_owned()),
            ("k".to_owned(), "v \"q\"".to_owned()),
        ];
        let payload = Bytes::from_static(b"\x00\xffbinary");
        let fields = encode("a/b", payload.clone(), Some("id-7"), 1234, &headers);
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, [TOPIC, PAYLOAD, ID, TS, HEADERS]);
        assert_eq!(fields[0].1, "a/b");
        let decoded = decode(pairs(fields)).expect("our own layout");
        assert_eq!(decoded.payload, payload);
        assert_eq!(decoded.id.as_deref(), Some("id-7"));
        assert_eq!(decoded.timestamp_ms, Some(1234));
        let mut expected = headers;
        expected.sort();
        assert_eq!(decoded.headers, expected);

        let without_id = encode("t", Bytes::new(), None, 1, &[]);
        assert!(without_id.iter().all(|(name, _)| *name != ID));
    }

    #[test]
    fn foreign_entries_become_json_objects() {
        let fields = vec![
            (Bytes::from_static(b"temp"), Bytes::from_static(b"21")),
            (Bytes::from_static(b"room"), Bytes::from_static(b"hall")),
        ];
        let decoded = decode(fields).expect("any fields");
        let object: serde_json::Value =
            serde_json::from_slice(&decoded.payload).expect("a JSON object");
        assert_eq!(object, serde_json::json!({"temp": "21", "room": "hall"}));
        assert_eq!(decoded.id, None);
    }

    #[test]
    fn malformed_metadata_is_refused() {
        let bad_headers = vec![(Bytes::from_static(b"headers"), Bytes::from_static(b"[1]"))];
        assert!(matches!(decode(bad_headers), Err(FieldError::Headers(_))));
        let bad_ts = vec![(Bytes::from_static(b"ts"), Bytes::from_static(b"soon"))];
        assert!(matches!(decode(bad_ts), Err(FieldError::Timestamp(_))));
    }
}

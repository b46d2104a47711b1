//! Reading the replies of `XREADGROUP` and `XAUTOCLAIM` into entries, binary safe.
//!
//! An entry whose fields are nil was deleted from the stream (trimmed) while it was
//! pending; it is kept here, without fields, so the reader can acknowledge it away.

use bytes::Bytes;
use redis::Value;
use thiserror::Error;

/// A reply that is not shaped as the command promises.
#[derive(Debug, Error)]
#[error("unexpected {command} reply: {detail}")]
pub struct ReplyError {
    command: &'static str,
    detail: String,
}

impl ReplyError {
    fn new(command: &'static str, detail: impl Into<String>) -> Self {
        Self {
            command,
            detail: detail.into(),
        }
    }
}

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id, such as `1700000000000-0`.
    pub id: String,
    /// Its field/value pairs in order; `None` when it was deleted.
    pub fields: Option<Vec<(Bytes, Bytes)>>,
}

/// The entries read from one stream: its key and the entries.
pub type StreamEntries = (Vec<u8>, Vec<Entry>);

/// The entries per stream key of an `XREADGROUP` reply (nil when nothing came).
pub fn read_group(value: Value) -> Result<Vec<StreamEntries>, ReplyError> {
    const COMMAND: &str = "XREADGROUP";
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) => pair_of(pair, COMMAND),
                other => Err(ReplyError::new(COMMAND, format!("stream {other:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(pairs) => pairs,
        other => return Err(ReplyError::new(COMMAND, format!("{other:?}"))),
    };
    streams
        .into_iter()
        .map(|(key, entries)| Ok((bytes_of(key, COMMAND)?, entries_of(entries, COMMAND)?)))
        .collect()
}

/// The cursor and the claimed entries of an `XAUTOCLAIM` reply. Ids it lists as deleted
/// are already gone from the pending list (Redis 7), so they are not returned.
pub fn auto_claim(value: Value) -> Result<(String, Vec<Entry>), ReplyError> {
    const COMMAND: &str = "XAUTOCLAIM";
    let Value::Array(parts) = value else {
        return Err(ReplyError::new(COMMAND, format!("{value:?}")));
    };
    let mut parts = parts.into_iter();
    let (Some(cursor), Some(entries)) = (parts.next(), parts.next()) else {
        return Err(ReplyError::new(COMMAND, "fewer than two parts"));
    };
    let cursor = text_of(cursor, COMMAND)?;
    Ok((cursor, entries_of(entries, COMMAND)?))
}

fn pair_of(pair: Vec<Value>, command: &'static str) -> Result<(Value, Value), ReplyError> {
    let mut pair = pair.into_iter();
    match (pair.next(), pair.next()) {
        (Some(first), Some(second)) => Ok((first, second)),
        _ => Err(ReplyError::new(command, "a pair with fewer than two items")),
    }
}

fn entries_of(value: Value, command: &'static str) -> Result<Vec<Entry>, ReplyError> {
    let Value::Array(entries) = value else {
        return Err(ReplyError::new(command, format!("entries {value:?}")));
    };
    entries
        .into_iter()
        .filter(|entry| !matches!(entry, Value::Nil))
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(ReplyError::new(command, format!("entry {entry:?}")));
            };
            let (id, fields) = pair_of(parts, command)?;
            let id = text_of(id, command)?;
            let fields = match fields {
                Value::Nil => None,
                Value::Array(flat) => Some(field_pairs(flat, command)?),
                Value::Map(pairs) => Some(
                    pairs
                        .into_iter()
                        .map(|(name, value)| {
                            Ok((
                                Bytes::from(bytes_of(name, command)?),
                                Bytes::from(bytes_of(value, command)?),
                            ))
                        })
                        .collect::<Result<_, ReplyError>>()?,
                ),
                other => return Err(ReplyError::new(command, format!("fields {other:?}"))),
            };
            Ok(Entry { id, fields })
        })
        .collect()
}

fn field_pairs(flat: Vec<Value>, command: &'static str) -> Result<Vec<(Bytes, Bytes)>, ReplyError> {
    if !flat.len().is_multiple_of(2) {
        return Err(ReplyError::new(command, "an odd number of field items"));
    }
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        pairs.push((
            Bytes::from(bytes_of(name, command)?),
            Bytes::from(bytes_of(value, command)?),
        ));
    }
    Ok(pairs)
}

fn bytes_of(value: Value, command: &'static str) -> Result<Vec<u8>, ReplyError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(ReplyError::new(
            command,
            format!("a string, found {other:?}"),
        )),
    }
}

fn text_of(value: Value, command: &'static str) -> Result<String, ReplyError> {
    let bytes = bytes_of(value, command)?;
    String::from_utf8(bytes).map_err(|_| ReplyError::new(command, "an id that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn read_replies_keep_binary_fields_and_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("payload"), Value::BulkString(vec![0, 255])]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let streams = read_group(reply).expect("a valid reply");
        assert_eq!(streams.len(), 1);
        let (key, entries) = &streams[0];
        assert_eq!(key, b"orders");
        assert_eq!(
            entries[0].fields,
            Some(vec![(
                Bytes::from_static(b"payload"),
                Bytes::from_static(&[0, 255])
            )])
        );
        assert_eq!(
            entries[1],
            Entry {
                id: "2-0".into(),
                fields: None
            }
        );
        assert!(read_group(Value::Nil).expect("timeout").is_empty());
        assert!(read_group(Value::Int(3)).is_err());
    }

    #[test]
    fn auto_claim_replies_give_the_cursor() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("a"), bulk("b")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, entries) = auto_claim(reply).expect("a valid reply");
        assert_eq!(cursor, "0-0");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "5-1");
        assert!(auto_claim(Value::Array(vec![bulk("0-0")])).is_err());
    }
}

//! A spool record: one queued entry in a compact binary form, checked with a CRC-32.
//!
//! Layout (integers little-endian, lengths `u32`):
//! `version u8 | length u32 | crc32 u32 | seq u64 | enqueued_ms u64 | timestamp_ms u64 |
//! rule u32 | origin u32 | flags u8 | hops u8 | topic | [id] | header count,
//! (name, value)... | payload (the rest)`. `length` is the whole record's; `flags`: bit 0
//! the destination's QoS is 1, bit 1 the message's QoS is 1, bit 2 retain, bit 3 an id
//! follows the topic. The CRC covers everything after itself, so a record damaged on
//! disk is refused instead of delivered wrong; with the length and the sequence number
//! inside, records can also be found in a file whose structure is broken ([`find`]).

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::message::{Message, QoS};
use crate::topic::Topic;

/// The layout version written first in every record.
const VERSION: u8 = 1;

/// Bytes before the CRC-covered part: version, length and CRC.
const PREFIX: usize = 9;

/// The smallest possible record: the prefix and the fixed fields.
const MIN_LENGTH: usize = PREFIX + 8 * 3 + 4 * 2 + 2 + 4 + 4;

const DESTINATION_QOS1: u8 = 1;
const MESSAGE_QOS1: u8 = 1 << 1;
const RETAIN: u8 = 1 << 2;
const HAS_ID: u8 = 1 << 3;

/// A record that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Written by a different layout version.
    #[error("record version {0} is not {VERSION}")]
    Version(u8),
    /// The bytes do not match their checksum.
    #[error("checksum mismatch (the record was damaged)")]
    Checksum,
    /// The record ends before its fields do, or a field is invalid.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// A queued entry as read back from a spool.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledEntry {
    /// Its sequence number in the spool.
    pub seq: u64,
    /// The message (its `sender` is 0: connections do not survive a restart).
    pub message: Message,
    /// The destination rule that passed it.
    pub rule: usize,
    /// The QoS for the destination.
    pub qos: QoS,
    /// Wall-clock milliseconds since the epoch when the hub queued it (for `ttl`).
    pub enqueued_ms: u64,
}

/// What a record says besides the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The sequence number.
    pub seq: u64,
    /// The destination rule.
    pub rule: usize,
    /// The QoS for the destination.
    pub qos: QoS,
    /// When the hub queued it (wall clock, ms since the epoch).
    pub enqueued_ms: u64,
}

/// Appends the record of `message` to `out`.
pub fn encode(message: &Message, meta: RecordMeta, out: &mut Vec<u8>) {
    let RecordMeta {
        seq,
        rule,
        qos,
        enqueued_ms,
    } = meta;
    let start = out.len();
    out.push(VERSION);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&enqueued_ms.to_le_bytes());
    out.extend_from_slice(&message.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&(rule as u32).to_le_bytes());
    out.extend_from_slice(&(message.origin as u32).to_le_bytes());
    let mut flags = 0;
    if qos == QoS::AtLeastOnce {
        flags |= DESTINATION_QOS1;
    }
    if message.qos == QoS::AtLeastOnce {
        flags |= MESSAGE_QOS1;
    }
    if message.retain {
        flags |= RETAIN;
    }
    if message.id.is_some() {
        flags |= HAS_ID;
    }
    out.push(flags);
    out.push(message.hops);
    put_bytes(out, message.topic.as_bytes());
    if let Some(id) = &message.id {
        put_bytes(out, id.as_bytes());
    }
    out.extend_from_slice(&(message.headers.len() as u32).to_le_bytes());
    for (name, value) in &message.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    out.extend_from_slice(&message.payload);
    let length = (out.len() - start) as u32;
    out[start + 1..start + 5].copy_from_slice(&length.to_le_bytes());
    let crc = crc32(&out[start + PREFIX..]);
    out[start + 5..start + PREFIX].copy_from_slice(&crc.to_le_bytes());
}

/// The records inside `data` (any bytes, such as a damaged spool file), as
/// `(offset, length)`, found by their version, length and checksum, in file order.
/// Overlapping candidates are skipped past once one is found.
pub fn find(data: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut offset = 0;
    while offset + MIN_LENGTH <= data.len() {
        if data[offset] == VERSION {
            let length = u32::from_le_bytes([
                data[offset + 1],
                data[offset + 2],
                data[offset + 3],
                data[offset + 4],
            ]) as usize;
            let fits = length >= MIN_LENGTH && length <= data.len() - offset;
            if fits && decode(&data[offset..offset + length]).is_ok() {
                found.push((offset, length));
                offset += length;
                continue;
            }
        }
        offset += 1;
    }
    found
}

/// Reads a record back, checking its version, checksum and fields.
pub fn decode(record: &[u8]) -> Result<SpooledEntry, RecordError> {
    let (&version, rest) = record
        .split_first()
        .ok_or(RecordError::Malformed("empty"))?;
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let mut reader = Reader(rest);
    let length = reader.u32()? as usize;
    if length != record.len() {
        return Err(RecordError::Malformed("length"));
    }
    let crc = reader.u32()?;
    if crc32(reader.0) != crc {
        return Err(RecordError::Checksum);
    }
    let seq = reader.u64()?;
    let enqueued_ms = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    let rule = reader.u32()? as usize;
    let origin = reader.u32()? as usize;
    let flags = reader.u8()?;
    let hops = reader.u8()?;
    let topic = Topic::new(reader.str()?).map_err(|_| RecordError::Malformed("topic"))?;
    let id = if flags & HAS_ID != 0 {
        Some(Arc::from(reader.str()?))
    } else {
        None
    };
    let count = reader.u32()? as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        headers.push((reader.str()?.to_owned(), reader.str()?.to_owned()));
    }
    let level = |bit| QoS::from_level(u8::from(flags & bit != 0));
    let message = Message {
        topic,
        payload: Bytes::copy_from_slice(reader.0),
        headers,
        qos: level(MESSAGE_QOS1),
        retain: flags & RETAIN != 0,
        id,
        timestamp_ms,
        hops,
        origin,
        sender: 0,
    };
    Ok(SpooledEntry {
        seq,
        message,
        rule,
        qos: level(DESTINATION_QOS1),
        enqueued_ms,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads fields off the front of a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < count {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        let length = self.u32()? as usize;
        std::str::from_utf8(self.take(length)?).map_err(|_| RecordError::Malformed("utf-8"))
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table driven.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 != 0 {
                    0xEDB8_8320 ^ (value >> 1)
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut message = Message::new(
            Topic::new("a/b/c").unwrap(),
            Bytes::from_static(b"\0\xffbody"),
        );
        message.headers = vec![("k".into(), "v".into()), ("x-é".into(), String::new())];
        message.qos = QoS::AtLeastOnce;
        message.retain = true;
        message.id = Some(Arc::from("id-1"));
        message.timestamp_ms = 1_700_000_000_123;
        message.hops = 3;
        message.origin = 7;
        message
    }

    fn meta(seq: u64, qos: QoS) -> RecordMeta {
        RecordMeta {
            seq,
            rule: 2,
            qos,
            enqueued_ms: 42,
        }
    }

    #[test]
    fn records_are_found_among_other_bytes() {
        let mut data = vec![1u8, 0, 0, 0, 7, 1];
        let mut spans = Vec::new();
        for seq in 0..3 {
            let start = data.len();
            encode(&sample(), meta(seq, QoS::AtLeastOnce), &mut data);
            spans.push((start, data.len() - start));
            data.extend_from_slice(&[1, 200, 0, 0, 0, 0]);
        }
        data[spans[1].0 + 20] ^= 1;
        assert_eq!(find(&data), [spans[0], spans[2]]);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let message = sample();
        let mut out = Vec::new();
        encode(&message, meta(9, QoS::AtMostOnce), &mut out);
        let entry = decode(&out).unwrap();
        assert_eq!(entry.message, message);
        assert_eq!(
            (entry.seq, entry.rule, entry.qos, entry.enqueued_ms),
            (9, 2, QoS::AtMostOnce, 42)
        );
        let plain = Message::new(Topic::new("t").unwrap(), Bytes::new());
        out.clear();
        encode(&plain, meta(1, QoS::AtLeastOnce), &mut out);
        assert_eq!(decode(&out).unwrap().message, plain);
        assert_eq!(out.len(), MIN_LENGTH + 1, "an empty message's record");
    }

    #[test]
    fn damage_is_detected() {
        let mut out = Vec::new();
        encode(&sample(), meta(1, QoS::AtLeastOnce), &mut out);
        for index in [PREFIX, out.len() / 2, out.len() - 1] {
            let mut damaged = out.clone();
            damaged[index] ^= 0x40;
            assert_eq!(decode(&damaged), Err(RecordError::Checksum), "byte {index}");
        }
        assert_eq!(decode(&out[..3]), Err(RecordError::Malformed("truncated")));
        assert_eq!(decode(&[9, 0, 0]), Err(RecordError::Version(9)));
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}

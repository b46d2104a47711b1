//! Hub -> remote delivery, and the packet identifiers of the connection.
//!
//! Messages are encoded straight into the connection's output. A queued message leaves
//! the hub only when the broker has it: for QoS 0 once its bytes are written, for QoS 1
//! on PUBACK. Unconfirmed messages go back to the front of the hub's queue when the
//! connection ends, so they are sent again, in order.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use switchyard_api::{envelope, BridgeContext, DropReason, Format, Outbound, QoS};

use super::connection::Connection;
use crate::codec::{CodecError, Protocol};

/// The largest window: packet ids are 16-bit, and the state message and the
/// subscriptions take some too.
const MAX_WINDOW: usize = 60_000;

/// Messages in flight, by stage.
pub struct Egress {
    format: Format,
    /// Most packet ids in use at once: the bridge's `max_inflight`, or less when the
    /// broker's Receive Maximum says so.
    window: usize,
    /// Packet ids in use: QoS 1 publishes waiting for PUBACK with their sequence number
    /// and hub entry (`None` for the state message and for subscriptions).
    unacked: HashMap<u16, (u64, Option<Outbound>)>,
    /// QoS 0 publishes encoded and not yet written: the connection's encoded byte count
    /// after each, its sequence number, and the entry.
    unwritten: VecDeque<(u64, u64, Outbound)>,
    /// The packet id tried next.
    next_pkid: u16,
    /// Sequence numbers keep the original order for putting messages back.
    next_sequence: u64,
}

impl Egress {
    /// Nothing in flight yet; at most `window` QoS 1 messages in flight (at least 1).
    pub fn new(format: Format, window: usize) -> Self {
        Self {
            format,
            window: window.clamp(1, MAX_WINDOW),
            unacked: HashMap::new(),
            unwritten: VecDeque::new(),
            next_pkid: 0,
            next_sequence: 0,
        }
    }

    /// How many more QoS 1 messages may be sent now.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.unacked.len())
    }

    /// Encodes one hub message under its remote name.
    pub fn send(&mut self, ctx: &BridgeContext, entry: Outbound, connection: &mut Connection) {
        let Some(name) = ctx.remote_name(entry.rule, &entry.message.topic) else {
            // The router only queues messages a rule passes; nothing to send.
            ctx.delivered(entry);
            return;
        };
        let payload = match self.format {
            Format::Json => envelope::encode_to_bytes(&entry.message, &name),
            _ => entry.message.payload.clone(),
        };
        // MQTT 3.1.1 has no user properties: the headers stay behind.
        let headers = match connection.protocol() {
            Protocol::V5 => entry.message.outgoing_headers(&ctx.hub_name),
            Protocol::V4 => Vec::new(),
        };
        let qos = entry.qos;
        let retain = entry.message.retain;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => self.free_pkid(),
        };
        if let Err(error) = connection.publish(&name, &payload, qos as u8, pkid, retain, headers) {
            let reason = match error {
                CodecError::TooLarge(_) => DropReason::TooLarge,
                CodecError::Malformed(_) => DropReason::Invalid,
            };
            ctx.metrics.dropped(
                reason,
                format_args!("cannot publish {name:?} to the remote broker: {error}"),
            );
            if let Some(ack) = entry.ack {
                ack.confirm();
            }
            return;
        }
        let sequence = self.next_sequence();
        match qos {
            QoS::AtMostOnce => {
                self.unwritten
                    .push_back((connection.encoded(), sequence, entry));
            }
            QoS::AtLeastOnce => {
                self.unacked.insert(pkid, (sequence, Some(entry)));
            }
        }
    }

    /// Encodes the bridge's retained state message (`1` or `0`) at QoS 1.
    pub fn send_state(&mut self, topic: &str, up: bool, connection: &mut Connection) {
        let payload = Bytes::from_static(if up { b"1" } else { b"0" });
        let pkid = self.free_pkid();
        let qos = QoS::AtLeastOnce as u8;
        match connection.publish(topic, &payload, qos, pkid, true, Vec::new()) {
            Ok(()) => {
                let sequence = self.next_sequence();
                self.unacked.insert(pkid, (sequence, None));
            }
            Err(error) => {
                tracing::warn!("Cannot publish the bridge's state to {topic:?}: {error}.")
            }
        }
    }

    /// A packet id for a SUBSCRIBE, in use until [`Egress::release`].
    pub fn reserve(&mut self) -> u16 {
        let pkid = self.free_pkid();
        self.unacked.insert(pkid, (u64::MAX, None));
        pkid
    }

    /// Frees a packet id taken by [`Egress::reserve`].
    pub fn release(&mut self, pkid: u16) {
        self.unacked.remove(&pkid);
    }

    /// QoS 0 messages whose bytes are now written (`written` bytes in all) are sent.
    pub fn settle_written(&mut self, ctx: &BridgeContext, written: u64) {
        if self
            .unwritten
            .front()
            .is_none_or(|(end, ..)| *end > written)
        {
            return;
        }
        let now = Instant::now();
        while let Some((end, ..)) = self.unwritten.front() {
            if *end > written {
                break;
            }
            if let Some((_, _, entry)) = self.unwritten.pop_front() {
                ctx.delivered_at(entry, now);
            }
        }
    }

    /// The broker answered packet `pkid`. A refusal (MQTT 5 reason code such as
    /// NotAuthorized) would be refused again if retried, so it is counted as `denied`.
    pub fn on_puback(&mut self, ctx: &BridgeContext, pkid: u16, refusal: Option<String>) {
        let Some((_, entry)) = self.unacked.remove(&pkid) else {
            return;
        };
        match (entry, refusal) {
            (Some(entry), None) => ctx.delivered(entry),
            (Some(entry), Some(reason)) => {
                ctx.metrics.dropped(
                    DropReason::Denied,
                    format_args!(
                        "the remote broker refused {:?}: {reason}",
                        entry.message.topic
                    ),
                );
                if let Some(ack) = entry.ack {
                    ack.confirm();
                }
            }
            (None, Some(reason)) => tracing::warn!(
                bridge = %ctx.name,
                "The remote broker refused the bridge's state message: {reason}."
            ),
            (None, None) => {}
        }
    }

    /// Puts every unconfirmed message back at the front of the queue, in original order.
    pub fn give_back(self, ctx: &BridgeContext) {
        let unwritten = self
            .unwritten
            .into_iter()
            .map(|(_, sequence, entry)| (sequence, entry));
        let mut entries: Vec<(u64, Outbound)> = self
            .unacked
            .into_values()
            .filter_map(|(sequence, entry)| entry.map(|entry| (sequence, entry)))
            .chain(unwritten)
            .collect();
        entries.sort_unstable_by_key(|(sequence, _)| *sequence);
        ctx.outbound
            .requeue_front(entries.into_iter().map(|(_, entry)| entry).collect());
    }

    fn next_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// The next packet id (1 to 65535) not in use. Callers keep fewer than 65535 in use
    /// (the window), so one is always free.
    fn free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.unacked.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

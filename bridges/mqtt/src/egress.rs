//! Hub messages out to one client: packet identifiers and the in-flight window for QoS 1,
//! the RETAIN flag, and MQTT 5 user properties (MQTT 3.1.1 clients never see properties).

use std::collections::HashSet;

use bytes::BytesMut;
use switchyard_api::server::ClientMessage;
use switchyard_api::{BridgeContext, DropReason, QoS, TopicFilter};
use tokio::sync::mpsc;

use crate::codec::{CodecError, Protocol};

/// Most messages taken from the client's queue and encoded into one write.
pub const WRITE_BATCH: usize = 64;

/// The egress side of one connection.
pub struct Egress {
    protocol: Protocol,
    /// Packet identifiers of QoS 1 messages sent and not yet acknowledged.
    inflight: HashSet<u16>,
    /// Most entries in `inflight` before the server stops taking from the queue.
    max_inflight: usize,
    /// The next packet identifier to try.
    next_pkid: u16,
    /// MQTT 5: the largest packet the client accepts.
    client_max_packet: Option<u32>,
    /// MQTT 5 subscriptions with retain-as-published: live messages matching them keep
    /// their RETAIN flag. Usually empty.
    retain_as_published: Vec<TopicFilter>,
}

impl Egress {
    /// The egress side of a connection speaking `protocol`. `max_inflight` is the server's
    /// limit, lowered to the client's MQTT 5 receive maximum when that is smaller.
    pub fn new(
        protocol: Protocol,
        max_inflight: usize,
        client_receive_maximum: Option<u16>,
        client_max_packet: Option<u32>,
    ) -> Self {
        let client_limit = client_receive_maximum.map_or(usize::MAX, usize::from);
        Self {
            protocol,
            inflight: HashSet::new(),
            max_inflight: max_inflight.min(client_limit).max(1),
            next_pkid: 1,
            client_max_packet,
            retain_as_published: Vec::new(),
        }
    }

    /// Whether another message may be taken from the queue.
    pub fn can_take(&self) -> bool {
        self.inflight.len() < self.max_inflight
    }

    /// The client acknowledged `pkid`.
    pub fn acknowledged(&mut self, pkid: u16) {
        self.inflight.remove(&pkid);
    }

    /// Records whether live messages matching `filter` keep their RETAIN flag.
    pub fn set_retain_as_published(&mut self, filter: &TopicFilter, keep: bool) {
        self.retain_as_published.retain(|known| known != filter);
        if keep {
            self.retain_as_published.push(filter.clone());
        }
    }

    /// Forgets a subscription's options.
    pub fn unsubscribed(&mut self, filter: &TopicFilter) {
        self.retain_as_published.retain(|known| known != filter);
    }

    /// Encodes `first` and whatever else is ready in `queue` (while the window allows) as
    /// live deliveries.
    pub fn drain(
        &mut self,
        ctx: &BridgeContext,
        first: ClientMessage,
        queue: &mut mpsc::Receiver<ClientMessage>,
        buffer: &mut BytesMut,
    ) {
        self.encode(ctx, &first, false, buffer);
        for _ in 1..WRITE_BATCH {
            if !self.can_take() {
                break;
            }
            match queue.try_recv() {
                Ok(delivery) => self.encode(ctx, &delivery, false, buffer),
                Err(_) => break,
            }
        }
    }

    /// Encodes one delivery. `retained_now` marks the retained messages sent right after
    /// a SUBSCRIBE (always RETAIN=1); live ones have RETAIN=0 unless retain-as-published.
    pub fn encode(
        &mut self,
        ctx: &BridgeContext,
        delivery: &ClientMessage,
        retained_now: bool,
        buffer: &mut BytesMut,
    ) {
        let message = &delivery.message;
        let retain = retained_now
            || (message.retain
                && self
                    .retain_as_published
                    .iter()
                    .any(|filter| filter.matches(&delivery.name)));
        let mut qos = delivery.qos.level();
        let mut pkid = 0;
        if delivery.qos == QoS::AtLeastOnce {
            match self.allocate_pkid() {
                Some(allocated) => pkid = allocated,
                // Every identifier is in use (only reachable through a burst of retained
                // messages): this copy goes out at most once.
                None => qos = 0,
            }
        }
        let properties = match self.protocol {
            Protocol::V4 => Vec::new(),
            Protocol::V5 => message.outgoing_headers(&ctx.hub_name),
        };
        let written = self.protocol.encode_publish(
            buffer,
            &delivery.name,
            &message.payload,
            qos,
            pkid,
            retain,
            properties,
            self.client_max_packet,
        );
        if let Err(error) = written {
            if pkid != 0 {
                self.inflight.remove(&pkid);
            }
            let reason = match error {
                CodecError::TooLarge(_) => DropReason::TooLarge,
                CodecError::Malformed(_) => DropReason::Invalid,
            };
            ctx.metrics.dropped(
                reason,
                format_args!("a message could not be sent to a client ({error})"),
            );
        }
    }

    /// A packet identifier not in flight (1..=65535), recorded as in flight.
    fn allocate_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if self.inflight.insert(pkid) {
                return Some(pkid);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_identifiers_wrap_and_skip_those_in_flight() {
        let mut egress = Egress::new(Protocol::V4, 10, None, None);
        egress.next_pkid = u16::MAX;
        assert_eq!(egress.allocate_pkid(), Some(u16::MAX));
        assert_eq!(egress.allocate_pkid(), Some(1));
        egress.next_pkid = 1;
        assert_eq!(egress.allocate_pkid(), Some(2));
        egress.acknowledged(1);
        assert_eq!(egress.inflight.len(), 2);
    }

    #[test]
    fn the_window_is_the_smaller_of_both_limits() {
        let mut egress = Egress::new(Protocol::V5, 100, Some(2), None);
        assert!(egress.can_take());
        egress.allocate_pkid();
        egress.allocate_pkid();
        assert!(!egress.can_take());
        egress.acknowledged(1);
        assert!(egress.can_take());
    }
}

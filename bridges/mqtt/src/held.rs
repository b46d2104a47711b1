//! Packets a held-back client sent, kept in arrival order until the server can act on
//! them.
//!
//! A client is held back while `max_inflight` of its QoS 1/2 publishes wait for the hub's
//! destinations. The session still reads it, so that the client's PINGREQs are answered
//! (clients close a connection whose PINGRESP does not come within about one keepalive):
//! what does not depend on the order of the client's packets is handled at once, the rest
//! waits here and is handled, oldest first, as soon as the window has room again. The
//! queue is bounded; once it is full the session stops reading the client.

use std::collections::VecDeque;

use crate::incoming::Incoming;

/// What a held packet costs beyond its bytes on the wire: the decoded packet itself, so
/// that many tiny packets are bounded too.
const PACKET_OVERHEAD: usize = std::mem::size_of::<Incoming>();

/// The packets that wait, oldest first, and what they cost.
pub struct Held {
    /// Packets in arrival order, each with its cost.
    packets: VecDeque<(Incoming, usize)>,
    /// The sum of the costs in `packets`.
    cost: usize,
    /// The cost from which the queue is full (one packet more is still taken, so the
    /// queue holds at most `limit` plus one largest packet).
    limit: usize,
}

impl Held {
    /// An empty queue that is full once its packets cost `limit` (their bytes on the wire
    /// plus a fixed overhead each).
    pub fn new(limit: usize) -> Self {
        Self {
            packets: VecDeque::new(),
            cost: 0,
            limit,
        }
    }

    /// Whether `packet` must wait behind the client's earlier packets. Only the client's
    /// answers to what the server sent it (PUBACK; PUBREL, whose PUBREC was sent, so its
    /// PUBLISH was handled) and PINGREQ may pass: each is answered on its own, in the order
    /// it came, whatever is held. Everything else keeps its place: a SUBSCRIBE or a
    /// DISCONNECT must not overtake the publishes sent before it.
    pub fn must_wait(packet: &Incoming) -> bool {
        !matches!(
            packet,
            Incoming::PingReq | Incoming::PubAck(_) | Incoming::PubRel(_)
        )
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Whether the queue takes no more packets (the session stops reading the client).
    pub fn is_full(&self) -> bool {
        self.cost >= self.limit
    }

    /// Puts `packet`, which took `wire_size` bytes, behind the others.
    pub fn push(&mut self, packet: Incoming, wire_size: usize) {
        let cost = wire_size.saturating_add(PACKET_OVERHEAD);
        self.cost = self.cost.saturating_add(cost);
        self.packets.push_back((packet, cost));
    }

    /// Takes the oldest packet.
    pub fn pop(&mut self) -> Option<Incoming> {
        let (packet, cost) = self.packets.pop_front()?;
        self.cost -= cost;
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> Incoming {
        Incoming::Publish(crate::incoming::Publish {
            topic: "t".to_owned(),
            topic_alias: None,
            qos: 1,
            retain: false,
            pkid,
            payload: bytes::Bytes::new(),
            user_properties: Vec::new(),
        })
    }

    fn pkid(packet: Option<Incoming>) -> Option<u16> {
        match packet {
            Some(Incoming::Publish(publish)) => Some(publish.pkid),
            Some(other) => panic!("expected a PUBLISH, got {other:?}"),
            None => None,
        }
    }

    #[test]
    fn packets_come_out_in_arrival_order() {
        let mut held = Held::new(usize::MAX);
        assert!(held.is_empty());
        for id in 1..=3 {
            held.push(publish(id), 10);
        }
        held.push(
            Incoming::Disconnect {
                publish_will: false,
            },
            2,
        );
        assert_eq!(pkid(held.pop()), Some(1));
        assert_eq!(pkid(held.pop()), Some(2));
        assert_eq!(pkid(held.pop()), Some(3));
        assert!(matches!(held.pop(), Some(Incoming::Disconnect { .. })));
        assert!(held.pop().is_none());
        assert!(held.is_empty());
    }

    #[test]
    fn full_at_the_limit_and_roomy_again_once_taken() {
        let each = 100;
        let mut held = Held::new(2 * (each + PACKET_OVERHEAD));
        held.push(publish(1), each);
        assert!(!held.is_full());
        held.push(publish(2), each);
        assert!(held.is_full(), "two packets reach the limit");
        held.pop();
        assert!(!held.is_full());
        held.pop();
        assert_eq!(held.cost, 0, "every cost is given back");
    }

    #[test]
    fn a_packet_larger_than_the_limit_is_still_taken() {
        let mut held = Held::new(1000);
        held.push(publish(1), 5000);
        assert!(held.is_full());
        assert_eq!(pkid(held.pop()), Some(1));
        assert!(!held.is_full());
    }

    #[test]
    fn tiny_packets_fill_the_queue_too() {
        let mut held = Held::new(10 * PACKET_OVERHEAD);
        for id in 1..=10 {
            assert!(!held.is_full());
            held.push(publish(id), 0);
        }
        assert!(held.is_full());
    }

    #[test]
    fn only_pings_and_answers_pass() {
        assert!(!Held::must_wait(&Incoming::PingReq));
        assert!(!Held::must_wait(&Incoming::PubAck(7)));
        assert!(!Held::must_wait(&Incoming::PubRel(7)));
        assert!(Held::must_wait(&publish(1)));
        assert!(Held::must_wait(&Incoming::Subscribe {
            pkid: 1,
            filters: Vec::new()
        }));
        assert!(Held::must_wait(&Incoming::Unsubscribe {
            pkid: 1,
            filters: Vec::new()
        }));
        assert!(Held::must_wait(&Incoming::Disconnect {
            publish_will: false
        }));
        assert!(Held::must_wait(&Incoming::Unexpected("PUBREC")));
    }
}

//! Everything the bridge sends to the remote broker, and hub -> remote delivery.
//!
//! Requests (publishes, acknowledgements, the state message) wait in one FIFO outbox and
//! are handed to rumqttc without blocking; the session loop retries what rumqttc could not
//! take yet. A queued message leaves the hub only when the broker has it (written for
//! QoS 0, PUBACK for QoS 1). Unconfirmed messages go back to the front of the hub's queue
//! when the connection ends, so they are sent again, in order.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use switchyard_api::{envelope, BridgeContext, DropReason, Format, Outbound, QoS};

use super::client::{RemoteClient, Request};

/// A request waiting for rumqttc, with the message it carries when it is a publish.
struct Pending {
    request: Request,
    /// For publishes: the sequence number, and the hub entry (`None` for the state message).
    publish: Option<(u64, Option<Outbound>)>,
}

/// Requests and messages in flight, by stage.
pub struct Egress {
    format: Format,
    max_inflight: usize,
    /// Not yet taken by rumqttc, in order.
    outbox: VecDeque<Pending>,
    /// Publishes in the outbox.
    outbox_publishes: usize,
    /// Taken by rumqttc, waiting to learn their packet id, in order.
    unsent: VecDeque<(u64, Option<Outbound>)>,
    /// Written with QoS 1, waiting for PUBACK, by packet id.
    unacked: HashMap<u16, (u64, Option<Outbound>)>,
    /// Sequence numbers keep the original order for putting messages back.
    next_sequence: u64,
}

impl Egress {
    /// Nothing in flight yet.
    pub fn new(format: Format, max_inflight: u16) -> Self {
        Self {
            format,
            max_inflight: usize::from(max_inflight.max(1)),
            outbox: VecDeque::new(),
            outbox_publishes: 0,
            unsent: VecDeque::new(),
            unacked: HashMap::new(),
            next_sequence: 0,
        }
    }

    /// How many more messages may be taken from the hub's queue now.
    pub fn room(&self) -> usize {
        self.max_inflight
            .saturating_sub(self.outbox_publishes + self.unsent.len() + self.unacked.len())
    }

    /// Whether requests are waiting for rumqttc to take them.
    pub fn has_backlog(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Queues one hub message for publishing under its remote name.
    pub fn send(&mut self, ctx: &BridgeContext, entry: Outbound) {
        let Some(name) = ctx.remote_name(entry.rule, &entry.message.topic) else {
            // The router only queues messages a rule passes; nothing to send.
            ctx.delivered(entry);
            return;
        };
        let payload = match self.format {
            Format::Json => envelope::encode_to_bytes(&entry.message, &name),
            _ => entry.message.payload.clone(),
        };
        let request = Request::Publish {
            topic: name,
            payload,
            qos: entry.qos,
            retain: entry.message.retain,
            headers: entry.message.outgoing_headers(&ctx.hub_name),
        };
        self.push_publish(request, Some(entry));
    }

    /// Queues the bridge's retained state message (`1` or `0`).
    pub fn send_state(&mut self, topic: &str, up: bool) {
        let request = Request::Publish {
            topic: topic.to_owned(),
            payload: Bytes::from_static(if up { b"1" } else { b"0" }),
            qos: QoS::AtLeastOnce,
            retain: true,
            headers: Vec::new(),
        };
        self.push_publish(request, None);
    }

    /// Queues the acknowledgement of a received message.
    pub fn acknowledge(&mut self, qos: u8, pkid: u16) {
        self.outbox.push_back(Pending {
            request: Request::Ack { qos, pkid },
            publish: None,
        });
    }

    fn push_publish(&mut self, request: Request, entry: Option<Outbound>) {
        self.outbox.push_back(Pending {
            request,
            publish: Some((self.next_sequence, entry)),
        });
        self.next_sequence += 1;
        self.outbox_publishes += 1;
    }

    /// Hands rumqttc as many queued requests as it takes now, in order.
    pub fn flush(&mut self, client: &dyn RemoteClient) {
        while let Some(pending) = self.outbox.front() {
            if !client.try_send(&pending.request) {
                return;
            }
            if let Some(Pending {
                publish: Some(tracked),
                ..
            }) = self.outbox.pop_front()
            {
                self.outbox_publishes -= 1;
                self.unsent.push_back(tracked);
            }
        }
    }

    /// rumqttc wrote our next publish with packet id `pkid` (0 = QoS 0, done).
    pub fn on_sent(&mut self, ctx: &BridgeContext, pkid: u16) {
        let Some((sequence, entry)) = self.unsent.pop_front() else {
            return;
        };
        if pkid == 0 {
            if let Some(entry) = entry {
                ctx.delivered(entry);
            }
        } else {
            self.unacked.insert(pkid, (sequence, entry));
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
        let waiting = self
            .outbox
            .into_iter()
            .filter_map(|pending| pending.publish);
        let mut entries: Vec<(u64, Outbound)> = self
            .unacked
            .into_values()
            .chain(self.unsent)
            .chain(waiting)
            .filter_map(|(sequence, entry)| entry.map(|entry| (sequence, entry)))
            .collect();
        entries.sort_unstable_by_key(|(sequence, _)| *sequence);
        ctx.outbound
            .requeue_front(entries.into_iter().map(|(_, entry)| entry).collect());
    }
}

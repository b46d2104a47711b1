//! Hub -> remote broker: publish queued messages and release each from the hub only when
//! the broker has it (written for QoS 0, PUBACK for QoS 1). Unconfirmed messages go back
//! to the front of the queue when the connection ends, so they are sent again, in order.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use switchyard_api::{envelope, BridgeContext, BridgeError, DropReason, Format, Outbound, QoS};

use super::client::RemoteClient;

/// Messages handed to the client, by stage.
pub struct Egress {
    format: Format,
    max_inflight: usize,
    /// Handed to rumqttc, waiting to learn their packet id, in order (`None`: the bridge's
    /// own state message).
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
            unsent: VecDeque::new(),
            unacked: HashMap::new(),
            next_sequence: 0,
        }
    }

    /// How many more messages may be handed to the client now.
    pub fn room(&self) -> usize {
        self.max_inflight
            .saturating_sub(self.unsent.len() + self.unacked.len())
    }

    /// Publishes one queued message under its remote name.
    pub async fn send(
        &mut self,
        ctx: &BridgeContext,
        client: &dyn RemoteClient,
        entry: Outbound,
    ) -> Result<(), BridgeError> {
        let Some(name) = ctx.remote_name(entry.rule, &entry.message.topic) else {
            // The router only queues messages a rule passes; nothing to send.
            ctx.delivered(entry);
            return Ok(());
        };
        let payload = match self.format {
            Format::Json => {
                let mut buffer = Vec::new();
                envelope::encode(&entry.message, &name, &mut buffer);
                Bytes::from(buffer)
            }
            _ => entry.message.payload.clone(),
        };
        let headers = entry.message.outgoing_headers(&ctx.hub_name);
        let (qos, retain) = (entry.qos, entry.message.retain);
        self.track(Some(entry));
        client.publish(name, payload, qos, retain, headers).await
    }

    /// Publishes the bridge's retained state message (`1` or `0`).
    pub async fn send_state(
        &mut self,
        client: &dyn RemoteClient,
        topic: &str,
        up: bool,
    ) -> Result<(), BridgeError> {
        self.track(None);
        let payload = Bytes::from_static(if up { b"1" } else { b"0" });
        client
            .publish(
                topic.to_owned(),
                payload,
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await
    }

    fn track(&mut self, entry: Option<Outbound>) {
        self.unsent.push_back((self.next_sequence, entry));
        self.next_sequence += 1;
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
        let mut entries: Vec<(u64, Outbound)> = self
            .unacked
            .into_values()
            .chain(self.unsent)
            .filter_map(|(sequence, entry)| entry.map(|entry| (sequence, entry)))
            .collect();
        entries.sort_unstable_by_key(|(sequence, _)| *sequence);
        ctx.outbound
            .requeue_front(entries.into_iter().map(|(_, entry)| entry).collect());
    }
}

//! What server bridges (`mqtt-server`, `websocket-server`) share: their clients'
//! subscriptions, one bounded send queue per client, and the fan-out from the bridge's
//! outbound queue to those clients.
//!
//! A client's subscriptions are written in the bridge's remote namespace (what the client
//! sees after the rule's prefixes); the fan-out maps each hub topic through the `out` rule
//! that passed it and matches the resulting name against a trie of every subscription.
//! A client whose queue is full loses the message (counted as `lagged`) or, with
//! `slow_client = "disconnect"`, is disconnected; nobody else waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access::AccessPolicy;
use crate::bridge::BridgeContext;
use crate::message::{Message, QoS};
use crate::telemetry::{BridgeMetrics, DropReason};
use crate::topic::TopicFilter;
use crate::trie::FilterTrie;

/// Identifies one client connection of a server bridge (never 0).
pub type ConnectionId = u64;

/// What happens to a client whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowClient {
    /// Drop the message for that client (counted as `lagged`).
    #[default]
    Drop,
    /// Drop the message and disconnect the client, which may reconnect and resubscribe.
    Disconnect,
}

/// One message on its way to one client: what every client shares, and this client's
/// QoS. Its fields are reached through [`SharedDelivery`] (`delivery.message`,
/// `delivery.name`). Kept to 16 bytes: every client queue reserves room for 32 of these
/// as soon as it exists, idle or not.
#[derive(Debug, Clone)]
pub struct ClientMessage {
    /// The part that is the same for every client the message goes to.
    pub shared: Arc<SharedDelivery>,
    /// The QoS for this client: the lowest of the message's, the rule's and the subscription's.
    pub qos: QoS,
}

/// A message as every client of one bridge receives it.
#[derive(Debug)]
pub struct SharedDelivery {
    /// The message.
    pub message: Arc<Message>,
    /// The topic as the clients see it.
    pub name: Arc<str>,
    /// A rendering of the message that is the same for every client of the bridge (the
    /// WebSocket JSON envelope), made once by the first writer that needs it.
    pub rendered: OnceLock<Bytes>,
}

impl ClientMessage {
    /// A delivery of `message`, seen as `name`, at `qos`, shared by no other client.
    pub fn new(message: Arc<Message>, name: Arc<str>, qos: QoS) -> Self {
        let shared = SharedDelivery {
            message,
            name,
            rendered: OnceLock::new(),
        };
        Self {
            shared: Arc::new(shared),
            qos,
        }
    }
}

impl std::ops::Deref for ClientMessage {
    type Target = SharedDelivery;

    fn deref(&self) -> &SharedDelivery {
        &self.shared
    }
}

/// Options of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Highest QoS the client asked for.
    pub qos: QoS,
    /// MQTT v5 no-local: do not send the client its own messages.
    pub no_local: bool,
    /// The ACL lets the client read only some of the topics the filter matches: check
    /// each message (see [`ClientRegistry::set_reader`]).
    pub check_read: bool,
}

/// Who a client is, for the ACL's read checks at delivery.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The bridge's access policy.
    pub policy: Arc<AccessPolicy>,
    /// The client's user (`None` = anonymous).
    pub user: Option<Arc<str>>,
}

impl Reader {
    /// Whether the client may receive a message seen as `name`.
    pub fn may_read(&self, name: &str) -> bool {
        self.policy.may_read(self.user.as_deref(), name)
    }
}

/// What a connection task holds: its id, its queue, and the signal to disconnect.
#[derive(Debug)]
pub struct ClientHandle {
    /// This connection's id.
    pub id: ConnectionId,
    /// Messages to write to the client.
    pub messages: mpsc::Receiver<ClientMessage>,
    /// Cancelled when the registry wants the client gone (slow client).
    pub kicked: CancellationToken,
}

#[derive(Debug)]
struct Client {
    sender: mpsc::Sender<ClientMessage>,
    kicked: CancellationToken,
    subscriptions: HashMap<TopicFilter, SubscriptionOptions>,
    /// Who the client is, when subscriptions with `check_read` need it.
    reader: Option<Reader>,
}

impl Client {
    /// Whether a subscription with `options` passes a message seen as `name`.
    fn may_receive(&self, options: &SubscriptionOptions, name: &str) -> bool {
        !options.check_read
            || self
                .reader
                .as_ref()
                .is_some_and(|reader| reader.may_read(name))
    }
}

#[derive(Debug, Default)]
struct Registry {
    trie: FilterTrie<(ConnectionId, SubscriptionOptions)>,
    clients: HashMap<ConnectionId, Client>,
}

/// The clients of one server bridge.
#[derive(Debug)]
pub struct ClientRegistry {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    queue_capacity: usize,
    slow_client: SlowClient,
    metrics: Arc<BridgeMetrics>,
}

/// Most outbound entries taken from the bridge's queue per fan-out round.
const FAN_OUT_BATCH: usize = 256;

impl ClientRegistry {
    /// A registry whose clients each get a queue of `queue_capacity` messages.
    pub fn new(
        queue_capacity: usize,
        slow_client: SlowClient,
        metrics: Arc<BridgeMetrics>,
    ) -> Self {
        Self {
            registry: RwLock::new(Registry::default()),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            slow_client,
            metrics,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // Every critical section leaves the registry consistent, so poisoning is harmless.
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a client with no subscriptions.
    pub fn register(&self) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, messages) = mpsc::channel(self.queue_capacity);
        let kicked = CancellationToken::new();
        let client = Client {
            sender,
            kicked: kicked.clone(),
            subscriptions: HashMap::new(),
            reader: None,
        };
        self.write().clients.insert(id, client);
        ClientHandle {
            id,
            messages,
            kicked,
        }
    }

    /// Records who the client is, for subscriptions whose messages are checked one by one.
    pub fn set_reader(&self, id: ConnectionId, reader: Reader) {
        if let Some(client) = self.write().clients.get_mut(&id) {
            client.reader = Some(reader);
        }
    }

    /// Subscribes a client (replacing the options of an existing identical filter).
    pub fn subscribe(&self, id: ConnectionId, filter: &TopicFilter, options: SubscriptionOptions) {
        let mut registry = self.write();
        let Registry { trie, clients } = &mut *registry;
        let Some(client) = clients.get_mut(&id) else {
            return;
        };
        if let Some(old) = client.subscriptions.insert(filter.clone(), options) {
            trie.remove(filter.as_str(), &(id, old));
        }
        trie.insert(filter.as_str(), (id, options));
    }

    /// Removes one subscription; returns whether the client had it.
    pub fn unsubscribe(&self, id: ConnectionId, filter: &TopicFilter) -> bool {
        let mut registry = self.write();
        let Registry { trie, clients } = &mut *registry;
        let Some(old) = clients
            .get_mut(&id)
            .and_then(|client| client.subscriptions.remove(filter))
        else {
            return false;
        };
        trie.remove(filter.as_str(), &(id, old))
    }

    /// Removes a client and all its subscriptions.
    pub fn remove(&self, id: ConnectionId) {
        let mut registry = self.write();
        let Registry { trie, clients } = &mut *registry;
        if let Some(client) = clients.remove(&id) {
            for (filter, options) in client.subscriptions {
                trie.remove(filter.as_str(), &(id, options));
            }
        }
    }

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.read().clients.len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `message` (seen by clients as `name`) for every subscribed client, at most
    /// once per client with the highest QoS of its matching subscriptions, capped by
    /// `max_qos`. `from_self` says the message entered the hub through this bridge.
    pub fn fan_out(&self, message: &Arc<Message>, name: &Arc<str>, max_qos: QoS, from_self: bool) {
        let registry = self.read();
        let mut matches: Vec<(ConnectionId, QoS)> = Vec::new();
        registry.trie.for_each_match(name, |(id, options)| {
            if options.no_local && from_self && message.sender == *id {
                return;
            }
            if options.check_read
                && !registry
                    .clients
                    .get(id)
                    .is_some_and(|client| client.may_receive(options, name))
            {
                return;
            }
            matches.push((*id, options.qos.min(max_qos)));
        });
        // One delivery per client, with the best QoS among its matching filters.
        matches.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        matches.dedup_by_key(|(id, _)| *id);
        let shared = Arc::new(SharedDelivery {
            message: Arc::clone(message),
            name: Arc::clone(name),
            rendered: OnceLock::new(),
        });
        for (id, qos) in matches {
            let Some(client) = registry.clients.get(&id) else {
                continue;
            };
            let delivery = ClientMessage {
                shared: Arc::clone(&shared),
                qos,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = client.sender.try_send(delivery) {
                self.metrics.dropped(
                    DropReason::Lagged,
                    "a client's send queue is full (the client reads too slowly)",
                );
                if self.slow_client == SlowClient::Disconnect {
                    client.kicked.cancel();
                }
            }
        }
    }

    /// Moves messages from the bridge's outbound queue to the clients until shutdown or
    /// until the queue closes. Each entry counts as delivered once handed to the clients.
    pub async fn run_fan_out(&self, ctx: &BridgeContext) {
        let mut batch = Vec::with_capacity(FAN_OUT_BATCH);
        loop {
            let more = tokio::select! {
                more = ctx.outbound.pop_batch(&mut batch, FAN_OUT_BATCH) => more,
                () = ctx.shutdown.cancelled() => false,
            };
            let now = Instant::now();
            for entry in batch.drain(..) {
                if let Some(name) = remote_name(ctx, entry.rule, &entry.message) {
                    let from_self = entry.message.origin == ctx.id;
                    self.fan_out(&entry.message, &name, entry.qos, from_self);
                }
                ctx.delivered_at(entry, now);
            }
            if !more {
                return;
            }
        }
    }

    /// The retained messages a new subscription of client `id` with `filter` should
    /// receive now (those the client may read).
    pub fn retained_for(
        &self,
        ctx: &BridgeContext,
        id: ConnectionId,
        filter: &TopicFilter,
        max_qos: QoS,
    ) -> Vec<ClientMessage> {
        let reader = self
            .read()
            .clients
            .get(&id)
            .and_then(|client| client.reader.clone());
        ctx.retained()
            .into_iter()
            .filter_map(|(message, rule)| {
                let name = remote_name(ctx, rule, &message)?;
                let qos = message.qos.min(max_qos);
                let readable = reader.as_ref().is_none_or(|reader| reader.may_read(&name));
                (readable && filter.matches(&name)).then(|| ClientMessage::new(message, name, qos))
            })
            .collect()
    }
}

/// The name a hub message has on this bridge's side, through `out` rule `rule`.
fn remote_name(ctx: &BridgeContext, rule: usize, message: &Message) -> Option<Arc<str>> {
    let rule = ctx.rules.get(rule)?;
    if rule.local_prefix.is_empty() && rule.remote_prefix.is_empty() && rule.naming.separator == '/'
    {
        return Some(Arc::from(message.topic.as_str()));
    }
    rule.to_remote(&message.topic).map(Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Topic;

    fn message(topic: &str, sender: u64) -> Arc<Message> {
        let mut message = Message::new(Topic::new(topic).unwrap(), Bytes::from_static(b"x"));
        message.qos = QoS::AtLeastOnce;
        message.sender = sender;
        Arc::new(message)
    }

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::new(text).unwrap()
    }

    #[test]
    fn a_queued_message_stays_small() {
        // Each client queue allocates room for 32 of them up front (tokio's mpsc blocks).
        assert_eq!(std::mem::size_of::<ClientMessage>(), 16);
    }

    #[test]
    fn each_client_gets_one_copy_at_its_best_qos() {
        let registry = ClientRegistry::new(8, SlowClient::Drop, Arc::new(BridgeMetrics::new("t")));
        let mut client = registry.register();
        let qos0 = SubscriptionOptions::default();
        let qos1 = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            check_read: false,
        };
        registry.subscribe(client.id, &filter("a/#"), qos0);
        registry.subscribe(client.id, &filter("a/+"), qos1);
        let message = message("a/b", 0);
        registry.fan_out(&message, &Arc::from("a/b"), QoS::AtLeastOnce, false);
        let delivered = client.messages.try_recv().expect("one copy");
        assert_eq!(delivered.qos, QoS::AtLeastOnce);
        assert!(client.messages.try_recv().is_err(), "only one copy");
        assert!(registry.unsubscribe(client.id, &filter("a/+")));
        registry.fan_out(&message, &Arc::from("a/b"), QoS::AtLeastOnce, false);
        assert_eq!(client.messages.try_recv().unwrap().qos, QoS::AtMostOnce);
    }

    #[test]
    fn no_local_skips_the_sender_only() {
        let registry = ClientRegistry::new(8, SlowClient::Drop, Arc::new(BridgeMetrics::new("t")));
        let mut sender = registry.register();
        let mut other = registry.register();
        let options = SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: true,
            check_read: false,
        };
        registry.subscribe(sender.id, &filter("#"), options);
        registry.subscribe(other.id, &filter("#"), options);
        registry.fan_out(
            &message("t", sender.id),
            &Arc::from("t"),
            QoS::AtMostOnce,
            true,
        );
        assert!(sender.messages.try_recv().is_err());
        assert!(other.messages.try_recv().is_ok());
    }

    #[test]
    fn partial_read_grants_are_checked_per_message() {
        use crate::access::AccessSettings;
        use crate::acl::{AclAccess, AclRuleConfig};
        let rules = [AclRuleConfig {
            user: "alice".into(),
            pattern: "a/#".into(),
            access: AclAccess::Read,
        }];
        let policy = AccessPolicy::load(AccessSettings {
            bridge: "t",
            users_file: "",
            tokens_file: "",
            allow_anonymous: true,
            acl: Some(&rules),
        })
        .unwrap();
        let registry = ClientRegistry::new(8, SlowClient::Drop, Arc::new(BridgeMetrics::new("t")));
        let mut client = registry.register();
        registry.set_reader(
            client.id,
            Reader {
                policy: Arc::new(policy),
                user: Some(Arc::from("alice")),
            },
        );
        let options = SubscriptionOptions {
            check_read: true,
            ..SubscriptionOptions::default()
        };
        registry.subscribe(client.id, &filter("#"), options);
        registry.fan_out(
            &message("b/x", 0),
            &Arc::from("b/x"),
            QoS::AtMostOnce,
            false,
        );
        assert!(client.messages.try_recv().is_err(), "b/x is not readable");
        registry.fan_out(
            &message("a/x", 0),
            &Arc::from("a/x"),
            QoS::AtMostOnce,
            false,
        );
        assert_eq!(&*client.messages.try_recv().unwrap().name, "a/x");
    }

    #[test]
    fn a_full_client_is_counted_and_kicked_when_asked() {
        let metrics = Arc::new(BridgeMetrics::new("t"));
        let registry = ClientRegistry::new(1, SlowClient::Disconnect, Arc::clone(&metrics));
        let client = registry.register();
        registry.subscribe(client.id, &filter("#"), SubscriptionOptions::default());
        for _ in 0..3 {
            registry.fan_out(&message("t", 0), &Arc::from("t"), QoS::AtMostOnce, false);
        }
        assert_eq!(metrics.snapshot().dropped[DropReason::Lagged as usize], 2);
        assert!(client.kicked.is_cancelled());
        registry.remove(client.id);
        assert!(registry.is_empty());
    }
}

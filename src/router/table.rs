//! Which bridges a hub topic goes to: a trie of every bridge's `out` rules.

use std::sync::Arc;

use switchyard_api::{BridgeId, FilterTrie, QoS, RuleSet};

/// One destination of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The destination bridge.
    pub bridge: BridgeId,
    /// Its rule that passed the message.
    pub rule: usize,
    /// The message's QoS capped by that rule.
    pub qos: QoS,
}

struct TableBridge {
    rules: Arc<RuleSet>,
    /// Server bridges may send a message back out to their other clients.
    is_server: bool,
}

/// The routing table, fixed for the life of a configuration.
pub struct RouteTable {
    trie: FilterTrie<(BridgeId, usize)>,
    bridges: Vec<TableBridge>,
}

impl RouteTable {
    /// Indexes the `out` rules of every bridge (given in bridge id order with whether
    /// each is a server bridge).
    pub fn new(bridges: impl IntoIterator<Item = (Arc<RuleSet>, bool)>) -> Self {
        let mut trie = FilterTrie::new();
        let bridges: Vec<TableBridge> = bridges
            .into_iter()
            .map(|(rules, is_server)| TableBridge { rules, is_server })
            .collect();
        for (bridge, entry) in bridges.iter().enumerate() {
            for (index, rule) in entry.rules.rules().iter().enumerate() {
                if rule.direction.is_out() {
                    trie.insert(&rule.hub_filter(), (bridge, index));
                }
            }
        }
        Self { trie, bridges }
    }

    /// Fills `out` with the destinations of `topic` (one per bridge, the rule giving the
    /// highest QoS, the first such rule on ties). Returns whether the origin bridge was
    /// left out because a message never goes back where it came from.
    pub fn destinations(
        &self,
        origin: Option<BridgeId>,
        topic: &str,
        qos: QoS,
        out: &mut Vec<Destination>,
    ) -> bool {
        let mut looped = false;
        self.trie.for_each_match(topic, |&(bridge, rule_index)| {
            let entry = &self.bridges[bridge];
            let Some(rule) = entry.rules.get(rule_index) else {
                return;
            };
            if !rule.matches_hub_topic(topic) {
                return;
            }
            if origin == Some(bridge) && !entry.is_server {
                looped = true;
                return;
            }
            let candidate = Destination {
                bridge,
                rule: rule_index,
                qos: qos.min(rule.qos),
            };
            match out.iter_mut().find(|d| d.bridge == bridge) {
                Some(existing) => {
                    let better = candidate.qos > existing.qos
                        || (candidate.qos == existing.qos && candidate.rule < existing.rule);
                    if better {
                        *existing = candidate;
                    }
                }
                None => out.push(candidate),
            }
        });
        out.sort_unstable_by_key(|d| d.bridge);
        looped
    }

    /// The `out` rule through which `bridge` may send a retained message on `topic` that
    /// came from `origin`.
    pub fn out_rule(&self, origin: BridgeId, bridge: BridgeId, topic: &str) -> Option<usize> {
        let entry = self.bridges.get(bridge)?;
        if origin == bridge && !entry.is_server {
            return None;
        }
        entry
            .rules
            .rules()
            .iter()
            .position(|rule| rule.direction.is_out() && rule.matches_hub_topic(topic))
    }
}

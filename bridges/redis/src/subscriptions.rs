//! The pub/sub subscriptions of a bridge, and delivering each message once.
//!
//! Redis sends a message once per subscription that covers its channel: a `message` for a
//! `SUBSCRIBE`d channel and one `pmessage` for every matching `PSUBSCRIBE` pattern. The
//! bridge subscribes to the distinct subscriptions of its `in` rules, in rule order, and
//! accepts a delivery only when it came through the *first* of them that covers the
//! channel (its owner); every other copy is ignored. Redis sends all copies of a message
//! together, so this holds for every message without remembering any.
//!
//! The patterns are those of [`redis_subscription`]: a literal prefix, glob-escaped, then
//! `*`. Matching one needs no general glob engine: the channel must start with the
//! unescaped prefix.

use switchyard_api::subscription::{redis_subscription, RedisSubscription};
use switchyard_api::RuleSet;

/// Through which subscription a delivery came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via<'a> {
    /// A `message`: the channel itself was subscribed.
    Channel,
    /// A `pmessage` for this pattern.
    Pattern(&'a [u8]),
}

/// One subscription, with what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    subscription: RedisSubscription,
    /// The channel (for `SUBSCRIBE`) or the pattern's literal prefix, unescaped.
    literal: Vec<u8>,
}

impl Entry {
    fn covers(&self, channel: &[u8]) -> bool {
        match self.subscription {
            RedisSubscription::Channel(_) => self.literal == channel,
            RedisSubscription::Pattern(_) => channel.starts_with(&self.literal),
        }
    }

    fn is(&self, via: Via<'_>) -> bool {
        match (&self.subscription, via) {
            (RedisSubscription::Channel(_), Via::Channel) => true,
            (RedisSubscription::Pattern(pattern), Via::Pattern(through)) => {
                pattern.as_bytes() == through
            }
            _ => false,
        }
    }
}

/// The distinct subscriptions of a bridge's `in` rules, in rule order.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    entries: Vec<Entry>,
}

impl Subscriptions {
    /// The subscriptions the `in` rules of `rules` ask for.
    pub fn of(rules: &RuleSet) -> Self {
        let mut entries: Vec<Entry> = Vec::new();
        for rule in rules.inbound_rules() {
            let subscription = redis_subscription(rule);
            if entries
                .iter()
                .any(|entry| entry.subscription == subscription)
            {
                continue;
            }
            let literal = match &subscription {
                RedisSubscription::Channel(channel) => channel.as_bytes().to_vec(),
                RedisSubscription::Pattern(pattern) => unescaped_prefix(pattern),
            };
            entries.push(Entry {
                subscription,
                literal,
            });
        }
        Self { entries }
    }

    /// Whether there is nothing to subscribe to.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The channels to `SUBSCRIBE` to.
    pub fn channels(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.subscription {
                RedisSubscription::Channel(channel) => Some(channel.as_str()),
                RedisSubscription::Pattern(_) => None,
            })
            .collect()
    }

    /// The patterns to `PSUBSCRIBE` to.
    pub fn patterns(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.subscription {
                RedisSubscription::Pattern(pattern) => Some(pattern.as_str()),
                RedisSubscription::Channel(_) => None,
            })
            .collect()
    }

    /// Whether a delivery on `channel` that came `via` a subscription is the one copy to
    /// take: `via` is the first subscription covering the channel.
    pub fn accepts(&self, channel: &[u8], via: Via<'_>) -> bool {
        self.entries
            .iter()
            .find(|entry| entry.covers(channel))
            .is_some_and(|owner| owner.is(via))
    }
}

/// The literal prefix of a pattern made of an escaped prefix and a final `*`.
fn unescaped_prefix(pattern: &str) -> Vec<u8> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern).as_bytes();
    let mut literal = Vec::with_capacity(body.len());
    let mut escaped = false;
    for &byte in body {
        if byte == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        literal.push(byte);
    }
    literal
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{Direction, Naming, QoS, Rule, RuleConfig};

    fn rules(rules: &[(&str, &str)]) -> RuleSet {
        RuleSet::new(
            rules
                .iter()
                .map(|(pattern, remote_prefix)| {
                    let config = RuleConfig {
                        pattern: (*pattern).into(),
                        direction: Direction::In,
                        qos: QoS::AtMostOnce,
                        local_prefix: String::new(),
                        remote_prefix: (*remote_prefix).into(),
                    };
                    Rule::compile(&config, Naming::DOTTED).expect("valid rule")
                })
                .collect(),
        )
    }

    /// How many of the copies Redis would send for `channel` the bridge takes.
    fn copies_taken(subscriptions: &Subscriptions, channel: &str) -> usize {
        let channel = channel.as_bytes();
        let mut taken = 0;
        for entry in &subscriptions.entries {
            if !entry.covers(channel) {
                continue;
            }
            let via = match &entry.subscription {
                RedisSubscription::Channel(_) => Via::Channel,
                RedisSubscription::Pattern(pattern) => Via::Pattern(pattern.as_bytes()),
            };
            taken += usize::from(subscriptions.accepts(channel, via));
        }
        taken
    }

    #[test]
    fn overlapping_subscriptions_deliver_once() {
        let subscriptions = rules(&[
            ("sensors/#", ""),
            ("sensors/+/temp", ""),
            ("sensors/hall/temp", ""),
            ("#", ""),
            ("sensors/#", ""),
        ]);
        let subscriptions = Subscriptions::of(&subscriptions);
        assert_eq!(subscriptions.channels(), ["sensors.hall.temp"]);
        assert_eq!(subscriptions.patterns(), ["sensors*", "sensors.*", "*"]);
        for channel in ["sensors.hall.temp", "sensors.x", "sensorsx", "other", ""] {
            assert_eq!(copies_taken(&subscriptions, channel), 1, "{channel:?}");
        }
        assert!(subscriptions.accepts(b"sensors.hall.temp", Via::Pattern(b"sensors*")));
        assert!(!subscriptions.accepts(b"sensors.hall.temp", Via::Channel));
        assert!(!subscriptions.accepts(b"sensors.x", Via::Pattern(b"*")));
        assert!(!subscriptions.accepts(b"sensors.x", Via::Pattern(b"unknown*")));
    }

    #[test]
    fn glob_characters_are_literal() {
        let subscriptions = Subscriptions::of(&rules(&[("x/#", "news*[1]?\\"), ("a*b", "")]));
        assert_eq!(subscriptions.patterns(), ["news\\*\\[1\\]\\?\\\\x*"]);
        assert_eq!(subscriptions.channels(), ["a*b"]);
        let pattern = b"news\\*\\[1\\]\\?\\\\x*";
        assert!(subscriptions.accepts(b"news*[1]?\\x.y", Via::Pattern(pattern)));
        assert!(!subscriptions.accepts(b"newsA[1]?\\x.y", Via::Pattern(pattern)));
        assert!(subscriptions.accepts(b"a*b", Via::Channel));
        assert!(!subscriptions.accepts(b"axb", Via::Channel));
    }
}

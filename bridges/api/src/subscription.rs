//! The subscription a remote system is asked for, derived from an `in` rule.
//!
//! Each protocol can only express part of MQTT's filter language, so these are coarse where
//! they must be and the hub re-filters every message exactly with [`crate::Rule::to_hub`].

use crate::rule::{covering_filter, Rule};
use crate::topic::LEVEL_SEPARATOR;

/// The MQTT filter to subscribe to on a remote broker: `remote_prefix` + pattern.
pub fn mqtt_filter(rule: &Rule) -> String {
    covering_filter(&rule.remote_prefix, rule.filter.as_str(), LEVEL_SEPARATOR)
}

/// The AMQP topic-exchange binding key: `+` becomes `*`, `#` stays, literal levels are
/// spelled with `.` and escaped. A prefix that ends inside a word widens to its complete
/// words plus `#`.
pub fn amqp_binding_key(rule: &Rule) -> String {
    let separator = rule.naming.separator;
    let prefix = &rule.remote_prefix;
    if !prefix.is_empty() && !prefix.ends_with(separator) {
        return covering_filter(prefix, "#", separator);
    }
    let mut key = prefix.clone();
    for (index, level) in rule.filter.as_str().split(LEVEL_SEPARATOR).enumerate() {
        if index > 0 {
            key.push(separator);
        }
        match level {
            "+" => key.push('*'),
            "#" => key.push('#'),
            literal => rule.naming.level_to_remote(literal, &mut key),
        }
    }
    key
}

/// The byte prefix a ZeroMQ SUB socket subscribes to: the remote prefix plus the literal
/// levels before the first wildcard (with the separator after them only when `+` follows,
/// since `a/#` also matches `a`).
pub fn byte_prefix(rule: &Rule) -> String {
    let mut prefix = rule.remote_prefix.clone();
    let mut literal_levels = 0;
    for level in rule.filter.as_str().split(LEVEL_SEPARATOR) {
        match level {
            "+" => {
                if literal_levels > 0 {
                    prefix.push(rule.naming.separator);
                }
                break;
            }
            "#" => break,
            literal => {
                if literal_levels > 0 {
                    prefix.push(rule.naming.separator);
                }
                rule.naming.level_to_remote(literal, &mut prefix);
                literal_levels += 1;
            }
        }
    }
    prefix
}

/// A Redis pub/sub subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisSubscription {
    /// SUBSCRIBE to one literal channel.
    Channel(String),
    /// PSUBSCRIBE to a glob pattern.
    Pattern(String),
}

impl std::fmt::Display for RedisSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisSubscription::Channel(channel) => write!(f, "SUBSCRIBE {channel}"),
            RedisSubscription::Pattern(pattern) => write!(f, "PSUBSCRIBE {pattern}"),
        }
    }
}

/// SUBSCRIBE for a literal rule, otherwise PSUBSCRIBE to the glob-escaped literal prefix
/// followed by `*`.
pub fn redis_subscription(rule: &Rule) -> RedisSubscription {
    if rule.filter.is_literal() {
        let mut channel = rule.remote_prefix.clone();
        rule.naming.to_remote(rule.filter.as_str(), &mut channel);
        return RedisSubscription::Channel(channel);
    }
    let mut pattern = String::new();
    for c in byte_prefix(rule).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    RedisSubscription::Pattern(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::QoS;
    use crate::names::Naming;
    use crate::rule::{Direction, RuleConfig};

    fn rule(pattern: &str, remote: &str, naming: Naming) -> Rule {
        let config = RuleConfig {
            pattern: pattern.into(),
            direction: Direction::In,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: remote.into(),
        };
        Rule::compile(&config, naming).expect("valid rule")
    }

    #[test]
    fn each_protocol_gets_its_subscription() {
        // (pattern, remote_prefix, mqtt, amqp, zmq, redis)
        let cases: &[(&str, &str, &str, &str, &str, &str)] = &[
            ("#", "", "#", "#", "", "PSUBSCRIBE *"),
            (
                "#",
                "org.fedoraproject.prod.",
                "#",
                "org.fedoraproject.prod.#",
                "org.fedoraproject.prod.",
                "PSUBSCRIBE org.fedoraproject.prod.*",
            ),
            ("git/+", "", "git/+", "git.*", "git.", "PSUBSCRIBE git.*"),
            ("git/#", "", "git/#", "git.#", "git", "PSUBSCRIBE git*"),
            (
                "+/important",
                "",
                "+/important",
                "*.important",
                "",
                "PSUBSCRIBE *",
            ),
            ("a/b", "x.", "a/b", "x.a.b", "x.a.b", "SUBSCRIBE x.a.b"),
            (
                "a.b/+",
                "",
                "a.b/+",
                "a%2Eb.*",
                "a%2Eb.",
                "PSUBSCRIBE a%2Eb.*",
            ),
            (
                "x/#",
                "news*[1]",
                "x/#",
                "#",
                "news*[1]x",
                "PSUBSCRIBE news\\*\\[1\\]x*",
            ),
            (
                "+",
                "org.fed",
                "+",
                "org.#",
                "org.fed",
                "PSUBSCRIBE org.fed*",
            ),
        ];
        for (pattern, remote, mqtt, amqp, zmq, redis) in cases {
            let dotted = rule(pattern, remote, Naming::DOTTED);
            assert_eq!(
                amqp_binding_key(&dotted),
                *amqp,
                "amqp for {pattern:?} {remote:?}"
            );
            assert_eq!(byte_prefix(&dotted), *zmq, "zmq for {pattern:?} {remote:?}");
            assert_eq!(
                redis_subscription(&dotted).to_string(),
                *redis,
                "redis for {pattern:?} {remote:?}"
            );
            let slashed = rule(pattern, "", Naming::MQTT);
            assert_eq!(mqtt_filter(&slashed), *mqtt, "mqtt for {pattern:?}");
        }
        assert_eq!(
            mqtt_filter(&rule("+/important", "site/", Naming::MQTT)),
            "site/+/important"
        );
    }
}

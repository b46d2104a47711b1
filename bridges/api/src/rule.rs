//! Topic rules: one `topics` entry of a bridge, as Mosquitto's bridge `topic` line
//! (`pattern direction qos local_prefix remote_prefix`), and the name mapping it implies.

use serde::Deserialize;
use thiserror::Error;

use crate::message::QoS;
use crate::names::Naming;
use crate::topic::{validate_topic_name, Topic, TopicError, TopicFilter, LEVEL_SEPARATOR};

/// Which way messages flow through a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Remote to hub.
    In,
    /// Hub to remote (the default, as in Mosquitto).
    #[default]
    Out,
    /// Both ways.
    Both,
}

impl Direction {
    /// Whether remote messages enter the hub through this rule.
    pub fn is_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    /// Whether hub messages leave through this rule.
    pub fn is_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// The word used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

/// A rule as written in the configuration (`[[bridges.NAME.topics]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// MQTT filter over the part of the topic after the prefixes.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// `in`, `out` or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// The highest QoS messages keep through this rule (0 or 1).
    #[serde(default)]
    pub qos: QoS,
    /// Hub-side prefix, MQTT form (`fedora/prod/`).
    #[serde(default)]
    pub local_prefix: String,
    /// Remote-side prefix in the remote's spelling (`org.fedoraproject.prod.`).
    #[serde(default)]
    pub remote_prefix: String,
}

fn default_pattern() -> String {
    "#".to_owned()
}

/// Why a rule is invalid; the hub adds the key path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The pattern is not a valid MQTT filter.
    #[error("pattern {pattern:?} is not a valid MQTT filter: {source}")]
    Pattern {
        /// The configured pattern.
        pattern: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// The local prefix contains wildcards or NUL.
    #[error("local_prefix {prefix:?} must be a plain topic prefix: {source}")]
    LocalPrefix {
        /// The configured prefix.
        prefix: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// The local prefix starts with `$` and ends inside its first level: no filter covers
    /// such topics (a wildcard first level never matches a `$` topic), so the router could
    /// not find the rule.
    #[error("local_prefix {0:?} starts with $, so it must include its whole first level, e.g. \"$SYS/\"")]
    DollarLevel(String),
    /// The same for the remote prefix of an MQTT remote: the bridge would subscribe to a
    /// wildcard first level, which the broker never matches against `$` topics.
    #[error("remote_prefix {0:?} starts with $, so it must include its whole first level, e.g. \"$SYS/\"")]
    RemoteDollarLevel(String),
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Filter over the topic after the prefix.
    pub filter: TopicFilter,
    /// Which way it lets messages through.
    pub direction: Direction,
    /// The highest QoS through this rule.
    pub qos: QoS,
    /// Hub-side prefix.
    pub local_prefix: String,
    /// Remote-side prefix.
    pub remote_prefix: String,
    /// How the remote side spells names.
    pub naming: Naming,
}

impl Rule {
    /// Validates a configured rule for a remote that names things per `naming`.
    pub fn compile(config: &RuleConfig, naming: Naming) -> Result<Rule, RuleError> {
        let filter = TopicFilter::new(&config.pattern).map_err(|source| RuleError::Pattern {
            pattern: config.pattern.clone(),
            source,
        })?;
        if !config.local_prefix.is_empty() {
            validate_topic_name(&config.local_prefix).map_err(|source| RuleError::LocalPrefix {
                prefix: config.local_prefix.clone(),
                source,
            })?;
            if config.local_prefix.starts_with('$')
                && !config.local_prefix.contains(LEVEL_SEPARATOR)
            {
                return Err(RuleError::DollarLevel(config.local_prefix.clone()));
            }
        }
        if naming.separator == LEVEL_SEPARATOR
            && config.remote_prefix.starts_with('$')
            && !config.remote_prefix.contains(LEVEL_SEPARATOR)
        {
            return Err(RuleError::RemoteDollarLevel(config.remote_prefix.clone()));
        }
        Ok(Rule {
            filter,
            direction: config.direction,
            qos: config.qos,
            local_prefix: config.local_prefix.clone(),
            remote_prefix: config.remote_prefix.clone(),
            naming,
        })
    }

    /// Maps a remote name to a hub topic when it passes this rule (ignoring direction).
    pub fn to_hub(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(self.remote_prefix.as_str())?;
        let mut topic = String::with_capacity(self.local_prefix.len() + rest.len() + 8);
        topic.push_str(&self.local_prefix);
        self.naming.to_hub(rest, &mut topic);
        self.filter
            .matches(&topic[self.local_prefix.len()..])
            .then_some(topic)
    }

    /// Whether a hub topic passes this rule outwards (ignoring direction); no allocation.
    pub fn matches_hub_topic(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.local_prefix.as_str())
            .is_some_and(|rest| self.filter.matches(rest))
    }

    /// Maps a hub topic to the remote name when it passes this rule (ignoring direction).
    pub fn to_remote(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(self.local_prefix.as_str())?;
        if !self.filter.matches(rest) {
            return None;
        }
        let mut name = String::with_capacity(self.remote_prefix.len() + rest.len() + 8);
        name.push_str(&self.remote_prefix);
        self.naming.to_remote(rest, &mut name);
        Some(name)
    }

    /// A filter over hub topics that covers every topic this rule passes outwards; the
    /// router indexes it and then checks [`Rule::matches_hub_topic`] exactly.
    pub fn hub_filter(&self) -> String {
        covering_filter(&self.local_prefix, self.filter.as_str(), LEVEL_SEPARATOR)
    }
}

/// A filter that covers `prefix` followed by anything `pattern` matches. When the prefix
/// ends inside a level, the filter widens to the prefix's complete levels plus `#`.
pub(crate) fn covering_filter(prefix: &str, pattern: &str, separator: char) -> String {
    if prefix.is_empty() || prefix.ends_with(separator) {
        return format!("{prefix}{pattern}");
    }
    match prefix.rfind(separator) {
        Some(at) => format!("{}#", &prefix[..=at]),
        None => "#".to_owned(),
    }
}

/// The rules of one bridge.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// Where an incoming remote name goes in the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The hub topic.
    pub topic: Topic,
    /// The highest QoS the message keeps.
    pub qos: QoS,
}

/// A remote name that an `in` rule accepts but that maps to no valid hub topic (a routing
/// key containing `#`, a name equal to the prefix, ...).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} maps to {topic:?}, which is not a valid hub topic: {source}")]
pub struct InvalidName {
    /// The remote name.
    pub name: String,
    /// What it maps to.
    pub topic: String,
    /// Why that is not a hub topic.
    pub source: TopicError,
}

impl RuleSet {
    /// Wraps compiled rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// Every rule, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule at `index` (as carried by an outbound entry).
    pub fn get(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// Whether any rule lets messages into the hub.
    pub fn has_inbound(&self) -> bool {
        self.rules.iter().any(|rule| rule.direction.is_in())
    }

    /// The rules that let messages into the hub.
    pub fn inbound_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|rule| rule.direction.is_in())
    }

    /// Maps a remote name through the first `in` rule that accepts it: `Ok(None)` when
    /// none does, an error when it maps to something that is not a valid hub topic.
    pub fn inbound(&self, name: &str) -> Result<Option<Inbound>, InvalidName> {
        let Some((topic, qos)) = self
            .inbound_rules()
            .find_map(|rule| rule.to_hub(name).map(|topic| (topic, rule.qos)))
        else {
            return Ok(None);
        };
        match Topic::new(&topic) {
            Ok(topic) => Ok(Some(Inbound { topic, qos })),
            Err(source) => Err(InvalidName {
                name: name.to_owned(),
                topic,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, local: &str, remote: &str, naming: Naming) -> Rule {
        let config = RuleConfig {
            pattern: pattern.into(),
            direction: Direction::Both,
            qos: QoS::AtLeastOnce,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        };
        Rule::compile(&config, naming).expect("valid rule")
    }

    #[test]
    fn fedmsg_names_map_to_hub_topics_and_back() {
        let fedmsg = rule(
            "#",
            "fedora/prod/",
            "org.fedoraproject.prod.",
            Naming::DOTTED,
        );
        assert_eq!(
            fedmsg
                .to_hub("org.fedoraproject.prod.git.receive")
                .as_deref(),
            Some("fedora/prod/git/receive")
        );
        assert_eq!(fedmsg.to_hub("org.fedoraproject.stg.git.receive"), None);
        assert_eq!(
            fedmsg.to_remote("fedora/prod/git/receive").as_deref(),
            Some("org.fedoraproject.prod.git.receive")
        );
        assert_eq!(fedmsg.to_remote("fedora/stg/git/receive"), None);
    }

    #[test]
    fn patterns_apply_after_the_prefix() {
        let important = rule("+/important", "site/", "", Naming::MQTT);
        assert_eq!(
            important.to_remote("site/a/important").as_deref(),
            Some("a/important")
        );
        assert_eq!(important.to_remote("site/a/b/important"), None);
        assert!(important.matches_hub_topic("site//important"));
        assert!(!important.matches_hub_topic("a/important"));
        assert_eq!(
            important.to_hub("x/important").as_deref(),
            Some("site/x/important")
        );
        assert_eq!(important.to_hub("x/other"), None);
    }

    #[test]
    fn gerrit_topics_become_routing_keys() {
        let gerrit = rule("gerrit/#", "", "", Naming::DOTTED);
        assert_eq!(
            gerrit
                .to_remote("gerrit/openstack/nova/comment-added")
                .as_deref(),
            Some("gerrit.openstack.nova.comment-added")
        );
    }

    #[test]
    fn escaped_levels_round_trip_through_a_rule() {
        let amqp = rule("#", "", "", Naming::DOTTED);
        let name = amqp.to_remote("a.b/c").expect("passes");
        assert_eq!(name, "a%2Eb.c");
        assert_eq!(amqp.to_hub(&name).as_deref(), Some("a.b/c"));
    }

    #[test]
    fn hub_filters_cover_the_rule() {
        assert_eq!(
            rule("#", "fedora/prod/", "", Naming::DOTTED).hub_filter(),
            "fedora/prod/#"
        );
        assert_eq!(rule("+/x", "", "", Naming::DOTTED).hub_filter(), "+/x");
        assert_eq!(
            rule("+/x", "site/pre", "", Naming::DOTTED).hub_filter(),
            "site/#"
        );
        assert_eq!(rule("a", "pre", "", Naming::DOTTED).hub_filter(), "#");
        assert_eq!(
            rule("#", "$SYS/sw", "", Naming::DOTTED).hub_filter(),
            "$SYS/#"
        );
    }

    /// Found by the `topics` fuzz target: `local_prefix = "$"` with pattern `+` passes topic
    /// `$`, but its covering filter `#` matches no `$` topic, so the router never used it.
    #[test]
    fn a_dollar_prefix_must_hold_its_first_level() {
        for prefix in ["$", "$SYS"] {
            let config = RuleConfig {
                pattern: "+".into(),
                direction: Direction::Out,
                qos: QoS::AtMostOnce,
                local_prefix: prefix.into(),
                remote_prefix: String::new(),
            };
            assert_eq!(
                Rule::compile(&config, Naming::MQTT).err(),
                Some(RuleError::DollarLevel(prefix.into()))
            );
        }
    }

    /// The remote twin: an MQTT bridge with `remote_prefix = "$SYS"` would subscribe to
    /// `#` on the broker, which never sends `$` topics for it. Dotted remotes have no such
    /// rule, and `"$SYS/"` is fine.
    #[test]
    fn a_dollar_remote_prefix_of_an_mqtt_remote_must_hold_its_first_level() {
        let config = |remote_prefix: &str| RuleConfig {
            pattern: "#".into(),
            direction: Direction::In,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: remote_prefix.into(),
        };
        assert_eq!(
            Rule::compile(&config("$SYS"), Naming::MQTT).err(),
            Some(RuleError::RemoteDollarLevel("$SYS".into()))
        );
        assert!(Rule::compile(&config("$SYS/"), Naming::MQTT).is_ok());
        assert!(Rule::compile(&config("$SYS"), Naming::DOTTED).is_ok());
    }

    #[test]
    fn inbound_names_map_to_valid_hub_topics_or_say_why_not() {
        let rules = RuleSet::new(vec![rule("#", "bus/", "", Naming::DOTTED)]);
        let inbound = rules.inbound("a.b").expect("valid").expect("passes");
        assert_eq!(
            (inbound.topic.as_str(), inbound.qos),
            ("bus/a/b", QoS::AtLeastOnce)
        );
        let invalid = rules.inbound("a.#").unwrap_err();
        assert_eq!(invalid.topic, "bus/a/#");
        assert_eq!(invalid.source, TopicError::Wildcard);
        let only_out = RuleSet::new(vec![Rule {
            direction: Direction::Out,
            ..rule("#", "", "", Naming::DOTTED)
        }]);
        assert_eq!(only_out.inbound("a.b"), Ok(None));
    }

    #[test]
    fn invalid_rules_say_what_is_wrong() {
        let config = RuleConfig {
            pattern: "a/#/b".into(),
            direction: Direction::In,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        };
        let error = Rule::compile(&config, Naming::MQTT).unwrap_err();
        assert!(error.to_string().contains("\"a/#/b\""), "{error}");
        let config = RuleConfig {
            pattern: "#".into(),
            local_prefix: "a/+/".into(),
            ..config
        };
        assert!(matches!(
            Rule::compile(&config, Naming::MQTT),
            Err(RuleError::LocalPrefix { .. })
        ));
    }
}

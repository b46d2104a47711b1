//! The topic ACL of server bridges: `acl = [{ user, pattern, access }, ...]`.
//!
//! Rules only allow; what no rule allows is denied. `user` is `"anonymous"` (clients that
//! did not log in), `"*"` (every client, anonymous ones included) or a user name. Topics
//! and filters are the names clients use (after the bridge's rules' prefixes are applied,
//! as the clients see them).
//!
//! Reading is decided twice, as Mosquitto does: a subscription is refused when no topic it
//! could match is readable, and each delivered message is checked unless the whole filter
//! is readable (decided once, at subscribe time), so `#` by a user who may read only
//! `a/#` receives `a/x` and never `b/x`.

use serde::Deserialize;

use crate::topic::{TopicError, TopicFilter, LEVEL_SEPARATOR};
use crate::SettingError;

/// The `user` value that stands for clients without a login.
pub const ANONYMOUS: &str = "anonymous";
/// The `user` value that stands for every client.
pub const EVERYONE: &str = "*";

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAccess {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    Readwrite,
}

impl AclAccess {
    fn reads(self) -> bool {
        matches!(self, AclAccess::Read | AclAccess::Readwrite)
    }

    fn writes(self) -> bool {
        matches!(self, AclAccess::Write | AclAccess::Readwrite)
    }
}

/// One `acl` entry as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    /// `"anonymous"`, `"*"` or a user name.
    pub user: String,
    /// An MQTT filter over the topics clients see.
    pub pattern: String,
    /// `"read"`, `"write"` or `"readwrite"`.
    pub access: AclAccess,
}

/// One checked rule.
#[derive(Debug, Clone)]
struct AclRule {
    user: String,
    pattern: TopicFilter,
    access: AclAccess,
}

/// What a subscription may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadGrant {
    /// Nothing: refuse the subscription.
    Denied,
    /// Every topic the filter matches: no check per message.
    Whole,
    /// Some of them: check each message.
    Partial,
}

/// The rules of one bridge.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// Checks the rules (`key` is the setting's name, for errors).
    pub fn new(key: &str, rules: &[AclRuleConfig]) -> Result<Self, SettingError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let pattern = TopicFilter::new(&rule.pattern).map_err(|error: TopicError| {
                    SettingError::new(
                        format!("{key}[{index}].pattern"),
                        format!("expected an MQTT filter, found {:?}: {error}", rule.pattern),
                    )
                })?;
                if rule.user.is_empty() {
                    return Err(SettingError::new(
                        format!("{key}[{index}].user"),
                        "expected \"anonymous\", \"*\" or a user name, found \"\"",
                    ));
                }
                Ok(AclRule {
                    user: rule.user.clone(),
                    pattern,
                    access: rule.access,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// The rules that apply to `user` (`None` = anonymous).
    fn rules_for<'a>(&'a self, user: Option<&'a str>) -> impl Iterator<Item = &'a AclRule> + 'a {
        self.rules.iter().filter(move |rule| match user {
            _ if rule.user == EVERYONE => true,
            None => rule.user == ANONYMOUS,
            Some(name) => rule.user == name,
        })
    }

    /// Whether `user` may publish to `topic`.
    pub fn may_write(&self, user: Option<&str>, topic: &str) -> bool {
        self.rules_for(user)
            .any(|rule| rule.access.writes() && rule.pattern.matches(topic))
    }

    /// Whether `user` may receive a message on `topic`.
    pub fn may_read(&self, user: Option<&str>, topic: &str) -> bool {
        self.rules_for(user)
            .any(|rule| rule.access.reads() && rule.pattern.matches(topic))
    }

    /// What a subscription of `user` to `filter` may receive.
    pub fn read_grant(&self, user: Option<&str>, filter: &str) -> ReadGrant {
        let mut grant = ReadGrant::Denied;
        for rule in self.rules_for(user).filter(|rule| rule.access.reads()) {
            if covers(rule.pattern.as_str(), filter) {
                return ReadGrant::Whole;
            }
            if overlaps(rule.pattern.as_str(), filter) {
                grant = ReadGrant::Partial;
            }
        }
        grant
    }
}

/// Whether a filter's first level keeps it from `$` topics while `other`'s first level
/// names one: then no topic matches both.
fn dollar_mismatch(filter: &str, other: &str) -> bool {
    let wildcard_first = filter.starts_with(['+', '#']);
    wildcard_first && other.starts_with('$')
}

/// Whether every topic `filter` matches is matched by `pattern`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    if dollar_mismatch(pattern, filter) {
        return false;
    }
    let mut patterns = pattern.split(LEVEL_SEPARATOR);
    let mut filters = filter.split(LEVEL_SEPARATOR);
    loop {
        match (patterns.next(), filters.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(expected), Some(level)) if expected == level && level != "+" && level != "#" => {}
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both filters.
pub fn overlaps(first: &str, second: &str) -> bool {
    if dollar_mismatch(first, second) || dollar_mismatch(second, first) {
        return false;
    }
    let mut left = first.split(LEVEL_SEPARATOR);
    let mut right = second.split(LEVEL_SEPARATOR);
    loop {
        match (left.next(), right.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(a), Some(b)) if a == "+" || b == "+" || a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rules: &[(&str, &str, AclAccess)]) -> Acl {
        let rules: Vec<AclRuleConfig> = rules
            .iter()
            .map(|(user, pattern, access)| AclRuleConfig {
                user: (*user).to_owned(),
                pattern: (*pattern).to_owned(),
                access: *access,
            })
            .collect();
        Acl::new("acl", &rules).expect("valid rules")
    }

    #[test]
    fn the_firehose_rule_lets_anonymous_read_and_not_write() {
        let acl = acl(&[
            (ANONYMOUS, "#", AclAccess::Read),
            ("publisher", "#", AclAccess::Readwrite),
        ]);
        assert!(acl.may_read(None, "gerrit/x"));
        assert!(!acl.may_write(None, "gerrit/x"));
        assert!(acl.may_write(Some("publisher"), "gerrit/x"));
        assert!(
            !acl.may_read(Some("someone"), "gerrit/x"),
            "a user is not anonymous"
        );
        assert!(!acl.may_read(None, "$SYS/x"), "# never matches $ topics");
    }

    #[test]
    fn everyone_includes_anonymous_and_users() {
        let acl = acl(&[(EVERYONE, "public/#", AclAccess::Write)]);
        assert!(acl.may_write(None, "public/a"));
        assert!(acl.may_write(Some("alice"), "public/a"));
        assert!(!acl.may_write(Some("alice"), "private/a"));
        assert!(!acl.may_read(Some("alice"), "public/a"));
    }

    #[test]
    fn read_grants_tell_whole_partial_and_denied() {
        let acl = acl(&[
            ("alice", "a/#", AclAccess::Read),
            ("alice", "b/+/c", AclAccess::Read),
        ]);
        let alice = Some("alice");
        assert_eq!(acl.read_grant(alice, "a/#"), ReadGrant::Whole);
        assert_eq!(acl.read_grant(alice, "a"), ReadGrant::Whole);
        assert_eq!(acl.read_grant(alice, "a/+/x"), ReadGrant::Whole);
        assert_eq!(acl.read_grant(alice, "#"), ReadGrant::Partial);
        assert_eq!(acl.read_grant(alice, "+/x"), ReadGrant::Partial);
        assert_eq!(acl.read_grant(alice, "b/x/c"), ReadGrant::Whole);
        assert_eq!(acl.read_grant(alice, "b/#"), ReadGrant::Partial);
        assert_eq!(acl.read_grant(alice, "c/#"), ReadGrant::Denied);
        assert_eq!(acl.read_grant(None, "a/#"), ReadGrant::Denied);
    }

    #[test]
    fn coverage_and_overlap_follow_mqtt_matching() {
        assert!(covers("#", "a/+/b"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/x"));
        assert!(!covers("$SYS/#", "#"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers("a/#", "a"));
        assert!(!covers("a", "a/#"));
        assert!(overlaps("a", "a/#"));
        assert!(overlaps("+/b", "a/+"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(!overlaps("a/+", "a"));
    }

    #[test]
    fn bad_rules_name_their_index() {
        let rules = [AclRuleConfig {
            user: "x".into(),
            pattern: "a/#/b".into(),
            access: AclAccess::Read,
        }];
        assert_eq!(Acl::new("acl", &rules).unwrap_err().path, "acl[0].pattern");
    }
}

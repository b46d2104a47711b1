//! Hub topics and MQTT-style topic filters.
//!
//! The hub's namespace is MQTT's: `/`-separated levels, `+` matches one level (which may be
//! empty), `#` matches any number of trailing levels including none (so `a/#` matches `a`),
//! and a filter that starts with a wildcard never matches a topic that starts with `$`
//! (MQTT 3.1.1 section 4.7.2).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// The level separator of hub topics (and of MQTT).
pub const LEVEL_SEPARATOR: char = '/';

/// The longest topic MQTT can carry: its strings have a 16-bit length prefix.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The topic or filter has no characters at all.
    #[error("a topic must not be empty")]
    Empty,
    /// Longer than MQTT allows.
    #[error("a topic must be at most {MAX_TOPIC_BYTES} bytes, found {0}")]
    TooLong(usize),
    /// A topic name (not a filter) contains `+` or `#`.
    #[error("a topic name must not contain the wildcards + or #")]
    Wildcard,
    /// The NUL character is forbidden in MQTT strings.
    #[error("a topic must not contain the NUL character")]
    Nul,
    /// `#` that is not a whole, final level.
    #[error("# must be the last level of a filter and stand alone in it")]
    MisplacedMultiLevel,
    /// `+` sharing a level with other characters.
    #[error("+ must stand alone in its level")]
    MisplacedSingleLevel,
}

fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(text.len()));
    }
    if text.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name that a message is published to: no wildcards, no NUL, not empty.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a subscription filter: wildcards only as whole levels, `#` only last.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split(LEVEL_SEPARATOR).peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevel);
        }
    }
    Ok(())
}

/// A validated topic name, cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `text` as a topic name.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        validate_topic_name(text)?;
        Ok(Self(Arc::from(text)))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A validated MQTT topic filter.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    /// Validates `text` as a filter.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        validate_filter(text)?;
        Ok(Self(Arc::from(text)))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter has no wildcard, so it matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        !self.0.contains(['+', '#'])
    }

    /// Whether `topic` is matched by this filter.
    pub fn matches(&self, topic: &str) -> bool {
        filter_matches(&self.0, topic)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Matches a (valid) filter against a topic name level by level, without allocating.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split(LEVEL_SEPARATOR);
    let mut topic_levels = topic.split(LEVEL_SEPARATOR);
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_specifies() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/", true),
            ("a/+/c", "a//c", true),
            ("+", "", true),
            ("+/+", "/x", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "anything/at/all", true),
            ("#", "$SYS/broker", false),
            ("+/broker", "$SYS/broker", false),
            ("$SYS/#", "$SYS/broker", true),
            ("$SYS/+", "$SYS/broker", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b/", true),
            ("é/+", "é/x", true),
            ("日本/#", "日本/y", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                filter_matches(filter, topic),
                *expected,
                "filter {filter:?} on topic {topic:?}"
            );
        }
    }

    #[test]
    fn bad_filters_and_names_are_refused() {
        assert_eq!(
            validate_filter("a/#/b"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(validate_filter("a#"), Err(TopicError::MisplacedMultiLevel));
        assert_eq!(
            validate_filter("a/b+"),
            Err(TopicError::MisplacedSingleLevel)
        );
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert!(validate_filter("+/+/#").is_ok());
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(
            validate_topic_name(&"x".repeat(MAX_TOPIC_BYTES + 1)),
            Err(TopicError::TooLong(MAX_TOPIC_BYTES + 1))
        );
        assert!(Topic::new("é/x").is_ok());
    }
}

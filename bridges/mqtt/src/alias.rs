//! MQTT 5 topic aliases from client to server (MQTT 5 section 3.3.2.3.4): a client may
//! name a topic once with an alias number and later send only the number.

use thiserror::Error;

use crate::codec::TOPIC_ALIAS_MAXIMUM;

/// Why a PUBLISH's topic alias cannot be used; the connection is closed with DISCONNECT
/// "topic alias invalid" (0x94) or "protocol error" (0x82).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AliasError {
    /// 0, or above the maximum announced in CONNACK.
    #[error("topic alias {0} is outside 1..={TOPIC_ALIAS_MAXIMUM}")]
    OutOfRange(u16),
    /// An empty topic with an alias that was never defined.
    #[error("topic alias {0} was never defined")]
    Unknown(u16),
}

/// The aliases one connection defined. Empty (and unallocated) until a client uses one.
#[derive(Debug, Default)]
pub struct TopicAliases {
    /// Topic per alias number minus one.
    topics: Vec<Option<String>>,
}

impl TopicAliases {
    /// The topic a PUBLISH stands for: `topic` itself (recording it under `alias` when
    /// both are given), or the topic recorded earlier for `alias` when `topic` is empty.
    pub fn resolve(&mut self, topic: String, alias: Option<u16>) -> Result<String, AliasError> {
        let Some(alias) = alias else {
            return Ok(topic);
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(AliasError::OutOfRange(alias));
        }
        let index = usize::from(alias - 1);
        if topic.is_empty() {
            return self
                .topics
                .get(index)
                .and_then(Option::clone)
                .ok_or(AliasError::Unknown(alias));
        }
        if self.topics.len() <= index {
            self.topics.resize(index + 1, None);
        }
        self.topics[index] = Some(topic.clone());
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_defined_then_used() {
        let mut aliases = TopicAliases::default();
        assert_eq!(aliases.resolve("a/b".into(), None).unwrap(), "a/b");
        assert_eq!(aliases.resolve("é/x".into(), Some(3)).unwrap(), "é/x");
        assert_eq!(aliases.resolve(String::new(), Some(3)).unwrap(), "é/x");
        assert_eq!(aliases.resolve("c".into(), Some(3)).unwrap(), "c");
        assert_eq!(aliases.resolve(String::new(), Some(3)).unwrap(), "c");
    }

    #[test]
    fn bad_aliases_are_refused() {
        let mut aliases = TopicAliases::default();
        assert_eq!(
            aliases.resolve(String::new(), Some(2)),
            Err(AliasError::Unknown(2))
        );
        assert_eq!(
            aliases.resolve("t".into(), Some(0)),
            Err(AliasError::OutOfRange(0))
        );
        assert_eq!(
            aliases.resolve("t".into(), Some(TOPIC_ALIAS_MAXIMUM + 1)),
            Err(AliasError::OutOfRange(TOPIC_ALIAS_MAXIMUM + 1))
        );
    }
}

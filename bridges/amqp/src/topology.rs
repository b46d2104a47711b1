//! The broker-side objects a bridge needs — its exchange, and for `in` rules its queue with
//! one binding per rule — declared on every connection, so a broker that restarted or lost
//! them gets them back.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};
use switchyard_api::subscription::amqp_binding_key;
use switchyard_api::{BridgeError, RuleSet};

use crate::config::AmqpConfig;
use crate::link::Link;

/// Declares (or checks) the exchange on the consuming connection: a durable declaration
/// when `declare_exchange` is set, otherwise a passive one that fails with a clear message
/// when it is missing. The default exchange (`""`) always exists.
pub async fn ensure_exchange(channel: &Channel, config: &AmqpConfig) -> Result<(), BridgeError> {
    if config.exchange.as_str().is_empty() {
        return Ok(());
    }
    let options = ExchangeDeclareOptions {
        passive: !config.declare_exchange,
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            config.exchange.clone(),
            ExchangeKind::Custom(config.exchange_type.to_string()),
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|error| exchange_refused(config, error))
}

/// Declares (or checks) the exchange on the publishing connection, as [`ensure_exchange`]
/// does on the consuming one.
pub async fn ensure_exchange_for_publishing(
    link: &mut Link,
    config: &AmqpConfig,
) -> Result<(), BridgeError> {
    if config.exchange.as_str().is_empty() {
        return Ok(());
    }
    link.declare_exchange(
        config.exchange.as_str(),
        config.exchange_type.as_str(),
        !config.declare_exchange,
    )
    .await
    .map_err(|error| exchange_refused(config, error))
}

/// The broker's refusal of the exchange declaration, with what to do about it.
fn exchange_refused(config: &AmqpConfig, error: impl std::fmt::Display) -> BridgeError {
    let hint = if config.declare_exchange {
        "check that the existing exchange has the same type and durability"
    } else {
        "create it, or set declare_exchange = true"
    };
    BridgeError::Protocol(format!(
        "exchange {:?}: {error} ({hint})",
        config.exchange.as_str()
    ))
}

/// The binding keys of the `in` rules, without repeats, in rule order.
pub fn binding_keys(rules: &RuleSet) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in rules.inbound_rules().map(amqp_binding_key) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Declares the queue of `in` rules and binds it once per binding key; returns its name
/// (the broker's choice when `amqp_queue.name` is empty).
pub async fn declare_queue(
    channel: &Channel,
    config: &AmqpConfig,
    rules: &RuleSet,
) -> Result<ShortString, BridgeError> {
    let queue = &config.queue;
    let server_named = queue.name.is_empty();
    let options = if server_named {
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        }
    } else {
        QueueDeclareOptions {
            durable: queue.durable,
            auto_delete: queue.auto_delete,
            exclusive: queue.exclusive,
            ..QueueDeclareOptions::default()
        }
    };
    let declared = channel
        .queue_declare(queue.name.as_str().into(), options, queue.arguments.clone())
        .await
        .map_err(|error| {
            BridgeError::Protocol(format!(
                "queue {:?}: {error} (an existing queue must have the same durable, \
                 auto_delete, exclusive and arguments as amqp_queue = {{ ... }})",
                queue.name
            ))
        })?;
    let name = declared.name().clone();
    for key in binding_keys(rules) {
        let routing_key = ShortString::try_new(key.clone()).map_err(|_| {
            BridgeError::Protocol(format!(
                "the binding key {key:?} is longer than AMQP's 255 bytes; shorten the rule"
            ))
        })?;
        channel
            .queue_bind(
                name.clone(),
                config.exchange.clone(),
                routing_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                BridgeError::Protocol(format!(
                    "bind queue {:?} to exchange {:?} with key {key:?}: {error}",
                    name.as_str(),
                    config.exchange.as_str()
                ))
            })?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{Direction, Naming, QoS, Rule, RuleConfig};

    fn rule(pattern: &str, direction: Direction, remote_prefix: &str) -> Rule {
        let config = RuleConfig {
            pattern: pattern.into(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: "hub/".into(),
            remote_prefix: remote_prefix.into(),
        };
        Rule::compile(&config, Naming::DOTTED).expect("valid rule")
    }

    #[test]
    fn one_binding_per_in_rule() {
        let rules = RuleSet::new(vec![
            rule("+/important", Direction::In, ""),
            rule("#", Direction::Both, "org.fedoraproject.prod."),
            rule("a.b/#", Direction::In, ""),
            rule("#", Direction::Out, "ignored."),
            rule("+/important", Direction::Both, ""),
        ]);
        assert_eq!(
            binding_keys(&rules),
            ["*.important", "org.fedoraproject.prod.#", "a%2Eb.#"]
        );
    }
}

//! The bridge types this build knows. A new protocol is one more adapter crate and one
//! more line here; the router never changes.

use switchyard_api::BridgeType;

/// Every bridge type, by `type` name.
const TYPES: &[&dyn BridgeType] = &[
    &switchyard_mqtt::MqttServerType,
    &switchyard_mqtt::remote::MqttClientType,
    &switchyard_websocket::WebSocketServerType,
    &switchyard_amqp::AmqpType,
    &switchyard_redis::RedisType,
    &switchyard_zmq::ZmqType,
];

/// The type called `name`.
pub fn find(name: &str) -> Option<&'static dyn BridgeType> {
    TYPES.iter().copied().find(|kind| kind.type_name() == name)
}

/// The names of every type, for error messages.
pub fn type_names() -> Vec<&'static str> {
    TYPES.iter().map(|kind| kind.type_name()).collect()
}

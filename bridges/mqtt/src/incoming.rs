//! What clients send, in one vocabulary for both MQTT versions, and its translation from
//! rumqttc's MQTT 3.1.1 and MQTT 5 packets.

use bytes::Bytes;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::codec::CodecError;

/// A client's CONNECT, as much as the server uses of it.
pub struct Connect {
    /// The client identifier; may be empty (the server then assigns one).
    pub client_id: String,
    /// The user name, if the client gave one (for [`crate::access`]).
    pub username: Option<String>,
    /// The password, if the client gave one (never logged).
    pub password: Option<Vec<u8>>,
    /// Seconds between control packets the client promised; 0 = no keepalive.
    pub keep_alive: u16,
    /// The message to publish when the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// MQTT 5: most QoS 1 messages the client accepts unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet the client accepts.
    pub maximum_packet_size: Option<u32>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive", &self.keep_alive)
            .field("will", &self.will)
            .finish_non_exhaustive()
    }
}

/// A will message.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic as the client wrote it.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Requested QoS (0, 1 or 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
}

/// A client's PUBLISH.
#[derive(Debug)]
pub struct Publish {
    /// Topic as written (empty when a MQTT 5 topic alias stands for it).
    pub topic: String,
    /// MQTT 5 topic alias, if any.
    pub topic_alias: Option<u16>,
    /// Requested QoS (0, 1 or 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Bytes,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug)]
pub struct FilterRequest {
    /// The filter as written.
    pub path: String,
    /// Requested QoS (0, 1 or 2).
    pub qos: u8,
    /// MQTT 5 no-local.
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    pub retain_as_published: bool,
    /// Whether retained messages are wanted now (MQTT 5 retain handling 0 or 1).
    pub send_retained: bool,
}

/// A packet from a client.
#[derive(Debug)]
pub enum Incoming {
    /// CONNECT.
    Connect(Connect),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK for a QoS 1 message the server sent.
    PubAck(u16),
    /// PUBREL (second step of a client's QoS 2 publish).
    PubRel(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet identifier.
        pkid: u16,
        /// The filters.
        filters: Vec<FilterRequest>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet identifier.
        pkid: u16,
        /// The filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT; MQTT 5 reason 0x04 asks for the will to be published anyway.
    Disconnect {
        /// Whether the will must still be published.
        publish_will: bool,
    },
    /// A packet a client has no business sending here (CONNACK, SUBACK, PUBREC, ...).
    Unexpected(&'static str),
}

fn utf8(bytes: Bytes, what: &str) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| CodecError::Malformed(format!("the {what} is not valid UTF-8")))
}

pub(crate) fn from_v4(packet: v4::Packet) -> Result<Incoming, CodecError> {
    Ok(match packet {
        v4::Packet::Connect(connect) => Incoming::Connect(Connect {
            client_id: connect.client_id,
            password: connect
                .login
                .as_ref()
                .map(|login| login.password.clone().into_bytes()),
            username: connect.login.map(|login| login.username),
            keep_alive: connect.keep_alive,
            will: connect.last_will.map(|will| Will {
                topic: will.topic,
                payload: will.message,
                qos: will.qos as u8,
                retain: will.retain,
                user_properties: Vec::new(),
            }),
            receive_maximum: None,
            maximum_packet_size: None,
        }),
        v4::Packet::Publish(publish) => Incoming::Publish(Publish {
            topic: publish.topic,
            topic_alias: None,
            qos: publish.qos as u8,
            retain: publish.retain,
            pkid: publish.pkid,
            payload: publish.payload,
            user_properties: Vec::new(),
        }),
        v4::Packet::PubAck(puback) => Incoming::PubAck(puback.pkid),
        v4::Packet::PubRel(pubrel) => Incoming::PubRel(pubrel.pkid),
        v4::Packet::Subscribe(subscribe) => Incoming::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|filter| FilterRequest {
                    path: filter.path,
                    qos: filter.qos as u8,
                    no_local: false,
                    retain_as_published: false,
                    send_retained: true,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(unsubscribe) => Incoming::Unsubscribe {
            pkid: unsubscribe.pkid,
            filters: unsubscribe.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect {
            publish_will: false,
        },
        v4::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v4::Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        v4::Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        v4::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Incoming::Unexpected("PINGRESP"),
    })
}

pub(crate) fn from_v5(packet: v5::Packet) -> Result<Incoming, CodecError> {
    Ok(match packet {
        v5::Packet::Connect(connect, will, login) => {
            let will = match will {
                Some(will) => Some(Will {
                    topic: utf8(will.topic, "will topic")?,
                    payload: will.message,
                    qos: will.qos as u8,
                    retain: will.retain,
                    user_properties: will
                        .properties
                        .map(|properties| properties.user_properties)
                        .unwrap_or_default(),
                }),
                None => None,
            };
            let properties = connect.properties.as_ref();
            let password = login
                .as_ref()
                .map(|login| login.password.clone().into_bytes());
            Incoming::Connect(Connect {
                client_id: connect.client_id,
                username: login.map(|login| login.username),
                password,
                keep_alive: connect.keep_alive,
                will,
                receive_maximum: properties.and_then(|p| p.receive_maximum),
                maximum_packet_size: properties.and_then(|p| p.max_packet_size),
            })
        }
        v5::Packet::Publish(publish) => {
            let (topic_alias, user_properties) = match publish.properties {
                Some(properties) => (properties.topic_alias, properties.user_properties),
                None => (None, Vec::new()),
            };
            Incoming::Publish(Publish {
                topic: utf8(publish.topic, "topic")?,
                topic_alias,
                qos: publish.qos as u8,
                retain: publish.retain,
                pkid: publish.pkid,
                payload: publish.payload,
                user_properties,
            })
        }
        v5::Packet::PubAck(puback) => Incoming::PubAck(puback.pkid),
        v5::Packet::PubRel(pubrel) => Incoming::PubRel(pubrel.pkid),
        v5::Packet::Subscribe(subscribe) => Incoming::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|filter| FilterRequest {
                    path: filter.path,
                    qos: filter.qos as u8,
                    no_local: filter.nolocal,
                    retain_as_published: filter.preserve_retain,
                    send_retained: filter.retain_forward_rule != v5::RetainForwardRule::Never,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(unsubscribe) => Incoming::Unsubscribe {
            pkid: unsubscribe.pkid,
            filters: unsubscribe.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(disconnect) => Incoming::Disconnect {
            publish_will: disconnect.reason_code
                == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => Incoming::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v5::Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        v5::Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        v5::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Incoming::Unexpected("PINGRESP"),
    })
}

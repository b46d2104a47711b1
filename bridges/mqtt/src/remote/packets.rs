//! The client's side of MQTT 3.1.1 and MQTT 5 on the wire, through rumqttc's packet types
//! like the server's `codec.rs` (which also encodes the PUBLISH and PUBACK both sides
//! share): what the bridge sends a broker (CONNECT, SUBSCRIBE, PINGREQ, DISCONNECT), and
//! what a broker may send back, as [`FromBroker`].

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::QoS as V4QoS;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS as V5QoS;

use crate::codec::{v4_qos, v5_qos, CodecError, Protocol, WirePacket};

/// The largest packet MQTT can frame (a remaining length of 268,435,455 bytes): the
/// bridge announces no smaller limit, so the broker may send up to this.
pub const MAX_INCOMING_PACKET: usize = 268_435_455 + 5;

/// What the bridge asks for in CONNECT.
pub struct ConnectRequest<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// Keepalive in whole seconds.
    pub keep_alive: u16,
    /// Start without the broker's stored session.
    pub clean_start: bool,
    /// User name and password.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Topic of the will, a retained QoS 1 `0` (the bridge's state).
    pub will_topic: Option<&'a str>,
    /// MQTT 5: how long the broker keeps the session after the connection ends.
    pub session_expiry: Option<u32>,
}

/// The body of the bridge's will: the state message saying it is down.
const WILL_PAYLOAD: &[u8] = b"0";

/// A message the broker sent.
#[derive(Debug)]
pub struct IncomingPublish {
    /// Topic as the remote spells it.
    pub topic: String,
    /// Body.
    pub payload: Bytes,
    /// QoS level as received (0, 1 or 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Packet id, for the acknowledgement.
    pub pkid: u16,
    /// MQTT 5 user properties (empty for 3.1.1).
    pub headers: Vec<(String, String)>,
}

/// The broker's answer to CONNECT.
#[derive(Debug)]
pub struct ConnAck {
    /// Why the broker refused the connection, if it did.
    pub refusal: Option<String>,
    /// Whether it resumed a stored session.
    pub session_present: bool,
    /// MQTT 5: most unacknowledged QoS 1 messages it takes from us.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet it takes from us.
    pub max_packet: Option<u32>,
}

/// A packet from the broker, in the bridge's terms.
#[derive(Debug)]
pub enum FromBroker {
    /// CONNACK.
    ConnAck(ConnAck),
    /// A message.
    Publish(IncomingPublish),
    /// The broker has our QoS 1 message `pkid`; `refusal` is the MQTT 5 reason when it
    /// did not take it.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Why it refused the message, if it did.
        refusal: Option<String>,
    },
    /// Second step of a QoS 2 message the broker sent: answer PUBCOMP.
    PubRel(u16),
    /// The answer to SUBSCRIBE `pkid`; `refusal` is the reason when it was refused.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// Why the subscription was refused, if it was.
        refusal: Option<String>,
    },
    /// The answer to PINGREQ.
    PingResp,
    /// MQTT 5: the broker is closing the connection, with this reason.
    Disconnect(String),
}

/// Appends CONNECT.
pub fn encode_connect(
    protocol: Protocol,
    buffer: &mut BytesMut,
    request: &ConnectRequest<'_>,
) -> Result<(), CodecError> {
    let packet = match protocol {
        Protocol::V4 => {
            let mut connect = v4::Connect::new(request.client_id);
            connect.keep_alive = request.keep_alive;
            connect.clean_session = request.clean_start;
            if let Some((user, password)) = request.credentials {
                connect.set_login(user, password);
            }
            connect.last_will = request
                .will_topic
                .map(|topic| v4::LastWill::new(topic, WILL_PAYLOAD, V4QoS::AtLeastOnce, true));
            WirePacket::V4(v4::Packet::Connect(connect))
        }
        Protocol::V5 => {
            let properties = request.session_expiry.map(|seconds| {
                let mut properties = v5::ConnectProperties::new();
                properties.session_expiry_interval = Some(seconds);
                properties
            });
            let connect = v5::Connect {
                keep_alive: request.keep_alive,
                client_id: request.client_id.to_owned(),
                clean_start: request.clean_start,
                properties,
            };
            let will = request.will_topic.map(|topic| {
                v5::LastWill::new(topic, WILL_PAYLOAD, V5QoS::AtLeastOnce, true, None)
            });
            let login = request
                .credentials
                .map(|(user, password)| v5::Login::new(user, password));
            WirePacket::V5(v5::Packet::Connect(connect, will, login))
        }
    };
    protocol.write_packet(&packet, buffer, None)
}

/// Appends SUBSCRIBE for one filter. MQTT 5 asks for retain-as-published (the bridge
/// forwards the retain flag as the publisher set it) and, with `no_local`, not to get our
/// own messages back.
pub fn encode_subscribe(
    protocol: Protocol,
    buffer: &mut BytesMut,
    pkid: u16,
    filter: &str,
    qos: u8,
    no_local: bool,
) -> Result<(), CodecError> {
    let packet = match protocol {
        Protocol::V4 => {
            let mut subscribe = v4::Subscribe::new(filter, v4_qos(qos));
            subscribe.pkid = pkid;
            WirePacket::V4(v4::Packet::Subscribe(subscribe))
        }
        Protocol::V5 => {
            let mut wanted = v5::Filter::new(filter, v5_qos(qos));
            wanted.nolocal = no_local;
            wanted.preserve_retain = true;
            let mut subscribe = v5::Subscribe::new(wanted, None);
            subscribe.pkid = pkid;
            WirePacket::V5(v5::Packet::Subscribe(subscribe))
        }
    };
    protocol.write_packet(&packet, buffer, None)
}

/// Appends PINGREQ.
pub fn encode_pingreq(protocol: Protocol, buffer: &mut BytesMut) -> Result<(), CodecError> {
    let packet = match protocol {
        Protocol::V4 => WirePacket::V4(v4::Packet::PingReq),
        Protocol::V5 => WirePacket::V5(v5::Packet::PingReq(v5::PingReq)),
    };
    protocol.write_packet(&packet, buffer, None)
}

/// Appends DISCONNECT: a normal goodbye, after which the broker drops the will.
pub fn encode_disconnect(protocol: Protocol, buffer: &mut BytesMut) -> Result<(), CodecError> {
    let packet = match protocol {
        Protocol::V4 => WirePacket::V4(v4::Packet::Disconnect),
        Protocol::V5 => WirePacket::V5(v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        ))),
    };
    protocol.write_packet(&packet, buffer, None)
}

/// Takes the next whole packet the broker sent off `buffer`; `Ok(None)` when more bytes
/// are needed. A packet only clients send is a protocol error.
pub fn decode(protocol: Protocol, buffer: &mut BytesMut) -> Result<Option<FromBroker>, CodecError> {
    match protocol.read_packet(buffer, MAX_INCOMING_PACKET)? {
        None => Ok(None),
        Some(WirePacket::V4(packet)) => from_v4(packet).map(Some),
        Some(WirePacket::V5(packet)) => from_v5(packet).map(Some),
    }
}

fn not_from_a_broker(name: &str) -> CodecError {
    CodecError::Malformed(format!(
        "the broker sent {name}, which only clients send (or answers a request the bridge \
         never makes)"
    ))
}

fn from_v4(packet: v4::Packet) -> Result<FromBroker, CodecError> {
    Ok(match packet {
        v4::Packet::ConnAck(ack) => FromBroker::ConnAck(ConnAck {
            refusal: (ack.code != v4::ConnectReturnCode::Success)
                .then(|| format!("{:?}", ack.code)),
            session_present: ack.session_present,
            receive_maximum: None,
            max_packet: None,
        }),
        v4::Packet::Publish(publish) => FromBroker::Publish(IncomingPublish {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos as u8,
            retain: publish.retain,
            pkid: publish.pkid,
            headers: Vec::new(),
        }),
        v4::Packet::PubAck(ack) => FromBroker::PubAck {
            pkid: ack.pkid,
            refusal: None,
        },
        v4::Packet::PubRel(release) => FromBroker::PubRel(release.pkid),
        v4::Packet::SubAck(ack) => FromBroker::SubAck {
            pkid: ack.pkid,
            refusal: ack
                .return_codes
                .iter()
                .find(|code| matches!(code, v4::SubscribeReasonCode::Failure))
                .map(|_| "Failure (0x80)".to_owned()),
        },
        v4::Packet::PingResp => FromBroker::PingResp,
        other => return Err(not_from_a_broker(v4_name(&other))),
    })
}

fn v4_name(packet: &v4::Packet) -> &'static str {
    match packet {
        v4::Packet::Connect(_) => "CONNECT",
        v4::Packet::PubRec(_) => "PUBREC",
        v4::Packet::PubComp(_) => "PUBCOMP",
        v4::Packet::Subscribe(_) => "SUBSCRIBE",
        v4::Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        v4::Packet::UnsubAck(_) => "UNSUBACK",
        v4::Packet::PingReq => "PINGREQ",
        v4::Packet::Disconnect => "DISCONNECT",
        _ => "an unexpected packet",
    }
}

fn from_v5(packet: v5::Packet) -> Result<FromBroker, CodecError> {
    Ok(match packet {
        v5::Packet::ConnAck(ack) => {
            let (receive_maximum, max_packet, reason) = ack
                .properties
                .map(|properties| {
                    let limits = (properties.receive_max, properties.max_packet_size);
                    (limits.0, limits.1, properties.reason_string)
                })
                .unwrap_or_default();
            FromBroker::ConnAck(ConnAck {
                refusal: (ack.code != v5::ConnectReturnCode::Success)
                    .then(|| with_reason_string(format!("{:?}", ack.code), reason)),
                session_present: ack.session_present,
                receive_maximum,
                max_packet,
            })
        }
        v5::Packet::Publish(publish) => FromBroker::Publish(IncomingPublish {
            topic: String::from_utf8(publish.topic.to_vec())
                .map_err(|_| CodecError::Malformed("a PUBLISH topic is not UTF-8".to_owned()))?,
            payload: publish.payload,
            qos: publish.qos as u8,
            retain: publish.retain,
            pkid: publish.pkid,
            headers: publish
                .properties
                .map(|properties| properties.user_properties)
                .unwrap_or_default(),
        }),
        v5::Packet::PubAck(ack) => FromBroker::PubAck {
            pkid: ack.pkid,
            refusal: match ack.reason {
                v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers => None,
                reason => Some(with_reason_string(
                    format!("{reason:?}"),
                    ack.properties
                        .and_then(|properties| properties.reason_string),
                )),
            },
        },
        v5::Packet::PubRel(release) => FromBroker::PubRel(release.pkid),
        v5::Packet::SubAck(ack) => FromBroker::SubAck {
            pkid: ack.pkid,
            refusal: ack
                .return_codes
                .iter()
                .find(|code| !matches!(code, v5::SubscribeReasonCode::Success(_)))
                .map(|code| {
                    with_reason_string(
                        format!("{code:?}"),
                        ack.properties
                            .and_then(|properties| properties.reason_string),
                    )
                }),
        },
        v5::Packet::PingResp(_) => FromBroker::PingResp,
        v5::Packet::Disconnect(disconnect) => FromBroker::Disconnect(with_reason_string(
            format!("{:?}", disconnect.reason_code),
            disconnect
                .properties
                .and_then(|properties| properties.reason_string),
        )),
        other => return Err(not_from_a_broker(v5_name(&other))),
    })
}

fn v5_name(packet: &v5::Packet) -> &'static str {
    match packet {
        v5::Packet::Auth(_) => "AUTH",
        v5::Packet::Connect(..) => "CONNECT",
        v5::Packet::PubRec(_) => "PUBREC",
        v5::Packet::PubComp(_) => "PUBCOMP",
        v5::Packet::Subscribe(_) => "SUBSCRIBE",
        v5::Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        v5::Packet::UnsubAck(_) => "UNSUBACK",
        v5::Packet::PingReq(_) => "PINGREQ",
        _ => "an unexpected packet",
    }
}

/// A reason code's name, with the broker's own words (MQTT 5 reason string) when given.
fn with_reason_string(code: String, reason: Option<String>) -> String {
    match reason {
        Some(reason) => format!("{code} ({reason})"),
        None => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(will: Option<&str>) -> ConnectRequest<'_> {
        ConnectRequest {
            client_id: "bridge",
            keep_alive: 30,
            clean_start: false,
            credentials: Some(("user", "secret")),
            will_topic: will,
            session_expiry: Some(60),
        }
    }

    #[test]
    fn connect_carries_login_will_and_session_expiry_in_both_versions() {
        for protocol in [Protocol::V4, Protocol::V5] {
            let mut buffer = BytesMut::new();
            encode_connect(protocol, &mut buffer, &request(Some("state"))).unwrap();
            let level = crate::codec::peek_protocol_level(&buffer).unwrap();
            assert_eq!(level, Some(if protocol == Protocol::V4 { 4 } else { 5 }));
            match protocol.read_packet(&mut buffer, 1 << 16).unwrap().unwrap() {
                WirePacket::V4(v4::Packet::Connect(connect)) => {
                    assert_eq!(connect.client_id, "bridge");
                    assert!(!connect.clean_session);
                    let will = connect.last_will.unwrap();
                    assert_eq!((will.topic.as_str(), will.retain), ("state", true));
                    assert_eq!(connect.login.unwrap().password, "secret");
                }
                WirePacket::V5(v5::Packet::Connect(connect, will, login)) => {
                    assert_eq!(connect.keep_alive, 30);
                    let expiry = connect.properties.unwrap().session_expiry_interval;
                    assert_eq!(expiry, Some(60));
                    assert_eq!(&will.unwrap().message[..], b"0");
                    assert_eq!(login.unwrap().username, "user");
                }
                other => panic!("expected CONNECT, got {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_are_named_with_the_brokers_reason() {
        let mut buffer = BytesMut::new();
        let connack = v5::ConnAck {
            session_present: false,
            code: v5::ConnectReturnCode::NotAuthorized,
            properties: None,
        };
        v5::Packet::ConnAck(connack)
            .write(&mut buffer, None)
            .unwrap();
        let suback = v5::SubAck {
            pkid: 7,
            return_codes: vec![v5::SubscribeReasonCode::NotAuthorized],
            properties: Some(v5::SubAckProperties {
                reason_string: Some("no access".to_owned()),
                user_properties: Vec::new(),
            }),
        };
        v5::Packet::SubAck(suback).write(&mut buffer, None).unwrap();
        match decode(Protocol::V5, &mut buffer).unwrap() {
            Some(FromBroker::ConnAck(ack)) => {
                assert_eq!(ack.refusal.as_deref(), Some("NotAuthorized"))
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        match decode(Protocol::V5, &mut buffer).unwrap() {
            Some(FromBroker::SubAck { pkid, refusal }) => {
                assert_eq!(
                    (pkid, refusal.as_deref()),
                    (7, Some("NotAuthorized (no access)"))
                )
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        let mut v4_suback = BytesMut::new();
        let codes = vec![v4::SubscribeReasonCode::Failure];
        v4::Packet::SubAck(v4::SubAck::new(3, codes))
            .write(&mut v4_suback, 1 << 16)
            .unwrap();
        assert!(matches!(
            decode(Protocol::V4, &mut v4_suback).unwrap(),
            Some(FromBroker::SubAck {
                pkid: 3,
                refusal: Some(_)
            })
        ));
    }

    #[test]
    fn packets_only_clients_send_are_protocol_errors() {
        let mut buffer = BytesMut::new();
        encode_subscribe(Protocol::V4, &mut buffer, 1, "a/#", 1, false).unwrap();
        let error = decode(Protocol::V4, &mut buffer).unwrap_err();
        assert!(error.to_string().contains("SUBSCRIBE"), "{error}");
        let mut partial = BytesMut::from(&[0x90u8, 0x03, 0x00][..]);
        assert!(decode(Protocol::V4, &mut partial).unwrap().is_none());
    }
}

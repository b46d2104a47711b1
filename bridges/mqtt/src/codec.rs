//! MQTT 3.1.1 and MQTT 5 on the wire, through rumqttc's packet codecs, behind one small
//! vocabulary ([`Incoming`] and the `encode_*` methods) so the session is written once.
//!
//! A connection's protocol is chosen by peeking at the protocol level byte of its CONNECT
//! packet ([`peek_protocol_level`]): 4 is MQTT 3.1.1, 5 is MQTT 5.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::{Error as V4Error, QoS as V4QoS};
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::{Error as V5Error, QoS as V5QoS};
use thiserror::Error;

use crate::incoming::{from_v4, from_v5, Incoming};

/// How many topic aliases a MQTT 5 client may define (announced in CONNACK).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 32;

/// Why bytes from a client could not be turned into a packet, or a packet into bytes.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The packet is larger than the server accepts (or than the client accepts).
    #[error("a packet of {0} bytes is larger than allowed")]
    TooLarge(usize),
    /// The bytes break the protocol.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// `max_connections` clients are connected (3.1.1: "server unavailable"; 5: "quota
    /// exceeded").
    Full,
    /// The access policy said no (3.1.1: "not authorized"; 5: "not authorized").
    NotAuthorized,
    /// A wrong user name or password (3.1.1: "bad user name or password"; 5: "bad user
    /// name or password").
    BadCredentials,
}

/// The answer to one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// Subscribed, with this QoS.
    Qos(u8),
    /// The filter is not a valid topic filter.
    Invalid,
    /// The access policy said no.
    NotAuthorized,
}

/// A whole packet in rumqttc's types, of the version a connection speaks.
// Short-lived (decoded, then converted right away): boxing the larger MQTT 5 variant
// would cost an allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WirePacket {
    /// An MQTT 3.1.1 packet.
    V4(v4::Packet),
    /// An MQTT 5 packet.
    V5(v5::Packet),
}

/// The MQTT version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Finds the protocol level of the CONNECT packet at the start of `buffer` (MQTT 3.1.1
/// and MQTT 5, section 3.1.2: protocol name, then the level byte). `Ok(None)`: more
/// bytes are needed.
pub fn peek_protocol_level(buffer: &[u8]) -> Result<Option<u8>, CodecError> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(CodecError::Malformed(
            "the first packet must be CONNECT".to_owned(),
        ));
    }
    let mut remaining: usize = 0;
    let mut offset = 1;
    loop {
        let Some(&byte) = buffer.get(offset) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * (offset - 1));
        offset += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if offset > 4 {
            return Err(CodecError::Malformed("bad remaining length".to_owned()));
        }
    }
    let (Some(&high), Some(&low)) = (buffer.get(offset), buffer.get(offset + 1)) else {
        return Ok(None);
    };
    let name_length = usize::from(u16::from_be_bytes([high, low]));
    if remaining < 2 + name_length + 1 {
        return Err(CodecError::Malformed("CONNECT is too short".to_owned()));
    }
    Ok(buffer.get(offset + 2 + name_length).copied())
}

/// A CONNACK refusing protocol level `level` (MQTT 3.1.1 section 3.2.2.3: return code 1,
/// "unacceptable protocol version"), in the 3.1.1 layout every version can read.
pub fn unsupported_version_connack(buffer: &mut BytesMut) {
    buffer.extend_from_slice(&[0x20, 0x02, 0x00, 0x01]);
}

fn v4_error(error: V4Error, max: usize) -> CodecError {
    match error {
        V4Error::PayloadSizeLimitExceeded(size) => CodecError::TooLarge(size),
        V4Error::OutgoingPacketTooLarge { pkt_size, .. } => CodecError::TooLarge(pkt_size),
        V4Error::PayloadTooLong => CodecError::TooLarge(max),
        other => CodecError::Malformed(other.to_string()),
    }
}

fn v5_error(error: V5Error) -> CodecError {
    match error {
        V5Error::PayloadSizeLimitExceeded { pkt_size, .. } => CodecError::TooLarge(pkt_size),
        V5Error::OutgoingPacketTooLarge { pkt_size, .. } => CodecError::TooLarge(pkt_size as usize),
        other => CodecError::Malformed(other.to_string()),
    }
}

/// The MQTT 3.1.1 QoS of a level the hub uses (0, else 1).
pub(crate) fn v4_qos(qos: u8) -> V4QoS {
    if qos == 0 {
        V4QoS::AtMostOnce
    } else {
        V4QoS::AtLeastOnce
    }
}

/// The MQTT 5 QoS of a level the hub uses (0, else 1).
pub(crate) fn v5_qos(qos: u8) -> V5QoS {
    if qos == 0 {
        V5QoS::AtMostOnce
    } else {
        V5QoS::AtLeastOnce
    }
}

/// Whether more bytes are needed before a packet can be framed.
fn v4_incomplete(error: &V4Error) -> bool {
    matches!(error, V4Error::InsufficientBytes(_))
}

fn v5_incomplete(error: &V5Error) -> bool {
    matches!(error, V5Error::InsufficientBytes(_))
}

/// After rumqttc said "insufficient bytes": more are needed if it left the buffer alone
/// (`before` bytes), but if it took the packet off, the packet was whole and its contents
/// overran it (a string or property length past its end). Waiting would read the next
/// packet's bytes as the rest of this one.
fn waiting_or_short<T>(buffer: &BytesMut, before: usize) -> Result<Option<T>, CodecError> {
    if buffer.len() == before {
        Ok(None)
    } else {
        Err(CodecError::Malformed(
            "the packet's contents are longer than its remaining length".to_owned(),
        ))
    }
}

impl Protocol {
    /// The protocol of a CONNECT's level byte, if served.
    pub fn from_level(level: u8) -> Option<Protocol> {
        match level {
            4 => Some(Protocol::V4),
            5 => Some(Protocol::V5),
            _ => None,
        }
    }

    /// Takes the next whole packet off the front of `buffer`; `Ok(None)` when more bytes
    /// are needed. `max_packet` bounds the remaining length.
    pub fn decode(
        self,
        buffer: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<Incoming>, CodecError> {
        match self.read_packet(buffer, max_packet)? {
            None => Ok(None),
            Some(WirePacket::V4(packet)) => from_v4(packet).map(Some),
            Some(WirePacket::V5(packet)) => from_v5(packet).map(Some),
        }
    }

    /// Takes the next whole packet of any kind off the front of `buffer`, in rumqttc's
    /// types; `Ok(None)` when more bytes are needed. Both ends of a connection read with
    /// it: the server's sessions through [`Protocol::decode`], the remote bridge directly.
    pub fn read_packet(
        self,
        buffer: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<WirePacket>, CodecError> {
        let before = buffer.len();
        match self {
            Protocol::V4 => match v4::Packet::read(buffer, max_packet) {
                Ok(packet) => Ok(Some(WirePacket::V4(packet))),
                Err(error) if v4_incomplete(&error) => waiting_or_short(buffer, before),
                Err(error) => Err(v4_error(error, max_packet)),
            },
            Protocol::V5 => {
                // rumqttc refuses a DISCONNECT without reason code (remaining length 0),
                // which MQTT 5 section 3.14.2.1 allows and means "normal disconnection".
                if buffer.starts_with(&[0xE0, 0x00]) {
                    let _ = buffer.split_to(2);
                    let normal = v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection);
                    return Ok(Some(WirePacket::V5(v5::Packet::Disconnect(normal))));
                }
                let max = u32::try_from(max_packet).unwrap_or(u32::MAX);
                match v5::Packet::read(buffer, Some(max)) {
                    Ok(packet) => Ok(Some(WirePacket::V5(packet))),
                    Err(error) if v5_incomplete(&error) => waiting_or_short(buffer, before),
                    Err(error) => Err(v5_error(error)),
                }
            }
        }
    }

    /// Appends any packet of this protocol's version to `buffer`; `max_packet` is the
    /// peer's limit, where it announced one.
    pub fn write_packet(
        self,
        packet: &WirePacket,
        buffer: &mut BytesMut,
        max_packet: Option<u32>,
    ) -> Result<(), CodecError> {
        match packet {
            WirePacket::V4(packet) => v4_write(packet, buffer),
            WirePacket::V5(packet) => v5_write(packet, buffer, max_packet),
        }
    }

    /// CONNACK accepting the connection. MQTT 5 also hears the client identifier the
    /// server assigned and the server's limits.
    pub fn encode_connack_accepted(
        self,
        buffer: &mut BytesMut,
        assigned_client_id: Option<String>,
        receive_maximum: u16,
        maximum_packet_size: usize,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => {
                let connack = v4::ConnAck::new(v4::ConnectReturnCode::Success, false);
                v4_write(&v4::Packet::ConnAck(connack), buffer)
            }
            Protocol::V5 => {
                let properties = v5::ConnAckProperties {
                    // Sessions are not kept after the connection ends.
                    session_expiry_interval: Some(0),
                    receive_max: Some(receive_maximum),
                    // QoS 2 from clients is accepted, but handled as QoS 1.
                    max_qos: Some(1),
                    retain_available: Some(1),
                    max_packet_size: Some(u32::try_from(maximum_packet_size).unwrap_or(u32::MAX)),
                    assigned_client_identifier: assigned_client_id,
                    topic_alias_max: Some(TOPIC_ALIAS_MAXIMUM),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                let connack = v5::ConnAck {
                    session_present: false,
                    code: v5::ConnectReturnCode::Success,
                    properties: Some(properties),
                };
                v5_write(&v5::Packet::ConnAck(connack), buffer, None)
            }
        }
    }

    /// CONNACK refusing a client, then the server closes the connection.
    pub fn encode_connack_refused(
        self,
        buffer: &mut BytesMut,
        refusal: ConnectRefusal,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => {
                let code = match refusal {
                    ConnectRefusal::Full => v4::ConnectReturnCode::ServiceUnavailable,
                    ConnectRefusal::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                    ConnectRefusal::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                };
                v4_write(&v4::Packet::ConnAck(v4::ConnAck::new(code, false)), buffer)
            }
            Protocol::V5 => {
                let code = match refusal {
                    ConnectRefusal::Full => v5::ConnectReturnCode::QuotaExceeded,
                    ConnectRefusal::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnectRefusal::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                };
                let connack = v5::ConnAck {
                    session_present: false,
                    code,
                    properties: None,
                };
                v5_write(&v5::Packet::ConnAck(connack), buffer, None)
            }
        }
    }

    /// PUBLISH to the client. MQTT 5 clients get `properties` as user properties; MQTT
    /// 3.1.1 clients get no properties at all. `max_packet` is the client's own limit.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_publish(
        self,
        buffer: &mut BytesMut,
        topic: &str,
        payload: &Bytes,
        qos: u8,
        pkid: u16,
        retain: bool,
        properties: Vec<(String, String)>,
        max_packet: Option<u32>,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => {
                let publish = v4::Publish {
                    dup: false,
                    qos: v4_qos(qos),
                    retain,
                    topic: topic.to_owned(),
                    pkid,
                    payload: payload.clone(),
                };
                v4_write(&v4::Packet::Publish(publish), buffer)
            }
            Protocol::V5 => {
                let properties = (!properties.is_empty()).then(|| v5::PublishProperties {
                    user_properties: properties,
                    ..Default::default()
                });
                let publish = v5::Publish {
                    dup: false,
                    qos: v5_qos(qos),
                    retain,
                    topic: Bytes::copy_from_slice(topic.as_bytes()),
                    pkid,
                    payload: payload.clone(),
                    properties,
                };
                v5_write(&v5::Packet::Publish(publish), buffer, max_packet)
            }
        }
    }

    /// PUBACK; `denied` (MQTT 5 only) says "not authorized" (0x87).
    pub fn encode_puback(
        self,
        buffer: &mut BytesMut,
        pkid: u16,
        denied: bool,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => v4_write(&v4::Packet::PubAck(v4::PubAck::new(pkid)), buffer),
            Protocol::V5 => {
                let mut puback = v5::PubAck::new(pkid, None);
                if denied {
                    puback.reason = v5::PubAckReason::NotAuthorized;
                }
                v5_write(&v5::Packet::PubAck(puback), buffer, None)
            }
        }
    }

    /// PUBREC (first answer to a QoS 2 PUBLISH); `denied` as for PUBACK.
    pub fn encode_pubrec(
        self,
        buffer: &mut BytesMut,
        pkid: u16,
        denied: bool,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => v4_write(&v4::Packet::PubRec(v4::PubRec::new(pkid)), buffer),
            Protocol::V5 => {
                let mut pubrec = v5::PubRec::new(pkid, None);
                if denied {
                    pubrec.reason = v5::PubRecReason::NotAuthorized;
                }
                v5_write(&v5::Packet::PubRec(pubrec), buffer, None)
            }
        }
    }

    /// PUBCOMP (answer to PUBREL).
    pub fn encode_pubcomp(self, buffer: &mut BytesMut, pkid: u16) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => v4_write(&v4::Packet::PubComp(v4::PubComp::new(pkid)), buffer),
            Protocol::V5 => {
                let pubcomp = v5::PubComp::new(pkid, None);
                v5_write(&v5::Packet::PubComp(pubcomp), buffer, None)
            }
        }
    }

    /// SUBACK: per filter the granted QoS or why it was refused. MQTT 3.1.1 has one
    /// failure code (0x80) for every refusal.
    pub fn encode_suback(
        self,
        buffer: &mut BytesMut,
        pkid: u16,
        granted: &[Granted],
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => {
                let codes = granted
                    .iter()
                    .map(|granted| match granted {
                        Granted::Qos(qos) => v4::SubscribeReasonCode::Success(v4_qos(*qos)),
                        Granted::Invalid | Granted::NotAuthorized => {
                            v4::SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                v4_write(&v4::Packet::SubAck(v4::SubAck::new(pkid, codes)), buffer)
            }
            Protocol::V5 => {
                let return_codes = granted
                    .iter()
                    .map(|granted| match granted {
                        Granted::Qos(qos) => v5::SubscribeReasonCode::Success(v5_qos(*qos)),
                        Granted::Invalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                        Granted::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                    })
                    .collect();
                let suback = v5::SubAck {
                    pkid,
                    return_codes,
                    properties: None,
                };
                v5_write(&v5::Packet::SubAck(suback), buffer, None)
            }
        }
    }

    /// UNSUBACK for `count` filters.
    pub fn encode_unsuback(
        self,
        buffer: &mut BytesMut,
        pkid: u16,
        count: usize,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => v4_write(&v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)), buffer),
            Protocol::V5 => {
                let unsuback = v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                };
                v5_write(&v5::Packet::UnsubAck(unsuback), buffer, None)
            }
        }
    }

    /// PINGRESP.
    pub fn encode_pingresp(self, buffer: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => v4_write(&v4::Packet::PingResp, buffer),
            Protocol::V5 => v5_write(&v5::Packet::PingResp(v5::PingResp), buffer, None),
        }
    }

    /// MQTT 5 DISCONNECT with `reason` before the server closes; nothing for 3.1.1, which
    /// has no server-sent DISCONNECT.
    pub fn encode_disconnect(
        self,
        buffer: &mut BytesMut,
        reason: v5::DisconnectReasonCode,
    ) -> Result<(), CodecError> {
        match self {
            Protocol::V4 => Ok(()),
            Protocol::V5 => {
                let disconnect = v5::Disconnect::new(reason);
                v5_write(&v5::Packet::Disconnect(disconnect), buffer, None)
            }
        }
    }
}

fn v4_write(packet: &v4::Packet, buffer: &mut BytesMut) -> Result<(), CodecError> {
    packet
        .write(buffer, usize::MAX)
        .map(drop)
        .map_err(|error| v4_error(error, usize::MAX))
}

fn v5_write(
    packet: &v5::Packet,
    buffer: &mut BytesMut,
    max_packet: Option<u32>,
) -> Result<(), CodecError> {
    packet.write(buffer, max_packet).map(drop).map_err(v5_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(level: u8) -> Vec<u8> {
        // CONNECT, remaining length 13: name "MQTT", level, flags, keepalive, client id "a".
        vec![
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60, 0, 1, b'a',
        ]
    }

    #[test]
    fn the_protocol_level_is_found_in_partial_input() {
        let bytes = connect_bytes(5);
        for cut in 0..9 {
            assert_eq!(
                peek_protocol_level(&bytes[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(peek_protocol_level(&bytes[..9]).unwrap(), Some(5));
        assert_eq!(peek_protocol_level(&connect_bytes(4)).unwrap(), Some(4));
        assert_eq!(peek_protocol_level(&connect_bytes(3)).unwrap(), Some(3));
        assert!(peek_protocol_level(&[0x30, 0x00]).is_err(), "not CONNECT");
        assert!(
            peek_protocol_level(&[0x10, 0x02, 0, 4]).is_err(),
            "too short"
        );
        assert!(peek_protocol_level(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn both_versions_decode_connect_and_a_split_packet_waits() {
        for (level, protocol) in [(4, Protocol::V4), (5, Protocol::V5)] {
            let mut bytes = connect_bytes(level);
            if level == 5 {
                // MQTT 5 has a property length after the keepalive.
                bytes.insert(12, 0);
                bytes[1] += 1;
            }
            let mut buffer = BytesMut::from(&bytes[..5]);
            assert!(protocol.decode(&mut buffer, 1024).unwrap().is_none());
            buffer.extend_from_slice(&bytes[5..]);
            let Some(Incoming::Connect(connect)) = protocol.decode(&mut buffer, 1024).unwrap()
            else {
                panic!("CONNECT expected");
            };
            assert_eq!(connect.client_id, "a");
            assert_eq!(connect.keep_alive, 60);
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn oversized_and_malformed_packets_are_told_apart() {
        let mut buffer = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        assert!(matches!(
            Protocol::V4.decode(&mut buffer, 100),
            Err(CodecError::TooLarge(_))
        ));
        let mut buffer = BytesMut::from(&[0xF0, 0x00][..]);
        assert!(matches!(
            Protocol::V5.decode(&mut buffer, 100),
            Err(CodecError::Malformed(_))
        ));
        let mut buffer = BytesMut::from(&[0xE0, 0x00][..]);
        assert!(matches!(
            Protocol::V5.decode(&mut buffer, 100),
            Ok(Some(Incoming::Disconnect {
                publish_will: false
            }))
        ));
    }

    /// Found by the `mqtt_packets` fuzz target: a whole packet whose contents claim more
    /// bytes than its remaining length was taken off the buffer yet reported "incomplete",
    /// so the session waited and decoded the next packet from the wrong offset.
    #[test]
    fn a_packet_shorter_than_its_contents_is_malformed() {
        let cases: [(Protocol, &[u8]); 3] = [
            // The fuzzer's input: a CONNACK of 2 bytes, too short for its properties.
            (Protocol::V5, &[0x2a, 0x02, 0xff, 0xff, 0x00, 0x00]),
            // PUBLISH "a" whose property length (5) runs past the packet.
            (
                Protocol::V5,
                &[0x30, 0x04, 0x00, 0x01, b'a', 0x05, 0xc0, 0x00],
            ),
            // SUBSCRIBE whose filter length (5) runs past the packet.
            (
                Protocol::V4,
                &[0x82, 0x04, 0x00, 0x01, 0x00, 0x05, 0xc0, 0x00],
            ),
        ];
        for (protocol, bytes) in cases {
            let mut buffer = BytesMut::from(bytes);
            assert!(
                matches!(
                    protocol.decode(&mut buffer, 1024),
                    Err(CodecError::Malformed(_))
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn v4_publishes_carry_no_properties() {
        let mut buffer = BytesMut::new();
        let properties = vec![("k".to_owned(), "v".to_owned())];
        Protocol::V4
            .encode_publish(
                &mut buffer,
                "é/x",
                &Bytes::from_static(b"p"),
                1,
                7,
                true,
                properties,
                None,
            )
            .unwrap();
        let Some(Incoming::Publish(publish)) = Protocol::V4.decode(&mut buffer, 1024).unwrap()
        else {
            panic!("PUBLISH expected");
        };
        assert_eq!(publish.topic, "é/x");
        assert_eq!((publish.qos, publish.pkid, publish.retain), (1, 7, true));
        assert!(publish.user_properties.is_empty());
    }
}

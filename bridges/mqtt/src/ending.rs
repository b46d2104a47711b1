//! Why a client's session ended: what the log says, whether the will is published, and
//! the reason an MQTT 5 client is told.

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

use crate::ingress::Violation;

/// Why a session ended.
#[derive(Debug)]
pub enum Ending {
    /// The client sent DISCONNECT (MQTT 5 may still ask for its will).
    Disconnected { publish_will: bool },
    /// The client closed the connection.
    Closed,
    /// Reading or writing failed.
    Failed(std::io::Error),
    /// The client broke the protocol.
    Violation(Violation),
    /// Nothing arrived within 1.5 times the keepalive (MQTT 3.1.1 section 3.1.2.10).
    KeepAliveExpired,
    /// A newer connection uses the same client identifier.
    TakenOver,
    /// The client's queue overflowed under `slow_client = "disconnect"`.
    Kicked,
    /// A message from the client was given up by a destination; closing makes the client
    /// send it again when it reconnects.
    NotDelivered,
    /// The hub is stopping.
    Shutdown,
}

impl Ending {
    /// Whether the client's will is published (every end but a plain DISCONNECT and the
    /// hub's own shutdown).
    pub fn publishes_will(&self) -> bool {
        match self {
            Ending::Disconnected { publish_will } => *publish_will,
            Ending::Shutdown => false,
            _ => true,
        }
    }

    /// The MQTT 5 DISCONNECT reason the server sends, if it says goodbye.
    pub fn reason(&self) -> Option<DisconnectReasonCode> {
        match self {
            Ending::Violation(violation) => Some(violation.reason),
            Ending::KeepAliveExpired => Some(DisconnectReasonCode::KeepAliveTimeout),
            Ending::TakenOver => Some(DisconnectReasonCode::SessionTakenOver),
            Ending::Kicked => Some(DisconnectReasonCode::QuotaExceeded),
            Ending::NotDelivered => Some(DisconnectReasonCode::ImplementationSpecificError),
            Ending::Shutdown => Some(DisconnectReasonCode::ServerShuttingDown),
            Ending::Disconnected { .. } | Ending::Closed | Ending::Failed(_) => None,
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Disconnected { .. } => f.write_str("the client disconnected"),
            Ending::Closed => f.write_str("the client closed the connection"),
            Ending::Failed(error) => write!(f, "the connection failed: {error}"),
            Ending::Violation(violation) => {
                write!(f, "the client broke the protocol: {}", violation.detail)
            }
            Ending::KeepAliveExpired => f.write_str("the client's keepalive expired"),
            Ending::TakenOver => f.write_str("a newer connection took the client identifier"),
            Ending::Kicked => f.write_str("the client read too slowly"),
            Ending::NotDelivered => f.write_str("a message from the client was not delivered"),
            Ending::Shutdown => f.write_str("the hub is stopping"),
        }
    }
}

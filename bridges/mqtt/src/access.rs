//! Who may do what on the broker: the one place where each CONNECT, PUBLISH (and will
//! message) and SUBSCRIBE is allowed or denied.
//!
//! Today every client may do everything ([`AllowAll`]); the bridge's `in` and `out` rules
//! still decide which topics enter and leave the hub. Users and topic ACLs plug in here:
//! implement [`Access`] and give it to the bridge with
//! [`MqttServer::with_access`](crate::MqttServer::with_access).
//!
//! What a denial does, in the session:
//! - CONNECT: CONNACK "not authorized" (MQTT 3.1.1 return code 5, MQTT 5 reason 0x87),
//!   then the connection closes.
//! - PUBLISH: the message is dropped and counted as `denied`; QoS 1 and 2 publishes are
//!   still answered (MQTT 5 with reason "not authorized"), so the client does not resend.
//!   A denied will message is dropped and counted the same way.
//! - SUBSCRIBE: that filter's SUBACK code is a failure (MQTT 3.1.1 0x80, MQTT 5 0x87
//!   "not authorized"); the other filters of the packet are unaffected.

/// A connected (or connecting) client, as access decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client identifier (the one the server assigned when the client sent none).
    pub client_id: String,
    /// The user name from CONNECT, if any.
    pub username: Option<String>,
}

/// Decides what clients may do. Called on the connection's task for every decision, so
/// implementations must be quick and must not block.
pub trait Access: Send + Sync {
    /// Whether `client` may connect at all.
    fn may_connect(&self, client: &Identity) -> bool;
    /// Whether `client` may publish to `topic` (as the client wrote it).
    fn may_publish(&self, client: &Identity, topic: &str) -> bool;
    /// Whether `client` may subscribe to `filter` (as the client wrote it).
    fn may_subscribe(&self, client: &Identity, filter: &str) -> bool;
}

/// The policy of a broker without users or ACLs: everything is allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Access for AllowAll {
    fn may_connect(&self, _client: &Identity) -> bool {
        true
    }

    fn may_publish(&self, _client: &Identity, _topic: &str) -> bool {
        true
    }

    fn may_subscribe(&self, _client: &Identity, _filter: &str) -> bool {
        true
    }
}

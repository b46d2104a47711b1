//! Who may do what on the broker: the one place where each CONNECT, PUBLISH (and will
//! message) and SUBSCRIBE is allowed or denied.
//!
//! Two policies are asked, and both must allow: the configured one (`users_file`,
//! `allow_anonymous`, `acl`: `switchyard_api::access::AccessPolicy`, shared with the
//! WebSocket server) and a hook for code that embeds the broker (by default [`AllowAll`]),
//! given with [`MqttServer::with_access`](crate::MqttServer::with_access). The bridge's
//! `in` and `out` rules still decide which topics enter and leave the hub.
//!
//! The login (user name and password, or client certificate) happens before these
//! decisions: a wrong password is answered CONNACK "bad user name or password" (MQTT 3.1.1
//! return code 4, MQTT 5 reason 0x86), a client without credentials where anonymous
//! clients are not allowed "not authorized" (5, 0x87).
//!
//! What a denial does, in the session:
//! - CONNECT: CONNACK "not authorized" (MQTT 3.1.1 return code 5, MQTT 5 reason 0x87),
//!   then the connection closes.
//! - PUBLISH: the message is dropped and counted as `denied`; QoS 1 and 2 publishes are
//!   still answered (MQTT 5 with reason "not authorized"), so the client does not resend.
//!   A denied will message is dropped and counted the same way.
//! - SUBSCRIBE: that filter's SUBACK code is a failure (MQTT 3.1.1 0x80, MQTT 5 0x87
//!   "not authorized"); the other filters of the packet are unaffected. A filter the ACL
//!   lets the client read only in part (`#` for a user who may read `a/#`) is accepted,
//!   and each message is checked at delivery, as Mosquitto does.

use std::sync::Arc;

use switchyard_api::access::AccessPolicy;
use switchyard_api::acl::ReadGrant;

/// A connected (or connecting) client, as access decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client identifier (the one the server assigned when the client sent none).
    pub client_id: String,
    /// The user the client logged in as (user name and password, or the common name of
    /// its client certificate); `None` for an anonymous client.
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

/// The configured policy and the embedding hook together: both must allow.
pub struct Both {
    /// The configuration's users and ACL.
    pub policy: Arc<AccessPolicy>,
    /// The embedding code's hook.
    pub hook: Arc<dyn Access>,
}

impl Access for Both {
    fn may_connect(&self, client: &Identity) -> bool {
        self.hook.may_connect(client)
    }

    fn may_publish(&self, client: &Identity, topic: &str) -> bool {
        self.policy.may_write(client.username.as_deref(), topic)
            && self.hook.may_publish(client, topic)
    }

    fn may_subscribe(&self, client: &Identity, filter: &str) -> bool {
        self.policy.read_grant(client.username.as_deref(), filter) != ReadGrant::Denied
            && self.hook.may_subscribe(client, filter)
    }
}

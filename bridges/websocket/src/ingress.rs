//! Client → hub: a `{"op":"publish",...}` frame becomes a hub [`Message`].
//!
//! The frame is the JSON envelope (read by `switchyard_api::envelope`); its topic must be a
//! valid topic name and pass an `in` rule, which maps it into the hub's namespace and caps
//! its QoS. A QoS 1 publish carries an [`Ack`]; the connection answers `ack` once every
//! destination has taken it, without holding up its reading (see [`PendingAck`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchyard_api::access::AccessPolicy;
use switchyard_api::envelope;
use switchyard_api::message::{now_ms, HOPS_HEADER};
use switchyard_api::server::ConnectionId;
use switchyard_api::topic::validate_topic_name;
use switchyard_api::{Ack, AckOutcome, AckReceiver, BridgeContext, DropReason, Message, QoS};

use crate::control::{ErrorReason, Refusal};

/// A publish the hub refused, with the envelope's `id` when it could be read.
#[derive(Debug)]
pub struct RefusedPublish {
    /// Why.
    pub refusal: Refusal,
    /// The `id` the client gave the publish.
    pub id: Option<String>,
}

/// A QoS 1 publish waiting for its destinations; resolves to its `id` and outcome.
pub struct PendingAck {
    /// The publish's `id`, echoed in the reply.
    id: Option<String>,
    /// Resolves when every destination has confirmed or given up the message.
    receiver: AckReceiver,
}

impl Future for PendingAck {
    type Output = (Option<String>, AckOutcome);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|outcome| (self.id.take(), outcome))
    }
}

/// Who publishes: the connection, and the user the ACL knows it as.
#[derive(Clone, Copy)]
pub struct Publisher<'a> {
    /// The connection (recorded as the message's sender).
    pub connection: ConnectionId,
    /// The client's user (`None` = anonymous).
    pub user: Option<&'a str>,
    /// The bridge's ACL.
    pub policy: &'a AccessPolicy,
}

/// Hands the envelope in `text` to the hub as published by `publisher`. Returns the
/// acknowledgement to wait for (QoS 1), or why the publish was refused (counted).
pub async fn publish(
    ctx: &BridgeContext,
    publisher: Publisher<'_>,
    text: &str,
) -> Result<Option<PendingAck>, RefusedPublish> {
    let message = match to_message(ctx, publisher, text) {
        Ok(message) => message,
        Err(refused) => {
            let reason = match refused.refusal.reason {
                ErrorReason::Denied | ErrorReason::NotAuthorized => DropReason::Denied,
                _ => DropReason::Invalid,
            };
            ctx.metrics.dropped(reason, &refused.refusal.detail);
            return Err(refused);
        }
    };
    if message.qos == QoS::AtMostOnce {
        ctx.publish(message, None).await;
        return Ok(None);
    }
    let id = message.id.as_deref().map(str::to_owned);
    let (ack, receiver) = Ack::new();
    ctx.publish(message, Some(ack)).await;
    Ok(Some(PendingAck { id, receiver }))
}

/// Reads, checks and maps the envelope.
fn to_message(
    ctx: &BridgeContext,
    publisher: Publisher<'_>,
    text: &str,
) -> Result<Message, RefusedPublish> {
    let envelope = envelope::decode(text.as_bytes()).map_err(|error| RefusedPublish {
        refusal: Refusal::invalid(format!("publish: {error}")),
        id: None,
    })?;
    let id = envelope.id;
    let refuse = |reason, detail: String| RefusedPublish {
        refusal: Refusal::new(reason, detail),
        id: id.clone(),
    };
    if let Err(error) = validate_topic_name(&envelope.topic) {
        return Err(refuse(
            ErrorReason::Invalid,
            format!("expected a topic name, found {:?}: {error}", envelope.topic),
        ));
    }
    if !publisher.policy.may_write(publisher.user, &envelope.topic) {
        return Err(refuse(
            ErrorReason::NotAuthorized,
            format!(
                "the ACL does not let this client publish to {:?}",
                envelope.topic
            ),
        ));
    }
    let inbound = match ctx.rules.inbound(&envelope.topic) {
        Ok(Some(inbound)) => inbound,
        Ok(None) => {
            return Err(refuse(
                ErrorReason::Denied,
                format!(
                    "no `in` rule of bridge {} lets topic {:?} into the hub",
                    ctx.name, envelope.topic
                ),
            ))
        }
        Err(invalid) => return Err(refuse(ErrorReason::Invalid, invalid.to_string())),
    };
    let topic = inbound.topic;
    let mut headers = envelope.headers;
    let hops = take_hops(&mut headers).map_err(|found| {
        refuse(
            ErrorReason::Invalid,
            format!("expected header {HOPS_HEADER} to be a number from 0 to 255, found {found:?}"),
        )
    })?;
    Ok(Message {
        topic,
        payload: envelope.payload,
        headers,
        qos: envelope.qos.min(inbound.qos),
        retain: envelope.retain,
        id: id.map(Arc::from),
        timestamp_ms: envelope.timestamp_ms.unwrap_or_else(now_ms),
        hops,
        origin: ctx.id,
        sender: publisher.connection,
    })
}

/// Removes the hop count header and returns its value (0 when absent), or the bad value.
fn take_hops(headers: &mut Vec<(String, String)>) -> Result<u8, String> {
    let Some(index) = headers.iter().position(|(key, _)| key == HOPS_HEADER) else {
        return Ok(0);
    };
    let (_, value) = headers.remove(index);
    value.trim().parse::<u8>().map_err(|_| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_header_becomes_the_hop_count() {
        let mut headers = vec![
            ("a".to_owned(), "1".to_owned()),
            (HOPS_HEADER.to_owned(), "3".to_owned()),
        ];
        assert_eq!(take_hops(&mut headers), Ok(3));
        assert_eq!(headers, vec![("a".to_owned(), "1".to_owned())]);
        assert_eq!(take_hops(&mut headers), Ok(0));
        let mut bad = vec![(HOPS_HEADER.to_owned(), "many".to_owned())];
        assert_eq!(take_hops(&mut bad), Err("many".to_owned()));
    }
}

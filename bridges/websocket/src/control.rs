//! The client's side of the protocol: reading a text frame into a [`Request`] and writing
//! the server's [`Reply`] frames.
//!
//! Every frame from a client is one JSON object with an `op`: `subscribe` and
//! `unsubscribe` (with a `filter`), `publish` (the JSON envelope plus `op`), and `ping`.
//! The server answers `subscribed`, `unsubscribed`, `ack`, `pong` or
//! `{"op":"error","reason":...,"detail":...}`; an error never closes the connection.

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as Frame;

/// The ops a client may send, for error details.
const KNOWN_OPS: &str = "subscribe, unsubscribe, publish or ping";

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Add a subscription with this filter (not yet validated).
    Subscribe(String),
    /// Remove the subscription with this filter.
    Unsubscribe(String),
    /// Publish: the frame is a JSON envelope, read by the ingress.
    Publish,
    /// Liveness check at the application level.
    Ping,
}

/// The fields every request may carry; the envelope's fields are read later, for
/// publishes only.
#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    op: Option<serde_json::Value>,
    #[serde(default)]
    filter: Option<serde_json::Value>,
}

/// Why a frame was answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// Not a well-formed request (bad JSON, missing field, bad topic or filter).
    Invalid,
    /// No `in` rule lets the topic into the hub.
    Denied,
    /// The ACL does not let this client publish to the topic or subscribe to the filter.
    NotAuthorized,
    /// The `op` is not one the server knows.
    UnknownOp,
    /// A QoS 1 publish did not reach every destination.
    NotDelivered,
}

/// A refused request: the reason label and a detail saying what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `reason` of the error reply.
    pub reason: ErrorReason,
    /// The `detail` of the error reply.
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason`.
    pub fn new(reason: ErrorReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// An `invalid` refusal.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorReason::Invalid, detail)
    }
}

/// A frame the server sends in answer to a request.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply<'a> {
    /// The subscription is in place.
    Subscribed {
        /// The filter as the client wrote it.
        filter: &'a str,
    },
    /// The subscription is gone (or never existed).
    Unsubscribed {
        /// The filter as the client wrote it.
        filter: &'a str,
    },
    /// Answer to `{"op":"ping"}`.
    Pong,
    /// A QoS 1 publish reached every destination.
    Ack {
        /// The publish's `id` (`null` when it had none).
        id: Option<&'a str>,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// Machine-readable reason.
        reason: ErrorReason,
        /// What was expected and what was found.
        detail: &'a str,
        /// The `id` of the publish concerned, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl Reply<'_> {
    /// The text frame that carries this reply.
    pub fn to_frame(&self) -> Frame {
        // Serializing these fixed shapes of strings and unit values cannot fail; should it,
        // the client gets an empty object rather than the connection being torn down.
        let text = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        Frame::text(text)
    }
}

impl<'a> Reply<'a> {
    /// The error reply for `refusal`, naming the publish `id` when there is one.
    pub fn refused(refusal: &'a Refusal, id: Option<&'a str>) -> Self {
        Reply::Error {
            reason: refusal.reason,
            detail: &refusal.detail,
            id,
        }
    }
}

/// Reads a text frame's request, or says what is wrong with it.
pub fn parse_request(text: &str) -> Result<Request, Refusal> {
    // Checked first because serde would also read a struct from an array.
    if !text.trim_start().starts_with('{') {
        return Err(Refusal::invalid(format!(
            "expected a JSON object with an \"op\", found {}",
            json_kind(text)
        )));
    }
    let fields: Fields = serde_json::from_str(text).map_err(|error| {
        if error.is_data() {
            Refusal::invalid(format!("expected a JSON object with an \"op\": {error}"))
        } else {
            Refusal::invalid(format!(
                "expected a JSON object, found malformed JSON: {error}"
            ))
        }
    })?;
    let op = match fields.op {
        Some(serde_json::Value::String(op)) => op,
        Some(other) => {
            return Err(Refusal::invalid(format!(
                "expected \"op\" to be a string ({KNOWN_OPS}), found {}",
                json_kind(&other.to_string())
            )))
        }
        None => {
            return Err(Refusal::invalid(format!(
                "expected an \"op\" field ({KNOWN_OPS}), found none"
            )))
        }
    };
    match op.as_str() {
        "subscribe" => filter_of(&op, fields.filter).map(Request::Subscribe),
        "unsubscribe" => filter_of(&op, fields.filter).map(Request::Unsubscribe),
        "publish" => Ok(Request::Publish),
        "ping" => Ok(Request::Ping),
        _ => Err(Refusal::new(
            ErrorReason::UnknownOp,
            format!("expected op {KNOWN_OPS}, found {op:?}"),
        )),
    }
}

/// The `filter` string of a subscribe or unsubscribe.
fn filter_of(op: &str, filter: Option<serde_json::Value>) -> Result<String, Refusal> {
    match filter {
        Some(serde_json::Value::String(filter)) => Ok(filter),
        Some(other) => Err(Refusal::invalid(format!(
            "expected \"filter\" of {op} to be a string such as \"a/#\", found {}",
            json_kind(&other.to_string())
        ))),
        None => Err(Refusal::invalid(format!(
            "expected a \"filter\" string for {op}, such as \"a/#\", found none"
        ))),
    }
}

/// Names the kind of JSON value `text` starts with, for error details.
fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "something that is not JSON",
        None => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> Refusal {
        parse_request(text).expect_err("refused")
    }

    #[test]
    fn requests_are_recognised() {
        assert_eq!(
            parse_request(r#"{"op":"subscribe","filter":"a/#"}"#),
            Ok(Request::Subscribe("a/#".into()))
        );
        assert_eq!(
            parse_request(r#"{"filter":"a/+","op":"unsubscribe","extra":1}"#),
            Ok(Request::Unsubscribe("a/+".into()))
        );
        assert_eq!(
            parse_request(r#"{"op":"publish","topic":"t","payload":{"x":1}}"#),
            Ok(Request::Publish)
        );
        assert_eq!(parse_request(r#" {"op":"ping"} "#), Ok(Request::Ping));
    }

    #[test]
    fn malformed_requests_say_what_was_expected_and_found() {
        let cases = [
            ("{not json", "malformed JSON"),
            ("", "found nothing"),
            ("{\"op\":\"ping\"", "malformed JSON"),
            ("<html>", "not JSON"),
            (r#"{"op":"ping","op":"ping"}"#, "duplicate field"),
            ("[1,2]", "found an array"),
            ("42", "found a number"),
            ("\"ping\"", "found a string"),
            ("null", "found null"),
            (r#"{"filter":"a"}"#, "expected an \"op\" field"),
            (r#"{"op":7}"#, "\"op\" to be a string"),
            (r#"{"op":"subscribe"}"#, "\"filter\" string for subscribe"),
            (r#"{"op":"unsubscribe","filter":[]}"#, "found an array"),
        ];
        for (text, detail) in cases {
            let refusal = refusal(text);
            assert_eq!(refusal.reason, ErrorReason::Invalid, "{text}");
            assert!(
                refusal.detail.contains(detail),
                "{text}: {}",
                refusal.detail
            );
        }
    }

    #[test]
    fn unknown_ops_are_named() {
        let refusal = refusal(r#"{"op":"dance"}"#);
        assert_eq!(refusal.reason, ErrorReason::UnknownOp);
        assert!(refusal.detail.contains("\"dance\""), "{}", refusal.detail);
        assert!(refusal.detail.contains("subscribe"), "{}", refusal.detail);
    }

    fn text_of(reply: Reply<'_>) -> String {
        match reply.to_frame() {
            Frame::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text frame, found {other:?}"),
        }
    }

    #[test]
    fn replies_have_the_documented_shape() {
        assert_eq!(
            text_of(Reply::Subscribed { filter: "a/#" }),
            r#"{"op":"subscribed","filter":"a/#"}"#
        );
        assert_eq!(
            text_of(Reply::Unsubscribed { filter: "a/#" }),
            r#"{"op":"unsubscribed","filter":"a/#"}"#
        );
        assert_eq!(text_of(Reply::Pong), r#"{"op":"pong"}"#);
        assert_eq!(
            text_of(Reply::Ack { id: None }),
            r#"{"op":"ack","id":null}"#
        );
        assert_eq!(
            text_of(Reply::Ack { id: Some("m1") }),
            r#"{"op":"ack","id":"m1"}"#
        );
        let refusal = Refusal::new(ErrorReason::UnknownOp, "expected \"x\"");
        assert_eq!(
            text_of(Reply::refused(&refusal, None)),
            r#"{"op":"error","reason":"unknown_op","detail":"expected \"x\""}"#
        );
        let refusal = Refusal::new(ErrorReason::NotDelivered, "lost");
        assert_eq!(
            text_of(Reply::refused(&refusal, Some("m2"))),
            r#"{"op":"error","reason":"not_delivered","detail":"lost","id":"m2"}"#
        );
    }
}

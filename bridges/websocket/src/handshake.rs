//! The HTTP upgrade: which requests become WebSocket connections, with which initial
//! subscriptions (`?subscribe=FILTER`, repeatable), and the per-connection buffer sizes.
//!
//! A request for another path gets 404, a bad `subscribe` filter 400, a wrong bearer token
//! (or none where anonymous clients are not allowed) 401, and a request beyond
//! `max_connections` 503. The whole exchange runs under `handshake_timeout`, so a silent
//! socket or garbage bytes cost one short-lived task and never delay other clients.

use std::time::Duration;

use std::sync::Arc;

use switchyard_api::access::{AccessPolicy, Credentials};
use switchyard_api::topic::TopicError;
use switchyard_api::TopicFilter;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::config::ServerSettings;

/// Bytes tungstenite allocates up front to read each connection's frames. Idle firehose
/// clients send almost nothing, so this is small (the default is 128 KiB); a larger frame
/// grows the buffer as needed.
const READ_BUFFER_BYTES: usize = 4 << 10;

/// Bytes of outgoing frames gathered before they are written to the socket (a flush
/// writes whatever is gathered). Small enough to keep idle connections light, large
/// enough to batch a burst of small messages into few writes.
const WRITE_BUFFER_BYTES: usize = 8 << 10;

/// The query parameter that subscribes at connect time.
const SUBSCRIBE_PARAMETER: &str = "subscribe";

/// The query parameter that carries a bearer token (for clients that cannot set headers,
/// such as browsers).
const TOKEN_PARAMETER: &str = "token";

/// An admitted client: its subscriptions and who it is (`None` = anonymous).
pub struct Admitted {
    /// The filters of its `subscribe` parameters.
    pub filters: Vec<TopicFilter>,
    /// The user it logged in as.
    pub user: Option<Arc<str>>,
}

/// What the handshake checks the request against.
pub struct Gate<'a> {
    /// The bridge's settings.
    pub settings: &'a ServerSettings,
    /// Tokens, anonymous clients.
    pub policy: &'a AccessPolicy,
    /// False when the bridge is at `max_connections` (answered 503).
    pub admitted: bool,
    /// The common name of the client's verified TLS certificate.
    pub certificate_user: Option<String>,
}

/// Why a connection did not become a WebSocket client.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Nothing complete arrived within `handshake_timeout`.
    #[error("no complete WebSocket handshake within {0:?}")]
    TimedOut(Duration),
    /// The request was answered with an HTTP error status (bad path, bad filter, full).
    #[error("refused with HTTP {status}: {detail}")]
    Refused {
        /// The status sent.
        status: StatusCode,
        /// Why.
        detail: String,
    },
    /// The bytes received are not a WebSocket upgrade request, or the socket failed.
    #[error("{0}")]
    Protocol(#[from] tokio_tungstenite::tungstenite::Error),
}

/// Why the query string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    #[error("query parameter {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// A `subscribe` value that is not a valid MQTT filter.
    #[error("subscribe filter {filter:?} is invalid: {source}")]
    Filter {
        /// The decoded filter.
        filter: String,
        /// What is wrong with it.
        source: TopicError,
    },
}

/// The tungstenite limits and buffer sizes for one connection.
pub fn websocket_config(settings: &ServerSettings) -> WebSocketConfig {
    let max_message = settings.max_message_bytes();
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Performs the server side of the handshake on `stream`, checked by `gate`. Returns the
/// connection, the filters of its `subscribe` query parameters and its user.
pub async fn accept<S>(
    stream: S,
    gate: Gate<'_>,
) -> Result<(WebSocketStream<S>, Admitted), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = gate.settings;
    // Stays `None` when no request could be read.
    let mut outcome: Option<Result<Admitted, (StatusCode, String)>> = None;
    let mut certificate_user = gate.certificate_user;
    // The callback's shape (a large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let decided = admit(request, &settings.path, gate.admitted).and_then(|filters| {
            let credentials = Credentials {
                certificate_user: certificate_user.take(),
                token: token(request),
                ..Credentials::default()
            };
            let user = gate
                .policy
                .login_without_password(credentials)
                .map_err(|_| {
                    (
                        StatusCode::UNAUTHORIZED,
                        "a valid bearer token is required (Authorization: Bearer TOKEN or ?token=TOKEN)"
                            .to_owned(),
                    )
                })?;
            Ok(Admitted { filters, user })
        });
        let answer = match &decided {
            Ok(_) => Ok(response),
            Err((status, detail)) => Err(error_response(*status, detail)),
        };
        outcome = Some(decided);
        answer
    };
    let timeout = settings.handshake_timeout.0;
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(websocket_config(settings)),
    );
    let result = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| HandshakeError::TimedOut(timeout))?;
    match (result, outcome) {
        (Ok(websocket), Some(Ok(admitted))) => Ok((websocket, admitted)),
        (_, Some(Err((status, detail)))) => Err(HandshakeError::Refused { status, detail }),
        (Err(error), _) => Err(HandshakeError::Protocol(error)),
        (Ok(_), None) => Err(HandshakeError::Protocol(
            tokio_tungstenite::tungstenite::Error::ConnectionClosed,
        )),
    }
}

/// Decides on a parsed upgrade request: the subscriptions, or the HTTP error to answer.
fn admit(
    request: &Request,
    path: &str,
    admitted: bool,
) -> Result<Vec<TopicFilter>, (StatusCode, String)> {
    let uri = request.uri();
    if uri.path() != path {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint at {}; connect to {path}", uri.path()),
        ));
    }
    if !admitted {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the server has reached max_connections; try again later".to_owned(),
        ));
    }
    subscriptions(uri.query().unwrap_or(""))
        .map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()))
}

/// The bearer token of a request: the `Authorization: Bearer` header, else the `token`
/// query parameter.
fn token(request: &Request) -> Option<String> {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    header.or_else(|| query_parameter(request.uri().query().unwrap_or(""), TOKEN_PARAMETER))
}

/// The first value of parameter `name` in a query string, percent-decoded.
fn query_parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|parameter| {
        let (key, value) = parameter.split_once('=')?;
        (percent_decode(key)? == name).then(|| percent_decode(value))?
    })
}

fn error_response(status: StatusCode, detail: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{detail}\n")));
    *response.status_mut() = status;
    response
}

/// The filters of every `subscribe` parameter of a query string, in order, percent-decoded
/// (`+` stays `+`: it is the MQTT wildcard, not a space). Other parameters are ignored.
pub fn subscriptions(query: &str) -> Result<Vec<TopicFilter>, QueryError> {
    let mut filters = Vec::new();
    for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let decode =
            |text: &str| percent_decode(text).ok_or_else(|| QueryError::Encoding(parameter.into()));
        if decode(key)? != SUBSCRIBE_PARAMETER {
            continue;
        }
        let filter = decode(value)?;
        let parsed = TopicFilter::new(&filter).map_err(|source| QueryError::Filter {
            filter: filter.clone(),
            source,
        })?;
        filters.push(parsed);
    }
    Ok(filters)
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let high = hex_value(*tail.first()?)?;
            let low = hex_value(*tail.get(1)?)?;
            bytes.push(high << 4 | low);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(query: &str) -> Vec<String> {
        subscriptions(query)
            .expect("valid query")
            .iter()
            .map(|filter| filter.as_str().to_owned())
            .collect()
    }

    #[test]
    fn subscribe_parameters_are_collected_in_order() {
        assert_eq!(texts(""), Vec::<String>::new());
        assert_eq!(texts("subscribe=a/%23"), ["a/#"]);
        assert_eq!(
            texts("subscribe=fedora%2Fprod%2F%2B&token=x&subscribe=b/+/c&&"),
            ["fedora/prod/+", "b/+/c"]
        );
        assert_eq!(texts("%73ubscribe=caf%C3%A9/%23"), ["café/#"]);
        assert_eq!(texts("other=1&flag"), Vec::<String>::new());
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        assert_eq!(
            subscriptions("subscribe=a%2"),
            Err(QueryError::Encoding("subscribe=a%2".into()))
        );
        assert_eq!(
            subscriptions("subscribe=%FF"),
            Err(QueryError::Encoding("subscribe=%FF".into()))
        );
        assert!(matches!(
            subscriptions("subscribe=a/%23/b"),
            Err(QueryError::Filter { filter, .. }) if filter == "a/#/b"
        ));
        assert!(matches!(
            subscriptions("subscribe="),
            Err(QueryError::Filter {
                source: TopicError::Empty,
                ..
            })
        ));
    }

    fn request(uri: &str) -> Request {
        Request::builder().uri(uri).body(()).expect("valid request")
    }

    #[test]
    fn admission_checks_path_capacity_and_filters() {
        assert_eq!(
            admit(&request("/feed?subscribe=a/%23"), "/feed", true)
                .expect("admitted")
                .len(),
            1
        );
        let (status, detail) = admit(&request("/other"), "/feed", true).expect_err("404");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(detail.contains("/feed"), "{detail}");
        let (status, _) = admit(&request("/feed"), "/feed", false).expect_err("503");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _) =
            admit(&request("/feed?subscribe=%2B%2B"), "/feed", true).expect_err("400");
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let request = Request::builder()
            .uri("/?token=from-query")
            .header("Authorization", "Bearer from-header")
            .body(())
            .unwrap();
        assert_eq!(token(&request).as_deref(), Some("from-header"));
        assert_eq!(
            token(&self::request("/?subscribe=a&token=t%2B1")).as_deref(),
            Some("t+1")
        );
        assert_eq!(token(&self::request("/?subscribe=a")), None);
    }

    #[test]
    fn buffers_are_small_and_limits_follow_max_message() {
        let settings = ServerSettings::parse(serde_json::json!({"max_message": "64KiB"}))
            .expect("valid settings");
        let config = websocket_config(&settings);
        assert_eq!(config.read_buffer_size, READ_BUFFER_BYTES);
        assert_eq!(config.write_buffer_size, WRITE_BUFFER_BYTES);
        assert_eq!(config.max_message_size, Some(64 << 10));
        assert_eq!(config.max_frame_size, Some(64 << 10));
    }
}

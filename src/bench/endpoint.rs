//! `--from` and `--to` URLs, parsed into endpoints before anything connects.

use std::fmt;

use super::BenchError;

/// Which way a ZeroMQ socket goes and how it pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZmqPattern {
    /// PUB: sends; subscribers filter by topic prefix.
    Pub,
    /// SUB: receives what PUB sockets send under its prefix.
    Sub,
    /// PUSH: sends to one PULL peer at a time (blocks at the high-water mark).
    Push,
    /// PULL: receives from PUSH sockets.
    Pull,
}

impl ZmqPattern {
    /// Whether a socket of this pattern sends (PUB, PUSH) rather than receives.
    pub fn sends(self) -> bool {
        matches!(self, ZmqPattern::Pub | ZmqPattern::Push)
    }
}

/// One side of a benchmark, as its URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An MQTT broker and one topic.
    Mqtt {
        /// `host:port`.
        addr: String,
        /// The topic published to, or subscribed to (a filter is allowed when receiving).
        topic: String,
    },
    /// switchyard's JSON WebSocket firehose (receive only).
    WebSocket {
        /// The URL as given, query included (`?subscribe=...`).
        url: String,
    },
    /// A Redis server and one pub/sub channel.
    Redis {
        /// The server, `redis://host:port` (no channel).
        url: String,
        /// The channel.
        channel: String,
    },
    /// An AMQP 0-9-1 broker, an exchange and a routing key.
    Amqp {
        /// The connection URL without the query (`amqp://user:pass@host:port/vhost`).
        url: String,
        /// The exchange published to, or bound to (default `amq.topic`).
        exchange: String,
        /// The routing key published with, or the binding key.
        key: String,
    },
    /// A ZeroMQ socket.
    Zmq {
        /// The socket pattern.
        pattern: ZmqPattern,
        /// The libzmq endpoint, `tcp://host:port`.
        endpoint: String,
        /// Bind instead of connect.
        bind: bool,
        /// The first frame (PUB/PUSH), or the subscription prefix (SUB).
        topic: String,
        /// Send each payload as the `msg` of a fedmsg envelope (`?format=fedmsg`).
        fedmsg: bool,
    },
}

/// A parsed URL and the text it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as the user wrote it.
    pub url: String,
    /// What it names.
    pub target: Target,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The parts of `scheme://authority/path?query`.
struct Parts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: String,
    query: Vec<(String, String)>,
}

impl Endpoint {
    /// Parses an endpoint URL (see `switchyard bench --help` for the forms).
    pub fn parse(url: &str) -> Result<Endpoint, BenchError> {
        let bad = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parts = split(url).ok_or_else(|| bad("expected SCHEME://HOST:PORT/..."))?;
        if parts.authority.is_empty() {
            return Err(bad("missing HOST:PORT"));
        }
        let target = match parts.scheme {
            "mqtt" => Target::Mqtt {
                addr: with_port(parts.authority, 1883),
                topic: non_empty(parts.path, || {
                    bad("missing the topic: mqtt://HOST:PORT/TOPIC")
                })?,
            },
            "ws" => Target::WebSocket {
                url: url.to_owned(),
            },
            "redis" => Target::Redis {
                url: format!("redis://{}", with_port(parts.authority, 6379)),
                channel: non_empty(parts.path, || {
                    bad("missing the channel: redis://HOST:PORT/CHANNEL")
                })?,
            },
            "amqp" => amqp_target(&parts).map_err(|reason| bad(&reason))?,
            scheme => match scheme.strip_prefix("zmq+") {
                Some(pattern) => zmq_target(pattern, &parts).map_err(|reason| bad(&reason))?,
                None => {
                    return Err(bad(
                        "unknown scheme; expected mqtt, ws, redis, amqp, zmq+pub, zmq+sub, \
                         zmq+push or zmq+pull",
                    ))
                }
            },
        };
        Ok(Endpoint {
            url: url.to_owned(),
            target,
        })
    }

    /// Whether messages can be sent through this endpoint.
    pub fn can_send(&self) -> bool {
        match &self.target {
            Target::WebSocket { .. } => false,
            Target::Zmq { pattern, .. } => pattern.sends(),
            _ => true,
        }
    }

    /// Whether messages can be received through this endpoint.
    pub fn can_receive(&self) -> bool {
        match &self.target {
            Target::Zmq { pattern, .. } => !pattern.sends(),
            _ => true,
        }
    }
}

fn amqp_target(parts: &Parts<'_>) -> Result<Target, String> {
    let mut exchange = "amq.topic".to_owned();
    let mut key = None;
    for (name, value) in &parts.query {
        match name.as_str() {
            "exchange" => exchange = value.clone(),
            "key" => key = Some(value.clone()),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; expected exchange, key"
                ))
            }
        }
    }
    let key = key.ok_or("missing the routing key: ?key=K")?;
    // The path is the vhost, percent-encoded as lapin expects it ("/" is `%2f`).
    let vhost = parts.raw_path_for_amqp();
    Ok(Target::Amqp {
        url: format!("amqp://{}/{vhost}", parts.authority),
        exchange,
        key,
    })
}

fn zmq_target(pattern: &str, parts: &Parts<'_>) -> Result<Target, String> {
    let pattern = match pattern {
        "pub" => ZmqPattern::Pub,
        "sub" => ZmqPattern::Sub,
        "push" => ZmqPattern::Push,
        "pull" => ZmqPattern::Pull,
        other => {
            return Err(format!(
                "unknown ZeroMQ socket {other:?}; expected pub, sub, push, pull"
            ))
        }
    };
    let mut bind = false;
    let mut fedmsg = false;
    for (name, value) in &parts.query {
        match (name.as_str(), value.as_str()) {
            ("bind", "1" | "true") => bind = true,
            ("bind", "0" | "false") => bind = false,
            ("format", "fedmsg") => fedmsg = true,
            ("format", "raw") => fedmsg = false,
            ("format", other) => {
                return Err(format!("unknown format {other:?}; expected raw or fedmsg"))
            }
            (other, _) => {
                return Err(format!(
                    "unknown parameter {other:?}; expected bind=1, format=fedmsg"
                ))
            }
        }
    }
    if fedmsg && !pattern.sends() {
        return Err(
            "format=fedmsg is for sending sockets (the receiver finds the probe \
                    inside any envelope)"
                .into(),
        );
    }
    Ok(Target::Zmq {
        pattern,
        endpoint: format!("tcp://{}", parts.authority),
        bind,
        topic: parts.path.clone(),
        fedmsg,
    })
}

impl Parts<'_> {
    /// The vhost for an AMQP URL: the path as given, `%2f` (the default vhost) if empty.
    fn raw_path_for_amqp(&self) -> String {
        if self.path.is_empty() {
            "%2f".to_owned()
        } else {
            percent_encode_slash(&self.path)
        }
    }
}

/// Splits `scheme://authority/path?query`, percent-decoding path and query values.
fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    Some(Parts {
        scheme,
        authority,
        path: percent_decode(path),
        query,
    })
}

fn with_port(authority: &str, default: u16) -> String {
    let host_part = authority.rsplit('@').next().unwrap_or(authority);
    if host_part.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default}")
    }
}

fn non_empty(value: String, missing: impl Fn() -> BenchError) -> Result<String, BenchError> {
    if value.is_empty() {
        Err(missing())
    } else {
        Ok(value)
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode_slash(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2f")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Endpoint::parse(url).expect(url).target
    }

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            target("mqtt://127.0.0.1:1883/bench/a%2Fb"),
            Target::Mqtt {
                addr: "127.0.0.1:1883".into(),
                topic: "bench/a/b".into()
            }
        );
        assert_eq!(
            target("redis://localhost/bench.x"),
            Target::Redis {
                url: "redis://localhost:6379".into(),
                channel: "bench.x".into()
            }
        );
        assert_eq!(
            target("amqp://guest:guest@127.0.0.1:5672/?key=bench.x"),
            Target::Amqp {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                exchange: "amq.topic".into(),
                key: "bench.x".into()
            }
        );
        assert_eq!(
            target("zmq+sub://127.0.0.1:9940/org.bench?bind=1"),
            Target::Zmq {
                pattern: ZmqPattern::Sub,
                endpoint: "tcp://127.0.0.1:9940".into(),
                bind: true,
                topic: "org.bench".into(),
                fedmsg: false
            }
        );
        assert_eq!(
            target("zmq+pub://127.0.0.1:9941/org.bench?bind=1&format=fedmsg"),
            Target::Zmq {
                pattern: ZmqPattern::Pub,
                endpoint: "tcp://127.0.0.1:9941".into(),
                bind: true,
                topic: "org.bench".into(),
                fedmsg: true
            }
        );
        assert!(matches!(
            target("ws://127.0.0.1:8080/?subscribe=bench%2F%23"),
            Target::WebSocket { .. }
        ));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for url in [
            "mqtt://127.0.0.1:1883/",
            "nats://127.0.0.1:4222/x",
            "amqp://127.0.0.1/?exchange=x",
            "zmq+dealer://127.0.0.1:1/x",
            "zmq+sub://127.0.0.1:1/x?format=fedmsg",
            "zmq+pub://127.0.0.1:1/x?format=protobuf",
            "127.0.0.1:1883",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url} should be rejected");
        }
    }

    #[test]
    fn knows_which_way_each_endpoint_goes() {
        let ws = Endpoint::parse("ws://127.0.0.1:8080/").expect("ws");
        assert!(!ws.can_send() && ws.can_receive());
        let push = Endpoint::parse("zmq+push://127.0.0.1:1/x").expect("push");
        assert!(push.can_send() && !push.can_receive());
    }
}

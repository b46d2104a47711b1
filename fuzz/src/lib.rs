//! The fuzz harness: one function per target, each feeding outside input to a decoder the
//! hub really uses and checking what that decoder promises (it never panics, and what it
//! reads it writes back the same). The `cargo fuzz` targets in `fuzz_targets/` call these
//! functions, and `tests/fuzz_corpus.rs` (included by path, so this file is also a module
//! of that test) replays the committed corpora through them on stable Rust.
//!
//! Targets that need several strings take them from the input split on `\n`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use switchyard_api::topic::{filter_matches, validate_filter, validate_topic_name};
use switchyard_api::{envelope, FilterTrie, Message, Naming, QoS, Topic, TopicFilter};
use switchyard_api::{Direction, Rule, RuleConfig, RuleSet};
use switchyard_mqtt::codec::{peek_protocol_level, Protocol};
use switchyard_mqtt::incoming::Incoming;
use switchyard_websocket::control::{parse_request, Reply, Request};
use switchyard_zmq::config::Framing;
use switchyard_zmq::{fedmsg, framing};

/// A target: it panics when its input breaks a property of the decoder.
pub type Target = fn(&[u8]);

/// Every target by name, as `scripts/fuzz` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("fedmsg", fedmsg),
    ("zmq_framing", zmq_framing),
    ("websocket_control", websocket_control),
    ("config", config),
    ("mqtt_packets", mqtt_packets),
    ("amqp_sent_at", amqp_sent_at),
    ("redis_fields", redis_fields),
    ("names", names),
    ("topics", topics),
];

/// A stand-in hub topic for messages whose topic does not matter to the property.
fn any_topic() -> Topic {
    Topic::new("fuzz").expect("a valid topic")
}

/// The JSON envelope (WebSocket publishes, `format = "json"` bridges): whatever decodes,
/// encodes to an envelope that decodes to the same fields.
pub fn envelope(data: &[u8]) {
    let Ok(decoded) = envelope::decode(data) else {
        return;
    };
    let mut message = decoded.clone().into_message(any_topic());
    message.qos = decoded.qos;
    let mut encoded = Vec::new();
    envelope::encode(&message, &decoded.topic, &mut encoded);
    let again = envelope::decode(&encoded).unwrap_or_else(|error| {
        panic!(
            "the re-encoded envelope {:?} does not decode: {error}",
            String::from_utf8_lossy(&encoded)
        )
    });
    let mut expected = decoded;
    expected.timestamp_ms = Some(message.timestamp_ms);
    assert_eq!(again, expected, "the envelope changed on its way round");
}

/// A fedmsg envelope from a ZeroMQ peer: whatever decodes can be sent on, and the next
/// hub reads back the same `msg` bytes, headers, time and (from fedmsg) `msg_id`.
pub fn fedmsg(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let Ok(decoded) = fedmsg::decode(&body) else {
        return;
    };
    let mut message = Message::new(any_topic(), decoded.payload.clone());
    message.id = decoded.id.as_deref().map(Into::into);
    message.headers = decoded.headers.clone();
    // Times beyond f64's exact milliseconds cannot come back exactly; fedmsg's are seconds.
    let exact_time = decoded.timestamp_ms.filter(|ms| *ms < 1 << 50);
    if let Some(timestamp) = exact_time {
        message.timestamp_ms = timestamp;
    }
    let mut encoded = Vec::new();
    fedmsg::encode(
        &message,
        "org.fuzz",
        "hub",
        1,
        &message.headers,
        &mut encoded,
    )
    .expect("a decoded msg is JSON, so it can be sent");
    let again = fedmsg::decode(&Bytes::from(encoded)).expect("an encoded envelope decodes");
    assert_eq!(again.payload, decoded.payload, "msg changed");
    assert_eq!(again.username.as_deref(), Some("hub"));
    if decoded.id.is_some() && decoded.username.is_some() {
        assert_eq!(again.id, decoded.id, "a fedmsg msg_id was not kept");
    }
    if exact_time.is_some() {
        assert_eq!(again.timestamp_ms, exact_time, "the time changed");
    }
    let own_headers = |headers: &[(String, String)]| -> BTreeMap<String, String> {
        headers
            .iter()
            .filter(|(key, _)| !key.starts_with(fedmsg::HEADER_PREFIX))
            .cloned()
            .collect()
    };
    assert_eq!(own_headers(&again.headers), own_headers(&decoded.headers));
}

/// A ZeroMQ `single` frame (`topic<space>body`): what splits joins back to the same frame.
pub fn zmq_framing(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    if let Ok((topic, body)) = framing::split(Framing::Single, vec![frame.clone()]) {
        assert!(!topic.contains(' '), "the topic ends at the first space");
        assert_eq!(framing::join(Framing::Single, &topic, body), vec![frame]);
    }
}

/// The `in` rules a WebSocket publish is checked against: everything under `ws/`.
fn websocket_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let config = RuleConfig {
            pattern: "#".into(),
            direction: Direction::In,
            qos: QoS::AtLeastOnce,
            local_prefix: "ws/".into(),
            remote_prefix: String::new(),
        };
        RuleSet::new(vec![
            Rule::compile(&config, Naming::MQTT).expect("a valid rule")
        ])
    })
}

/// A WebSocket text frame, read as the connection reads it: the request, its filter or
/// its envelope, and the reply, which must be JSON naming the same filter.
pub fn websocket_control(data: &[u8]) {
    // A text frame that is not UTF-8 is refused by the WebSocket layer before this.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let reply = match parse_request(text) {
        Ok(Request::Subscribe(filter)) | Ok(Request::Unsubscribe(filter)) => {
            if let Ok(parsed) = TopicFilter::new(&filter) {
                assert_eq!(parsed.as_str(), filter);
            }
            Reply::Subscribed { filter: &filter }.to_frame()
        }
        Ok(Request::Publish) => {
            if let Ok(decoded) = envelope::decode(data) {
                if validate_topic_name(&decoded.topic).is_ok() {
                    let _ = websocket_rules().inbound(&decoded.topic);
                }
            }
            Reply::Ack { id: None }.to_frame()
        }
        Ok(Request::Ping) => Reply::Pong.to_frame(),
        Err(refusal) => Reply::refused(&refusal, None).to_frame(),
    };
    let reply = reply.into_text().expect("replies are text frames");
    serde_json::from_str::<serde_json::Value>(reply.as_str()).expect("a reply is JSON");
}

/// A configuration file, through the hub's loader and every bridge's validation (as
/// `switchyard check` does): no panic, and a refusal names the file.
pub fn config(data: &[u8]) {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!(
        "switchyard-fuzz-config-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ));
    let written = std::fs::File::create(&path).and_then(|mut file| file.write_all(data));
    if written.is_err() {
        return;
    }
    let outcome =
        switchyard::config::load(std::slice::from_ref(&path)).and_then(|(settings, sources)| {
            switchyard::config::plan_bridges(&settings, &sources).map(drop)
        });
    let _ = std::fs::remove_file(&path);
    if let Err(error) = outcome {
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "the error does not name the file: {error}"
        );
    }
}

/// Everything a client sends the MQTT broker. The first byte chooses the protocol (bit
/// 0: 3.1.1 or 5), the packet size limit (bit 1: 64 bytes or 1 MiB) and where the rest is
/// cut in two reads (the second byte): packets decode the same whole or in pieces, and a
/// PUBLISH encodes back to the same topic, payload and flags.
pub fn mqtt_packets(data: &[u8]) {
    let [control, cut, input @ ..] = data else {
        return;
    };
    let protocol = if control & 1 == 0 {
        Protocol::V4
    } else {
        Protocol::V5
    };
    let max_packet = if control & 2 == 0 { 64 } else { 1 << 20 };
    let _ = peek_protocol_level(input);
    let whole = decode_all(protocol, max_packet, &[input]);
    let cut = usize::from(*cut).min(input.len());
    let pieces = decode_all(protocol, max_packet, &[&input[..cut], &input[cut..]]);
    assert_eq!(
        whole, pieces,
        "packets decode differently when split at {cut}"
    );
}

/// Decodes `reads` in turn, as the session does, until the input is used up or refused.
fn decode_all(protocol: Protocol, max_packet: usize, reads: &[&[u8]]) -> Vec<String> {
    let mut buffer = BytesMut::new();
    let mut seen = Vec::new();
    for read in reads {
        buffer.extend_from_slice(read);
        loop {
            match protocol.decode(&mut buffer, max_packet) {
                Ok(Some(packet)) => {
                    check_publish(protocol, &packet);
                    seen.push(format!("{packet:?}"));
                }
                Ok(None) => break,
                Err(error) => {
                    seen.push(format!("{error:?}"));
                    return seen;
                }
            }
        }
    }
    seen
}

/// A PUBLISH the broker read, written out again, reads back the same.
fn check_publish(protocol: Protocol, packet: &Incoming) {
    let Incoming::Publish(publish) = packet else {
        return;
    };
    let mut buffer = BytesMut::new();
    let qos = publish.qos.min(1);
    let written = protocol.encode_publish(
        &mut buffer,
        &publish.topic,
        &publish.payload,
        qos,
        publish.pkid,
        publish.retain,
        publish.user_properties.clone(),
        None,
    );
    if written.is_err() {
        return;
    }
    match protocol.decode(&mut buffer, usize::MAX) {
        Ok(Some(Incoming::Publish(again))) => {
            assert_eq!(again.topic, publish.topic);
            assert_eq!(again.payload, publish.payload);
            assert_eq!((again.qos, again.retain), (qos, publish.retain));
            assert_eq!(again.user_properties, publish.user_properties);
        }
        other => panic!("a re-encoded PUBLISH reads back as {other:?}"),
    }
}

/// fedora-messaging's `sent-at` header: a time that parses formats back to the same
/// second, and every formatted time of years 1970..=9999 parses.
pub fn amqp_sent_at(data: &[u8]) {
    use switchyard_amqp::rfc3339;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(ms) = rfc3339::parse(text) {
            let whole_seconds = ms / 1000 * 1000;
            assert_eq!(rfc3339::parse(&rfc3339::format(ms)), Some(whole_seconds));
        }
    }
    if let Some(bytes) = data.get(..8) {
        const YEAR_10000_MS: u64 = 253_402_300_800_000;
        let ms = u64::from_le_bytes(bytes.try_into().expect("eight bytes")) % YEAR_10000_MS;
        assert_eq!(rfc3339::parse(&rfc3339::format(ms)), Some(ms / 1000 * 1000));
    }
}

/// A Redis stream entry (field/value pairs, one per line, `field=value`): what decodes
/// encodes back to the same payload, id, time and headers.
pub fn redis_fields(data: &[u8]) {
    use switchyard_redis::fields;
    let pairs: Vec<(Bytes, Bytes)> = data
        .split(|byte| *byte == b'\n')
        .map(|line| match line.iter().position(|byte| *byte == b'=') {
            Some(at) => (
                Bytes::copy_from_slice(&line[..at]),
                Bytes::copy_from_slice(&line[at + 1..]),
            ),
            None => (Bytes::copy_from_slice(line), Bytes::new()),
        })
        .collect();
    let Ok(decoded) = fields::decode(pairs) else {
        return;
    };
    let encoded = fields::encode(
        "fuzz",
        decoded.payload.clone(),
        decoded.id.as_deref(),
        decoded.timestamp_ms.unwrap_or(0),
        &decoded.headers,
    );
    let encoded = encoded
        .into_iter()
        .map(|(name, value)| (Bytes::from_static(name.as_bytes()), value))
        .collect();
    let again = fields::decode(encoded).expect("encoded fields decode");
    assert_eq!(again.payload, decoded.payload);
    assert_eq!(again.id, decoded.id);
    assert_eq!(again.timestamp_ms, Some(decoded.timestamp_ms.unwrap_or(0)));
    assert_eq!(again.headers, decoded.headers);
}

/// Whether a name spells an escape of its own namespace (those are decoded on the way).
fn spells_escape(name: &str, separator_escape: &str) -> bool {
    name.contains("%25") || name.contains(separator_escape)
}

/// Names between the hub and dotted remotes, with escaping: a name that spells no escape
/// survives the trip there and back, and any name settles after one trip.
pub fn names(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let naming = Naming::DOTTED;
    let convert = |to_remote: bool, text: &str| {
        let mut out = String::new();
        if to_remote {
            naming.to_remote(text, &mut out);
        } else {
            naming.to_hub(text, &mut out);
        }
        out
    };
    // The name as a hub topic.
    let remote = convert(true, name);
    let hub = convert(false, &remote);
    if !spells_escape(name, "%2F") {
        assert_eq!(
            hub, name,
            "hub topic {name:?} came back different via {remote:?}"
        );
    }
    assert_eq!(convert(true, &hub), remote, "{name:?} did not settle");
    // The name as a remote name.
    let hub = convert(false, name);
    let remote = convert(true, &hub);
    if !spells_escape(name, "%2E") {
        assert_eq!(
            remote, name,
            "remote name {name:?} came back different via {hub:?}"
        );
    }
    assert_eq!(convert(false, &remote), hub, "{name:?} did not settle");
    let mut level = String::new();
    naming.level_to_remote(name, &mut level);
}

/// Topic filters, the trie and rules (lines: filter, topic, local prefix, remote prefix):
/// the trie finds exactly the filters that match, and a rule's covering filter covers
/// every topic the rule passes out.
pub fn topics(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let filter = lines.next().unwrap_or_default();
    let topic = lines.next().unwrap_or_default();
    let local_prefix = lines.next().unwrap_or_default();
    let remote_prefix = lines.next().unwrap_or_default();
    let _ = validate_topic_name(topic);
    if validate_filter(filter).is_err() {
        assert!(TopicFilter::new(filter).is_err());
        return;
    }
    let parsed = TopicFilter::new(filter).expect("a valid filter");
    let matches = parsed.matches(topic);
    assert_eq!(matches, filter_matches(filter, topic));
    let mut trie = FilterTrie::new();
    trie.insert(filter, 1);
    trie.insert("#", 2);
    let mut found = Vec::new();
    trie.for_each_match(topic, |value| found.push(*value));
    assert_eq!(
        found.contains(&1),
        matches,
        "the trie disagrees on {filter:?} / {topic:?}"
    );
    assert_eq!(found.contains(&2), filter_matches("#", topic));
    assert!(trie.remove(filter, &1));
    let config = RuleConfig {
        pattern: filter.to_owned(),
        direction: Direction::Both,
        qos: QoS::AtLeastOnce,
        local_prefix: local_prefix.to_owned(),
        remote_prefix: remote_prefix.to_owned(),
    };
    let Ok(rule) = Rule::compile(&config, Naming::DOTTED) else {
        return;
    };
    if rule.matches_hub_topic(topic) {
        assert!(
            filter_matches(&rule.hub_filter(), topic),
            "{:?} does not cover {topic:?}",
            rule.hub_filter()
        );
        let remote = rule.to_remote(topic).expect("a matching topic maps out");
        if !spells_escape(topic, "%2F") {
            assert_eq!(
                rule.to_hub(&remote).as_deref(),
                Some(topic),
                "via {remote:?}"
            );
        }
    }
}

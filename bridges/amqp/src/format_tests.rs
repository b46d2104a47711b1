//! Tests of [`super`]: every format both ways.

use super::*;

fn message(topic: &str, payload: &'static [u8]) -> Message {
    let mut message = Message::new(
        Topic::new(topic).expect("valid topic"),
        Bytes::from_static(payload),
    );
    // AMQP timestamps are whole seconds.
    message.timestamp_ms = 1_564_513_942_000;
    message
}

fn codec(format: Format) -> Codec {
    Codec::new(format, Arc::from("hub-a"), true)
}

/// Encodes with hub-a's codec and decodes with `reader`'s.
fn through(format: Format, reader: &str, message: &Message) -> (BasicProperties, Incoming) {
    let (body, properties) = codec(format).encode(message, "a.b").expect("encodes");
    let body = body.to_vec();
    let incoming = Codec::new(format, Arc::from(reader), true)
        .decode(message.topic.clone(), QoS::AtLeastOnce, &properties, body)
        .expect("decodes");
    (properties, incoming)
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|table| table.inner().get(name))
}

#[test]
fn raw_carries_id_time_and_headers() {
    let mut original = message("a/b", b"\x00binary\xff");
    original.id = Some(Arc::from("id-1"));
    original.hops = 2;
    original.headers = vec![
        ("k".to_owned(), "v".to_owned()),
        (CONTENT_TYPE_HEADER.to_owned(), "text/plain".to_owned()),
    ];
    let (properties, incoming) = through(Format::Raw, "hub-b", &original);
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("id-1")
    );
    assert_eq!(*properties.timestamp(), Some(1_564_513_942));
    assert_eq!(
        properties.content_type().as_ref().map(|ct| ct.as_str()),
        Some("text/plain")
    );
    assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
    assert_eq!(
        header(&properties, HOPS_HEADER),
        Some(&AMQPValue::LongInt(3))
    );
    assert_eq!(
        header(&properties, ORIGIN_HEADER),
        Some(&AMQPValue::LongString("hub-a".into()))
    );
    assert!(header(&properties, CONTENT_TYPE_HEADER).is_none());
    let back = incoming.message;
    assert!(!incoming.looped);
    assert_eq!(back.payload, original.payload);
    assert_eq!(back.id, original.id);
    assert_eq!(back.timestamp_ms, original.timestamp_ms);
    assert_eq!(back.hops, 3);
    assert_eq!(back.qos, QoS::AtLeastOnce);
    let mut headers = back.headers.clone();
    headers.sort();
    assert_eq!(
        headers,
        vec![
            (CONTENT_TYPE_HEADER.to_owned(), "text/plain".to_owned()),
            ("k".to_owned(), "v".to_owned()),
            (ORIGIN_HEADER.to_owned(), "hub-a".to_owned()),
        ]
    );
}

#[test]
fn this_hubs_own_messages_are_recognised() {
    let (_, incoming) = through(Format::Raw, "hub-a", &message("a/b", b"x"));
    assert!(incoming.looped);
}

#[test]
fn the_first_hubs_origin_is_kept() {
    let (_, at_b) = through(Format::Raw, "hub-b", &message("a/b", b"x"));
    assert_eq!(at_b.message.header(ORIGIN_HEADER), Some("hub-a"));
    let (_, properties) = Codec::new(Format::Raw, Arc::from("hub-b"), true)
        .encode(&at_b.message, "a.b")
        .expect("encodes");
    assert_eq!(
        header(&properties, ORIGIN_HEADER),
        Some(&AMQPValue::LongString("hub-a".into()))
    );
    assert_eq!(
        header(&properties, HOPS_HEADER),
        Some(&AMQPValue::LongInt(2))
    );
}

#[test]
fn json_envelopes_round_trip() {
    let mut original = message("a/b", b"\xfe\xff");
    original.id = Some(Arc::from("id-2"));
    original.headers = vec![("k".to_owned(), "v".to_owned())];
    original.retain = true;
    original.qos = QoS::AtLeastOnce;
    let (body, properties) = codec(Format::Json)
        .encode(&original, "a.b")
        .expect("encodes");
    let text = std::str::from_utf8(&body).expect("UTF-8").to_owned();
    assert!(text.contains("\"topic\":\"a.b\""), "{text}");
    assert!(text.contains("\"payload_base64\""), "{text}");
    assert_eq!(
        properties.content_type().as_ref().map(|ct| ct.as_str()),
        Some(JSON_CONTENT_TYPE)
    );
    let back = codec(Format::Json)
        .decode(
            original.topic.clone(),
            QoS::AtMostOnce,
            &properties,
            text.into_bytes(),
        )
        .expect("decodes")
        .message;
    assert_eq!(back.payload, original.payload);
    assert_eq!(back.headers, original.headers);
    assert_eq!(back.id, original.id);
    assert!(back.retain);
    assert_eq!(back.qos, QoS::AtMostOnce, "capped by the rule");
    let bad = codec(Format::Json).decode(
        original.topic.clone(),
        QoS::AtMostOnce,
        &properties,
        b"not json".to_vec(),
    );
    assert!(matches!(bad, Err(FormatError::Envelope(_))));
}

#[test]
fn fedora_messaging_out_has_every_property_and_header() {
    let original = message("fedora/prod/git/receive", b"{\"commit\": {\"rev\": 1}}");
    let (body, properties) = codec(Format::FedoraMessaging)
        .encode(&original, "org.fedoraproject.prod.git.receive")
        .expect("encodes");
    assert_eq!(body, &original.payload[..]);
    let text = |value: &Option<ShortString>| value.as_ref().map(|v| v.to_string());
    assert_eq!(
        text(properties.content_type()).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        text(properties.content_encoding()).as_deref(),
        Some("utf-8")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(*properties.priority(), Some(0));
    let id = text(properties.message_id()).expect("a message id");
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(
        header(&properties, SCHEMA_HEADER),
        Some(&AMQPValue::LongString("base.message".into()))
    );
    assert_eq!(
        header(&properties, SENT_AT_HEADER),
        Some(&AMQPValue::LongString("2019-07-30T19:12:22+00:00".into()))
    );
    assert_eq!(
        header(&properties, SEVERITY_HEADER),
        Some(&AMQPValue::LongInt(20))
    );
    assert_eq!(
        header(&properties, PRIORITY_HEADER),
        Some(&AMQPValue::LongInt(0))
    );
}

/// Properties as fedora-messaging (through pika) writes them.
fn fedora_properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        SCHEMA_HEADER.into(),
        AMQPValue::LongString("bodhi.update.v1".into()),
    );
    headers.insert(
        SENT_AT_HEADER.into(),
        AMQPValue::LongString("2019-07-30T19:12:22+00:00".into()),
    );
    headers.insert(SEVERITY_HEADER.into(), AMQPValue::LongLongInt(30));
    headers.insert(PRIORITY_HEADER.into(), AMQPValue::LongLongInt(2));
    headers.insert(
        "fedora_messaging_user_jcline".into(),
        AMQPValue::Boolean(true),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id("f81d4fae-7dec-41d0-a765-00a0c91e6bf6".into())
        .with_headers(headers)
}

#[test]
fn fedora_messaging_in_keeps_every_field_and_goes_back_out_the_same() {
    let body = b"{\"update\": \"FEDORA-2019-1\"}".to_vec();
    let incoming = codec(Format::FedoraMessaging)
        .decode(
            Topic::new("fedora/bodhi/update").expect("topic"),
            QoS::AtLeastOnce,
            &fedora_properties(),
            body.clone(),
        )
        .expect("decodes");
    let message = incoming.message;
    assert_eq!(message.payload, body);
    assert_eq!(
        message.id.as_deref(),
        Some("f81d4fae-7dec-41d0-a765-00a0c91e6bf6")
    );
    assert_eq!(message.timestamp_ms, 1_564_513_942_000);
    assert_eq!(message.header(SEVERITY_HEADER), Some("30"));
    assert_eq!(message.header("fedora_messaging_user_jcline"), Some("true"));
    assert_eq!(message.header(SCHEMA_HEADER), Some("bodhi.update.v1"));

    let (_, properties) = codec(Format::FedoraMessaging)
        .encode(&message, "org.fedoraproject.prod.bodhi.update")
        .expect("encodes");
    let expected = fedora_properties();
    assert_eq!(properties.message_id(), expected.message_id());
    assert_eq!(*properties.priority(), Some(2));
    assert_eq!(
        header(&properties, SEVERITY_HEADER),
        Some(&AMQPValue::LongInt(30))
    );
    assert_eq!(
        header(&properties, PRIORITY_HEADER),
        Some(&AMQPValue::LongInt(2))
    );
    assert_eq!(
        header(&properties, "fedora_messaging_user_jcline"),
        Some(&AMQPValue::Boolean(true))
    );
    assert_eq!(
        header(&properties, SCHEMA_HEADER),
        Some(&AMQPValue::LongString("bodhi.update.v1".into()))
    );
    assert_eq!(
        header(&properties, SENT_AT_HEADER),
        Some(&AMQPValue::LongString("2019-07-30T19:12:22+00:00".into()))
    );
}

#[test]
fn fedora_messaging_needs_a_json_object() {
    for body in [&b"not json"[..], b"[1, 2]", b"\"text\"", b"{\"open\": "] {
        let decoded = codec(Format::FedoraMessaging).decode(
            Topic::new("t").expect("topic"),
            QoS::AtLeastOnce,
            &fedora_properties(),
            body.to_vec(),
        );
        assert!(
            matches!(decoded, Err(FormatError::NotJsonObject(_))),
            "{body:?}"
        );
        let mut outgoing = message("t", b"");
        outgoing.payload = Bytes::copy_from_slice(body);
        let encoded = codec(Format::FedoraMessaging).encode(&outgoing, "t");
        assert!(matches!(encoded, Err(FormatError::NotJsonObject(_))));
    }
}

#[test]
fn names_longer_than_amqp_allows_are_refused() {
    let mut long = message("t", b"x");
    long.id = Some(Arc::from("i".repeat(300)));
    let encoded = codec(Format::Raw).encode(&long, "t");
    assert!(matches!(
        encoded,
        Err(FormatError::TooLong {
            what: "message id",
            ..
        })
    ));
    assert!(routing_key("k".repeat(256)).is_err());
    assert_eq!(
        routing_key("a.b".to_owned()).expect("short").as_str(),
        "a.b"
    );
}

#[test]
fn header_values_of_every_type_become_text() {
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongLongInt(-5));
    headers.insert("f".into(), AMQPValue::Boolean(false));
    headers.insert(
        "a".into(),
        AMQPValue::FieldArray(
            vec![AMQPValue::LongInt(1), AMQPValue::LongString("x".into())].into(),
        ),
    );
    headers.insert(HOPS_HEADER.into(), AMQPValue::LongString("4".into()));
    let properties = BasicProperties::default().with_headers(headers);
    let message = codec(Format::Raw)
        .decode(
            Topic::new("t").expect("topic"),
            QoS::AtMostOnce,
            &properties,
            Vec::new(),
        )
        .expect("decodes")
        .message;
    assert_eq!(message.header("n"), Some("-5"));
    assert_eq!(message.header("f"), Some("false"));
    assert_eq!(message.header("a"), Some("[1,\"x\"]"));
    assert_eq!(message.hops, 4);
    assert_eq!(message.header(HOPS_HEADER), None);
}

//! The `websocket-server` bridge driven by real WebSocket clients (tokio-tungstenite) and
//! raw sockets, through a loopback hub (see `support`).

mod support;

use std::sync::Arc;
use std::time::Instant;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::{assert_alive, next_frame, next_json, send, start, WAIT};
use switchyard_api::{DropReason, Message, Outbound, QoS, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame};

#[tokio::test]
async fn query_and_op_subscribers_get_what_is_published() {
    let server = start(json!({}), &[("#", "both", 1)]).await;
    let mut by_query = server.connect("/?subscribe=news%2F%23").await;
    let mut by_op = server.connect("/").await;
    let mut publisher = server.connect("/").await;
    assert_alive(&mut by_query).await;
    send(&mut by_op, json!({"op": "subscribe", "filter": "news/+"})).await;
    assert_eq!(
        next_json(&mut by_op).await,
        json!({"op": "subscribed", "filter": "news/+"})
    );

    let publish = json!({
        "op": "publish", "topic": "news/a", "payload": {"x": [1, 2]},
        "headers": {"k": "v"}, "qos": 1, "id": "m1",
    });
    send(&mut publisher, publish).await;
    assert_eq!(
        next_json(&mut publisher).await,
        json!({"op": "ack", "id": "m1"})
    );
    for client in [&mut by_query, &mut by_op] {
        let envelope = next_json(client).await;
        assert_eq!(envelope["topic"], "news/a");
        assert_eq!(envelope["payload"], json!({"x": [1, 2]}));
        assert_eq!(envelope["headers"], json!({"k": "v"}));
        assert_eq!(envelope["qos"], 1);
        assert_eq!(envelope["id"], "m1");
    }

    send(&mut by_op, json!({"op": "unsubscribe", "filter": "news/+"})).await;
    assert_eq!(
        next_json(&mut by_op).await,
        json!({"op": "unsubscribed", "filter": "news/+"})
    );
    send(
        &mut publisher,
        json!({"op": "publish", "topic": "news/b", "payload": "plain text"}),
    )
    .await;
    assert_eq!(next_json(&mut by_query).await["payload"], "plain text");
    // Had the unsubscribed client received news/b, it would come before the pong.
    assert_alive(&mut by_op).await;
    assert_eq!(server.snapshot().received, 2);
    server.stop().await;
}

#[tokio::test]
async fn refused_publishes_are_answered_and_counted() {
    let rules = [
        ("public/#", "in", 1),
        ("lost/#", "both", 1),
        ("#", "out", 1),
    ];
    let server = start(json!({}), &rules).await;
    let mut client = server.connect("/").await;

    send(
        &mut client,
        json!({"op": "publish", "topic": "private/x", "payload": 1, "id": "d1"}),
    )
    .await;
    let reply = next_json(&mut client).await;
    assert_eq!(reply["op"], "error");
    assert_eq!(reply["reason"], "denied");
    assert_eq!(reply["id"], "d1");
    assert!(
        reply["detail"].as_str().unwrap_or("").contains("private/x"),
        "{reply}"
    );

    send(
        &mut client,
        json!({"op": "publish", "topic": "public/+", "payload": 1}),
    )
    .await;
    let reply = next_json(&mut client).await;
    assert_eq!(reply["reason"], "invalid");
    assert!(
        reply["detail"].as_str().unwrap_or("").contains("public/+"),
        "{reply}"
    );

    send(
        &mut client,
        json!({"op": "publish", "topic": "lost/x", "payload": 1, "qos": 1, "id": "n1"}),
    )
    .await;
    let reply = next_json(&mut client).await;
    assert_eq!(reply["reason"], "not_delivered", "{reply}");
    assert_eq!(reply["id"], "n1");

    assert_eq!(server.dropped(DropReason::Denied), 1);
    assert_eq!(server.dropped(DropReason::Invalid), 1);
    assert_alive(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_frames_are_answered_and_the_connection_stays_open() {
    let server = start(json!({}), &[("#", "both", 0)]).await;
    let mut client = server.connect("/").await;
    let cases: [(Frame, &str, &str); 6] = [
        (Frame::text("{bad"), "invalid", "malformed JSON"),
        (Frame::text("[1]"), "invalid", "found an array"),
        (Frame::binary(vec![1, 2, 3]), "invalid", "binary frame"),
        (Frame::text(r#"{"op":"dance"}"#), "unknown_op", "\"dance\""),
        (
            Frame::text(r#"{"op":"subscribe","filter":"a/#/b"}"#),
            "invalid",
            "a/#/b",
        ),
        (
            Frame::text(r#"{"op":"publish","payload":1}"#),
            "invalid",
            "topic",
        ),
    ];
    for (frame, reason, detail) in cases {
        client.send(frame).await.expect("send");
        let reply = next_json(&mut client).await;
        assert_eq!(reply["op"], "error", "{reply}");
        assert_eq!(reply["reason"], reason, "{reply}");
        let text = reply["detail"].as_str().unwrap_or("");
        assert!(text.contains(detail), "{reply}");
    }
    assert_eq!(server.dropped(DropReason::Invalid), 6);
    assert_alive(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_silent_sockets_do_not_disturb_other_clients() {
    let server = start(json!({}), &[("#", "both", 0)]).await;
    let _silent = TcpStream::connect(&server.address).await.expect("connect");
    let mut garbage = TcpStream::connect(&server.address).await.expect("connect");
    garbage
        .write_all(b"\x16\x03\x01\x00garbage\r\n\r\n")
        .await
        .expect("write garbage");

    let mut client = server.connect("/?subscribe=x").await;
    assert_alive(&mut client).await;
    send(
        &mut client,
        json!({"op": "publish", "topic": "x", "payload": 5}),
    )
    .await;
    assert_eq!(next_json(&mut client).await["payload"], 5);

    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, garbage.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the garbage socket is closed");
    assert_eq!(server.dropped(DropReason::Invalid), 1);
    server.stop().await;
}

fn http_status(error: WsError) -> u16 {
    match error {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, found {other}"),
    }
}

async fn refused(address: &str, path: &str) -> u16 {
    let url = format!("ws://{address}{path}");
    let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time");
    http_status(result.expect_err("refused"))
}

#[tokio::test]
async fn bad_paths_and_filters_are_refused_with_http_errors() {
    let server = start(json!({"path": "/feed"}), &[("#", "out", 0)]).await;
    assert_eq!(refused(&server.address, "/").await, 404);
    assert_eq!(
        refused(&server.address, "/feed?subscribe=a/%23/b").await,
        400
    );
    let mut client = server.connect("/feed?subscribe=a/%23").await;
    assert_alive(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn clients_beyond_max_connections_get_503() {
    let server = start(json!({"max_connections": 1}), &[("#", "out", 0)]).await;
    let mut first = server.connect("/").await;
    assert_alive(&mut first).await;
    assert_eq!(refused(&server.address, "/").await, 503);
    assert_alive(&mut first).await;
    first.close(None).await.expect("close");
    drop(first);
    // The slot frees once the first connection's task has ended.
    let deadline = Instant::now() + WAIT;
    loop {
        let url = format!("ws://{}/", server.address);
        match tokio_tungstenite::connect_async(url).await {
            Ok((mut again, _)) => {
                assert_alive(&mut again).await;
                break;
            }
            Err(error) => {
                assert_eq!(http_status(error), 503);
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::task::yield_now().await;
            }
        }
    }
    server.stop().await;
}

fn outbound(topic: &str) -> Outbound {
    let message = Message::new(Topic::new(topic).expect("topic"), "x".into());
    Outbound {
        message: Arc::new(message),
        rule: 0,
        qos: QoS::AtMostOnce,
        ack: None,
        received_at: Instant::now(),
    }
}

/// Queues ten messages at once for the fan-out: with a send queue of one, the client's
/// task cannot run in between (single-threaded runtime), so nine overflow.
async fn flood(server: &support::Server) {
    for index in 0..10 {
        server.queue.push(outbound(&format!("t/{index}"))).await;
    }
}

#[tokio::test]
async fn a_slow_client_loses_messages_under_drop() {
    let server = start(json!({"send_queue": 1}), &[("#", "out", 0)]).await;
    let mut client = server.connect("/?subscribe=t/%23").await;
    assert_alive(&mut client).await;
    flood(&server).await;
    assert_eq!(next_json(&mut client).await["topic"], "t/0");
    assert_alive(&mut client).await;
    assert_eq!(server.dropped(DropReason::Lagged), 9);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_disconnected_under_disconnect() {
    let settings = json!({"send_queue": 1, "slow_client": "disconnect"});
    let server = start(settings, &[("#", "out", 0)]).await;
    let mut client = server.connect("/?subscribe=t/%23").await;
    assert_alive(&mut client).await;
    flood(&server).await;
    let close = loop {
        match next_frame(&mut client).await {
            Frame::Close(close) => break close,
            Frame::Text(_) => continue,
            other => panic!("expected messages then a close, found {other:?}"),
        }
    };
    assert_eq!(close.expect("a close frame").code, CloseCode::Policy);
    assert_eq!(server.dropped(DropReason::Lagged), 9);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_that_connection_with_1009() {
    let server = start(json!({"max_message": "1KiB"}), &[("#", "both", 0)]).await;
    let mut other = server.connect("/").await;
    let mut client = server.connect("/").await;
    let big = json!({"op": "publish", "topic": "t", "payload": "x".repeat(2000)});
    send(&mut client, big).await;
    match next_frame(&mut client).await {
        Frame::Close(Some(close)) => assert_eq!(close.code, CloseCode::Size),
        frame => panic!("expected a close frame, found {frame:?}"),
    }
    assert_eq!(server.dropped(DropReason::TooLarge), 1);
    assert_alive(&mut other).await;
    server.stop().await;
}

#[tokio::test]
async fn retained_messages_are_replayed_on_subscribe() {
    let server = start(json!({}), &[("#", "both", 1)]).await;
    let mut publisher = server.connect("/").await;
    let retained = json!({
        "op": "publish", "topic": "state/a", "payload": "on", "retain": true, "qos": 1,
    });
    send(&mut publisher, retained).await;
    assert_eq!(
        next_json(&mut publisher).await,
        json!({"op": "ack", "id": null})
    );

    let mut by_query = server.connect("/?subscribe=state/%23").await;
    let envelope = next_json(&mut by_query).await;
    assert_eq!(
        (envelope["topic"].clone(), envelope["retain"].clone()),
        (json!("state/a"), json!(true))
    );

    let mut by_op = server.connect("/").await;
    send(&mut by_op, json!({"op": "subscribe", "filter": "state/+"})).await;
    assert_eq!(next_json(&mut by_op).await["op"], "subscribed");
    assert_eq!(next_json(&mut by_op).await["payload"], "on");
    server.stop().await;
}

/// A hand-made handshake, so nothing answers the server's pings.
const RAW_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed() {
    let server = start(json!({"ping_interval": "100ms"}), &[("#", "out", 0)]).await;
    let mut raw = TcpStream::connect(&server.address).await.expect("connect");
    raw.write_all(RAW_UPGRADE).await.expect("upgrade");
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut received))
        .await
        .expect("closed in time")
        .expect("read");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // An unmasked ping (0x89, empty), then a close (0x88) with code 1001 (0x03E9).
    assert!(received.windows(2).any(|bytes| bytes == [0x89, 0x00]));
    assert!(received
        .windows(4)
        .any(|bytes| bytes[0] == 0x88 && bytes[2..] == [0x03, 0xE9]));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_and_returns() {
    let server = start(json!({}), &[("#", "out", 0)]).await;
    let mut client = server.connect("/").await;
    assert_alive(&mut client).await;
    let (_, frame) = tokio::join!(server.stop(), next_frame(&mut client));
    match frame {
        Frame::Close(Some(close)) => assert_eq!(close.code, CloseCode::Away),
        other => panic!("expected a close frame, found {other:?}"),
    }
}

#[tokio::test]
async fn publishes_keep_the_senders_fields() {
    let server = start(json!({}), &[("#", "both", 1)]).await;
    let mut client = server.connect("/?subscribe=b").await;
    assert_alive(&mut client).await;
    let publish = json!({
        "op": "publish", "topic": "b", "payload_base64": "/wA=", "ts": 1234,
        "headers": {"x-switchyard-hops": "2"},
    });
    send(&mut client, publish).await;
    let envelope: Value = next_json(&mut client).await;
    assert_eq!(envelope["payload_base64"], "/wA=");
    assert_eq!(envelope["ts"], 1234);
    assert_eq!(envelope["qos"], 0);
    assert_eq!(envelope["headers"], json!({}));
    server.stop().await;
}

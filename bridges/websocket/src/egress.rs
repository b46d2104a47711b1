//! Hub → client: each [`ClientMessage`] is written as its JSON envelope in a text frame.
//!
//! The envelope is the same for every client of the bridge, so it is encoded once per
//! message (by the first writer, into [`ClientMessage::rendered`]) and every client's
//! frame shares those bytes. Messages that are ready are written as one batch and flushed
//! once, so a burst costs few socket writes.

use futures_util::{Sink, SinkExt};
use switchyard_api::envelope;
use switchyard_api::server::ClientMessage;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame};

/// Most messages written between two flushes, so one busy client cannot hold its
/// connection's task (and its reading) for long.
const BATCH_MESSAGES: usize = 64;

/// The frame carrying `delivery`, encoding its envelope if no client has yet.
pub fn frame(delivery: &ClientMessage) -> Frame {
    let bytes = delivery
        .rendered
        .get_or_init(|| envelope::encode_to_bytes(&delivery.message, &delivery.name));
    // The envelope is JSON, hence UTF-8, so this check (no copy) always passes; were it
    // ever to fail, the client would still get the bytes, as a binary frame.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Frame::Text(text),
        Err(_) => Frame::Binary(bytes.clone()),
    }
}

/// Writes `first` and every message already waiting in `queue` (up to a batch), then
/// flushes once.
pub async fn write_batch<S>(
    socket: &mut S,
    first: ClientMessage,
    queue: &mut mpsc::Receiver<ClientMessage>,
) -> Result<(), WsError>
where
    S: Sink<Frame, Error = WsError> + Unpin,
{
    socket.feed(frame(&first)).await?;
    for _ in 1..BATCH_MESSAGES {
        let Ok(next) = queue.try_recv() else {
            break;
        };
        socket.feed(frame(&next)).await?;
    }
    socket.flush().await
}

/// Writes `deliveries` (retained messages for a new subscription) and flushes.
pub async fn write_all<S>(socket: &mut S, deliveries: Vec<ClientMessage>) -> Result<(), WsError>
where
    S: Sink<Frame, Error = WsError> + Unpin,
{
    for delivery in &deliveries {
        socket.feed(frame(delivery)).await?;
    }
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    use switchyard_api::{Message, QoS, Topic};

    fn delivery(payload: &'static [u8]) -> ClientMessage {
        let mut message = Message::new(Topic::new("hub/a").expect("topic"), Bytes::from(payload));
        message.qos = QoS::AtLeastOnce;
        ClientMessage::new(Arc::new(message), Arc::from("a"), QoS::AtLeastOnce)
    }

    #[test]
    fn the_envelope_is_encoded_once_and_shared() {
        let first = delivery(b"{\"x\":1}");
        // Another client's copy of the same fan-out.
        let second = first.clone();
        let Frame::Text(text) = frame(&first) else {
            panic!("expected a text frame");
        };
        assert!(
            text.as_str()
                .starts_with("{\"topic\":\"a\",\"payload\":{\"x\":1},"),
            "{text}"
        );
        assert!(text.as_str().contains("\"qos\":1"), "{text}");
        let Frame::Text(again) = frame(&second) else {
            panic!("expected a text frame");
        };
        let shared: &Bytes = again.as_ref();
        let rendered = first.rendered.get().expect("rendered once");
        assert_eq!(shared.as_ptr(), rendered.as_ptr(), "no copy per client");
    }

    #[test]
    fn binary_payloads_still_make_text_frames() {
        let Frame::Text(text) = frame(&delivery(&[0xff, 0x00])) else {
            panic!("expected a text frame");
        };
        assert!(
            text.as_str().contains("\"payload_base64\":\"/wA=\""),
            "{text}"
        );
    }
}

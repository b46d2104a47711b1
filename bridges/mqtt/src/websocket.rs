//! MQTT over WebSocket (MQTT 3.1.1 section 6, MQTT 5 section 6): the server handshake,
//! answering subprotocol `mqtt`, the client handshake of the remote bridge, asking for it,
//! and an adapter that turns binary WebSocket messages into a byte stream. MQTT packets may span messages and one message may hold several
//! packets, so the session reads it exactly like a TCP socket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bytes tungstenite reads from the socket at a time; its buffer keeps this capacity for
/// the life of the connection. Small, to keep idle connections small (its default is
/// 128 KiB): MQTT clients mostly send small packets, and a larger message still arrives
/// whole, over several reads.
const READ_BUFFER: usize = 1024;

/// The subprotocols a client may offer, in order of preference: `mqtt` (the registered
/// name), then `mqttv3.1` (used by older MQTT 3.1 era clients).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The subprotocol to answer for a `Sec-WebSocket-Protocol` header, if any is ours.
pub fn choose_subprotocol(offered: &str) -> Option<&'static str> {
    SUBPROTOCOLS.into_iter().find(|ours| {
        offered
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(ours))
    })
}

/// Completes the WebSocket handshake on `stream` (any URL path), limiting messages to
/// `max_message` bytes.
pub async fn accept<S>(
    stream: S,
    max_message: usize,
) -> Result<WebSocketBytes<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    // The callback's signature is tungstenite's; its error type is large, and never built.
    #[allow(clippy::result_large_err)]
    let answer_subprotocol = |request: &Request, mut response: Response| {
        let chosen = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(choose_subprotocol);
        if let Some(chosen) = chosen {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        }
        Ok::<Response, ErrorResponse>(response)
    };
    let inner =
        tokio_tungstenite::accept_hdr_async_with_config(stream, answer_subprotocol, Some(config))
            .await?;
    Ok(WebSocketBytes::new(inner))
}

/// Opens MQTT over WebSocket to `url` on an established `stream` (TCP or TLS), offering
/// subprotocol `mqtt`; messages up to `max_message` bytes.
pub async fn connect<S>(
    stream: S,
    url: &str,
    max_message: usize,
) -> Result<WebSocketBytes<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOLS[0]),
    );
    let config = WebSocketConfig::default()
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let (inner, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(WebSocketBytes::new(inner))
}

/// A WebSocket connection read and written as a byte stream: each write is one binary
/// message; reads return the bytes of binary messages in order.
pub struct WebSocketBytes<S> {
    inner: WebSocketStream<S>,
    /// What is left of the binary message being read.
    reading: Bytes,
}

impl<S> WebSocketBytes<S> {
    /// Wraps an established WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            reading: Bytes::new(),
        }
    }
}

fn to_io(error: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.reading.is_empty() {
                let count = this.reading.len().min(buf.remaining());
                buf.put_slice(&this.reading.split_to(count));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                // End of stream: leave `buf` untouched.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.reading = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary messages",
                    )))
                }
                // Pings are answered by tungstenite; pongs and raw frames carry no data.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(&mut this.inner)
            .start_send(message)
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[test]
    fn the_mqtt_subprotocol_is_chosen_when_offered() {
        assert_eq!(choose_subprotocol("mqtt"), Some("mqtt"));
        assert_eq!(choose_subprotocol("wamp, MQTT"), Some("mqtt"));
        assert_eq!(choose_subprotocol("mqttv3.1, mqtt"), Some("mqtt"));
        assert_eq!(choose_subprotocol("mqttv3.1"), Some("mqttv3.1"));
        assert_eq!(choose_subprotocol("chat"), None);
    }

    #[tokio::test]
    async fn binary_messages_become_one_byte_stream() {
        let (client_side, server_side) = tokio::io::duplex(4096);
        let mut client = WebSocketStream::from_raw_socket(client_side, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(server_side, Role::Server, None).await;
        let mut server = WebSocketBytes::new(server);
        // One packet split over two messages, then two packets in one message.
        for part in [&b"\x30\x03\x00"[..], b"\x01a", b"\xc0\x00\xc0\x00"] {
            client.send(Message::binary(part.to_vec())).await.unwrap();
        }
        client.send(Message::Ping(Bytes::new())).await.unwrap();
        client.close(None).await.unwrap();
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"\x30\x03\x00\x01a\xc0\x00\xc0\x00");
    }

    #[tokio::test]
    async fn writes_become_binary_messages_and_text_is_refused() {
        let (client_side, server_side) = tokio::io::duplex(4096);
        let mut client = WebSocketStream::from_raw_socket(client_side, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(server_side, Role::Server, None).await;
        let mut server = WebSocketBytes::new(server);
        server.write_all(b"\xd0\x00").await.unwrap();
        server.flush().await.unwrap();
        let received = futures_util::StreamExt::next(&mut client).await;
        assert_eq!(
            received.unwrap().unwrap(),
            Message::binary(b"\xd0\x00".to_vec())
        );
        client.send(Message::text("hello")).await.unwrap();
        let mut byte = [0u8; 1];
        let error = server.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}

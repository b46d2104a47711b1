//! The start of a connection, before there is a session: reading the client's CONNECT
//! (choosing the codec by its protocol level) and answering the connections that do not
//! get a session.

use bytes::BytesMut;
use switchyard_api::{BridgeContext, DropReason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::timeout;
use tracing::debug;

use crate::codec::{
    peek_protocol_level, unsupported_version_connack, CodecError, ConnectRefusal, Protocol,
};
use crate::incoming::{Connect, Incoming};
use crate::session::{write_out, GOODBYE_TIMEOUT, MIN_READ};

/// Why no session started.
#[derive(Debug)]
pub enum Refusal {
    Closed,
    Io(std::io::Error),
    Version(u8),
    Codec(CodecError),
}

/// Answers a CONNECT with a refusal; the connection then closes.
pub async fn refuse_connect<T>(mut transport: T, protocol: Protocol, refusal: ConnectRefusal)
where
    T: AsyncWrite + Unpin,
{
    let mut output = BytesMut::new();
    if protocol
        .encode_connack_refused(&mut output, refusal)
        .is_ok()
    {
        let _ = timeout(GOODBYE_TIMEOUT, write_out(&mut transport, &mut output)).await;
    }
}

/// Reads until a whole CONNECT is in `input`, choosing the codec by its protocol level.
pub async fn read_connect<T>(
    transport: &mut T,
    input: &mut BytesMut,
    max_packet: usize,
) -> Result<(Protocol, Connect), Refusal>
where
    T: AsyncRead + Unpin,
{
    loop {
        if let Some(level) = peek_protocol_level(input).map_err(Refusal::Codec)? {
            let protocol = Protocol::from_level(level).ok_or(Refusal::Version(level))?;
            match protocol.decode(input, max_packet).map_err(Refusal::Codec)? {
                Some(Incoming::Connect(connect)) => return Ok((protocol, connect)),
                Some(_) => {
                    return Err(Refusal::Codec(CodecError::Malformed(
                        "the first packet must be CONNECT".to_owned(),
                    )))
                }
                None => {}
            }
        }
        input.reserve(MIN_READ);
        if transport.read_buf(input).await.map_err(Refusal::Io)? == 0 {
            return Err(Refusal::Closed);
        }
    }
}

/// Counts and answers a connection that did not get as far as a session.
pub async fn refuse<T>(ctx: &BridgeContext, mut transport: T, refusal: Refusal)
where
    T: AsyncWrite + Unpin,
{
    match refusal {
        Refusal::Version(level) => {
            debug!(bridge = %ctx.name, level, "Refused a client speaking an unsupported MQTT version.");
            let mut output = BytesMut::new();
            unsupported_version_connack(&mut output);
            let _ = timeout(GOODBYE_TIMEOUT, write_out(&mut transport, &mut output)).await;
        }
        Refusal::Codec(CodecError::TooLarge(size)) => ctx.metrics.dropped(
            DropReason::TooLarge,
            format_args!("a client's CONNECT of {size} bytes is too large"),
        ),
        Refusal::Codec(CodecError::Malformed(detail)) => ctx.metrics.dropped(
            DropReason::Invalid,
            format_args!("a client's first packet is unreadable ({detail})"),
        ),
        Refusal::Io(error) => {
            debug!(bridge = %ctx.name, "A connection failed before CONNECT: {error}.");
        }
        Refusal::Closed => {}
    }
}

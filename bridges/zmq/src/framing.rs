//! How a topic and a body are laid out in ZeroMQ frames, both ways.
//!
//! `multipart`: exactly two frames, `[topic, body]` (fedmsg and most PUB/SUB buses).
//! `single`: one frame, `topic<space>body` (the ZeroMQ guide's weather-server layout); the
//! topic ends at the first space, and the body may be empty.
//! SUB sockets filter on the first frame's leading bytes, so in both layouts the topic
//! comes first.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::config::Framing;

/// Why received frames do not hold a topic and a body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// The number of frames does not fit the layout.
    #[error("expected {expected} frame(s), found {found}")]
    FrameCount {
        /// How many the layout has.
        expected: usize,
        /// How many arrived.
        found: usize,
    },
    /// A single frame without the space that ends the topic.
    #[error("expected \"topic<space>body\" in the frame, found no space")]
    NoSeparator,
    /// The topic is not UTF-8.
    #[error("the topic is not valid UTF-8")]
    TopicNotUtf8,
}

/// Splits received frames into the topic and the body (sharing the frames' bytes).
pub fn split(framing: Framing, mut frames: Vec<Bytes>) -> Result<(String, Bytes), FramingError> {
    let (topic, body) = match framing {
        Framing::Multipart => {
            if frames.len() != 2 {
                return Err(FramingError::FrameCount {
                    expected: 2,
                    found: frames.len(),
                });
            }
            let body = frames.pop().unwrap_or_default();
            let topic = frames.pop().unwrap_or_default();
            (topic, body)
        }
        Framing::Single => {
            if frames.len() != 1 {
                return Err(FramingError::FrameCount {
                    expected: 1,
                    found: frames.len(),
                });
            }
            let mut frame = frames.pop().unwrap_or_default();
            let space = frame
                .iter()
                .position(|byte| *byte == b' ')
                .ok_or(FramingError::NoSeparator)?;
            let topic = frame.split_to(space);
            frame.advance(1);
            (topic, frame)
        }
    };
    let topic = String::from_utf8(topic.to_vec()).map_err(|_| FramingError::TopicNotUtf8)?;
    Ok((topic, body))
}

/// The frames that carry `body` under `topic`.
pub fn join(framing: Framing, topic: &str, body: Bytes) -> Vec<Bytes> {
    match framing {
        Framing::Multipart => vec![Bytes::copy_from_slice(topic.as_bytes()), body],
        Framing::Single => {
            let mut frame = BytesMut::with_capacity(topic.len() + 1 + body.len());
            frame.put_slice(topic.as_bytes());
            frame.put_u8(b' ');
            frame.put_slice(&body);
            vec![frame.freeze()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|part| Bytes::copy_from_slice(part))
            .collect()
    }

    #[test]
    fn both_layouts_round_trip() {
        for framing in [Framing::Multipart, Framing::Single] {
            for body in [&b"{\"a\": 1}"[..], b"", b"two words \xff"] {
                let joined = join(framing, "org.example.x", Bytes::copy_from_slice(body));
                let (topic, back) = split(framing, joined).expect("splits");
                assert_eq!((topic.as_str(), &back[..]), ("org.example.x", body));
            }
        }
        assert_eq!(
            join(Framing::Single, "a.b", Bytes::from_static(b"hi")),
            frames(&[b"a.b hi"])
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(
            split(Framing::Multipart, frames(&[b"only-one"])),
            Err(FramingError::FrameCount {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            split(Framing::Multipart, frames(&[b"a", b"b", b"c"])),
            Err(FramingError::FrameCount {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            split(Framing::Single, frames(&[b"a", b"b"])),
            Err(FramingError::FrameCount {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(
            split(Framing::Single, frames(&[b"no-space"])),
            Err(FramingError::NoSeparator)
        );
        assert_eq!(
            split(Framing::Multipart, frames(&[b"\xff", b"x"])),
            Err(FramingError::TopicNotUtf8)
        );
    }
}

//! switchyard's JSON WebSocket firehose (receive only): each text frame is one message
//! envelope whose `payload` holds the probe verbatim (the probe is a JSON string).

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::CONNECT_TIMEOUT;
use crate::bench::tally::SharedTally;
use crate::bench::BenchError;

/// Opens the WebSocket (subscriptions come from the URL's `?subscribe=`) and records
/// every frame until the task is aborted or the server closes.
pub async fn subscribe(url: &str, tally: SharedTally) -> Result<JoinHandle<()>, BenchError> {
    let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (mut stream, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| BenchError::endpoint(url, "connect", "no answer in time"))?
        .map_err(|e| BenchError::endpoint(url, "connect", e))?;
    let label = url.to_owned();
    Ok(tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Text(text)) => tally.record(text.as_bytes()),
                Ok(Message::Binary(bytes)) => tally.record(&bytes),
                Ok(_) => {}
                Err(error) => {
                    eprintln!("switchyard bench: {label}: {error}");
                    break;
                }
            }
        }
    }))
}

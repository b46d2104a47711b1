//! One client connection, from the handshake to the close: a single task that reads the
//! client's frames, writes its queued messages, answers acknowledgements as they resolve,
//! and pings it.
//!
//! Nothing here waits on another client: the fan-out only `try_send`s into this
//! connection's bounded queue, and every write is bounded by the stall limit (two ping
//! intervals) and raced against shutdown and the slow-client kick.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::access::AccessPolicy;
use switchyard_api::acl::ReadGrant;
use switchyard_api::server::{ClientHandle, ClientRegistry, Reader, SubscriptionOptions};
use switchyard_api::server_tls::ServerTls;
use switchyard_api::{AckOutcome, BridgeContext, DropReason, QoS, TopicFilter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServerSettings;
use crate::control::{parse_request, ErrorReason, Refusal, Reply, Request};
use crate::egress;
use crate::handshake::{self, Admitted, Gate, HandshakeError};
use crate::ingress::{self, PendingAck, Publisher};

/// QoS 1 publishes of one client waiting for their destinations. At the limit the
/// connection stops reading until some resolve, which holds back that client alone.
const MAX_PENDING_ACKS: usize = 256;

/// How long a closing connection waits for the client to answer the Close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Buffer for discarding what a closing client still sends (allocated only then).
const DISCARD_BUFFER_BYTES: usize = 4 << 10;

/// What every connection of one running bridge shares.
pub struct Served {
    /// The bridge's context.
    pub ctx: BridgeContext,
    /// The bridge's settings.
    pub settings: Arc<ServerSettings>,
    /// The clients, their subscriptions and queues.
    pub registry: ClientRegistry,
    /// Tokens, anonymous clients and the ACL.
    pub policy: Arc<AccessPolicy>,
    /// The listener's TLS, when `tls` is set.
    pub tls: Option<ServerTls>,
}

/// Why a connection ends.
enum Ending {
    /// The client closed the connection (Close frame or end of stream).
    ClientClosed,
    /// The socket failed; nothing more can be sent.
    Transport(WsError),
    /// The server closes with this code and reason.
    Close(CloseCode, &'static str),
}

/// Serves an admitted socket until it closes. `certificate_user` is the common name of
/// the client's verified TLS certificate.
pub async fn serve<S>(served: Arc<Served>, stream: S, certificate_user: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gate = Gate {
        settings: &served.settings,
        policy: &served.policy,
        admitted: true,
        certificate_user,
    };
    // Boxed so the handshake's state is freed once done instead of sizing every
    // connection's task for the rest of its life.
    let handshake = Box::pin(handshake::accept(stream, gate));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        () = served.ctx.shutdown.cancelled() => return,
    };
    let (socket, Admitted { filters, user }) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => return handshake_failed(&served.ctx, &error),
    };
    served.ctx.metrics.connection_opened();
    let handle = served.registry.register();
    let id = handle.id;
    if served.policy.has_acl() {
        let reader = Reader {
            policy: Arc::clone(&served.policy),
            user: user.clone(),
        };
        served.registry.set_reader(id, reader);
    }
    tracing::debug!(bridge = %served.ctx.name, connection = id, "WebSocket client connected.");
    let stall_limit = served.settings.ping_interval.0 * 2;
    let mut connection = Connection {
        shutdown: served.ctx.shutdown.clone(),
        served: Arc::clone(&served),
        socket,
        handle,
        user,
        pending: FuturesUnordered::new(),
        last_seen: Instant::now(),
        stall_limit,
    };
    let ending = match connection.start(filters).await {
        Ok(()) => connection.serve().await,
        Err(ending) => ending,
    };
    connection.finish(ending).await;
    served.registry.remove(id);
    served.ctx.metrics.connection_closed();
}

/// Answers a socket beyond `max_connections` with HTTP 503 (under the handshake timeout).
pub async fn refuse<S>(served: Arc<Served>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gate = Gate {
        settings: &served.settings,
        policy: &served.policy,
        admitted: false,
        certificate_user: None,
    };
    let handshake = handshake::accept(stream, gate);
    tokio::select! {
        refused = handshake => if let Err(error) = refused {
            handshake_failed(&served.ctx, &error);
        },
        () = served.ctx.shutdown.cancelled() => {}
    }
}

fn handshake_failed(ctx: &BridgeContext, error: &HandshakeError) {
    // Bad bytes are counted; a socket that simply failed or hung up is not bad input.
    if matches!(error, HandshakeError::Protocol(inner) if !matches!(inner, WsError::Io(_) | WsError::ConnectionClosed))
    {
        ctx.metrics.dropped(
            DropReason::Invalid,
            format_args!("a WebSocket handshake failed: {error}"),
        );
    }
    tracing::debug!(bridge = %ctx.name, "WebSocket handshake not completed: {error}");
}

/// The state of one connected client.
struct Connection<S> {
    /// Cancelled when the hub stops.
    shutdown: CancellationToken,
    /// The bridge's shared state.
    served: Arc<Served>,
    /// The WebSocket.
    socket: WebSocketStream<S>,
    /// Id, send queue and kick signal in the registry.
    handle: ClientHandle,
    /// The user the client logged in as (`None` = anonymous).
    user: Option<Arc<str>>,
    /// Acknowledgements of this client's QoS 1 publishes, answered as they resolve.
    pending: FuturesUnordered<PendingAck>,
    /// When the client last sent anything (a pong included).
    last_seen: Instant,
    /// How long one write may wait for the client to read.
    stall_limit: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Applies the subscriptions asked for in the handshake's query string.
    async fn start(&mut self, filters: Vec<TopicFilter>) -> Result<(), Ending> {
        for filter in filters {
            if self.add_subscription(&filter) {
                self.replay_retained(&filter).await?;
            } else {
                self.refuse_subscription(filter.as_str()).await?;
            }
        }
        Ok(())
    }

    /// Tells the client the ACL refused its subscription to `filter`.
    async fn refuse_subscription(&mut self, filter: &str) -> Result<(), Ending> {
        let refusal = Refusal::new(
            ErrorReason::NotAuthorized,
            format!("the ACL does not let this client read anything {filter:?} matches"),
        );
        self.send(Reply::refused(&refusal, None).to_frame()).await
    }

    /// The connection's loop; returns why it ends.
    async fn serve(&mut self) -> Ending {
        let period = self.served.settings.ping_interval.0;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Err(shutting_down()),
                () = self.handle.kicked.cancelled() => Err(too_slow()),
                Some((id, outcome)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.answer_ack(id, outcome).await
                }
                Some(first) = self.handle.messages.recv() => {
                    let write = egress::write_batch(&mut self.socket, first, &mut self.handle.messages);
                    bounded(write, self.stall_limit, &self.shutdown, &self.handle.kicked).await
                }
                frame = self.socket.next(), if self.pending.len() < MAX_PENDING_ACKS => {
                    self.on_frame(frame).await
                }
                _ = ping.tick() => self.on_ping_tick(period).await,
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Frame, WsError>>) -> Result<(), Ending> {
        self.last_seen = Instant::now();
        let metrics = &self.served.ctx.metrics;
        match frame {
            None | Some(Ok(Frame::Close(_))) => Err(Ending::ClientClosed),
            Some(Ok(Frame::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Frame::Binary(_))) => {
                self.reject(Refusal::invalid(
                    "expected a text frame holding a JSON object, found a binary frame",
                ))
                .await
            }
            // tungstenite answers pings itself; pongs only show the client is alive.
            Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => Ok(()),
            Some(Err(WsError::Capacity(error))) => {
                metrics.dropped(
                    DropReason::TooLarge,
                    format_args!("a WebSocket client sent a message over max_message: {error}"),
                );
                Err(Ending::Close(
                    CloseCode::Size,
                    "message larger than the server's max_message",
                ))
            }
            Some(Err(WsError::Utf8(_))) => {
                metrics.dropped(DropReason::Invalid, "a WebSocket text frame was not UTF-8");
                Err(Ending::Close(CloseCode::Invalid, "text frame is not UTF-8"))
            }
            Some(Err(WsError::Protocol(error))) => {
                metrics.dropped(
                    DropReason::Invalid,
                    format_args!("a WebSocket client broke the protocol: {error}"),
                );
                Err(Ending::Close(
                    CloseCode::Protocol,
                    "WebSocket protocol error",
                ))
            }
            Some(Err(error)) => Err(Ending::Transport(error)),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ending> {
        match parse_request(text) {
            Ok(Request::Subscribe(filter)) => self.subscribe(filter).await,
            Ok(Request::Unsubscribe(filter)) => self.unsubscribe(filter).await,
            Ok(Request::Ping) => self.send(Reply::Pong.to_frame()).await,
            Ok(Request::Publish) => self.publish(text).await,
            Err(refusal) => self.reject(refusal).await,
        }
    }

    async fn subscribe(&mut self, text: String) -> Result<(), Ending> {
        let filter = match TopicFilter::new(&text) {
            Ok(filter) => filter,
            Err(error) => {
                let detail =
                    format!("expected an MQTT filter such as \"a/#\", found {text:?}: {error}");
                return self.reject(Refusal::invalid(detail)).await;
            }
        };
        if !self.add_subscription(&filter) {
            return self.refuse_subscription(&text).await;
        }
        self.send(Reply::Subscribed { filter: &text }.to_frame())
            .await?;
        self.replay_retained(&filter).await
    }

    async fn unsubscribe(&mut self, text: String) -> Result<(), Ending> {
        match TopicFilter::new(&text) {
            Ok(filter) => {
                self.served.registry.unsubscribe(self.handle.id, &filter);
                self.send(Reply::Unsubscribed { filter: &text }.to_frame())
                    .await
            }
            Err(error) => {
                let detail =
                    format!("expected an MQTT filter such as \"a/#\", found {text:?}: {error}");
                self.reject(Refusal::invalid(detail)).await
            }
        }
    }

    /// Subscribes at QoS 1, so each client sees the QoS the message has on this bridge;
    /// false when the ACL lets the client read nothing the filter matches.
    fn add_subscription(&self, filter: &TopicFilter) -> bool {
        let grant = self
            .served
            .policy
            .read_grant(self.user.as_deref(), filter.as_str());
        if grant == ReadGrant::Denied {
            return false;
        }
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            check_read: grant == ReadGrant::Partial,
        };
        self.served
            .registry
            .subscribe(self.handle.id, filter, options);
        true
    }

    async fn replay_retained(&mut self, filter: &TopicFilter) -> Result<(), Ending> {
        if !self.served.settings.replay_retained {
            return Ok(());
        }
        let retained = self.served.registry.retained_for(
            &self.served.ctx,
            self.handle.id,
            filter,
            QoS::AtLeastOnce,
        );
        if retained.is_empty() {
            return Ok(());
        }
        let write = egress::write_all(&mut self.socket, retained);
        bounded(write, self.stall_limit, &self.shutdown, &self.handle.kicked).await
    }

    async fn publish(&mut self, text: &str) -> Result<(), Ending> {
        let publisher = Publisher {
            connection: self.handle.id,
            user: self.user.as_deref(),
            policy: &self.served.policy,
        };
        let published = tokio::select! {
            published = ingress::publish(&self.served.ctx, publisher, text) => published,
            () = self.shutdown.cancelled() => return Err(shutting_down()),
        };
        match published {
            Ok(Some(pending)) => {
                self.pending.push(pending);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refused) => {
                let reply = Reply::refused(&refused.refusal, refused.id.as_deref()).to_frame();
                self.send(reply).await
            }
        }
    }

    async fn answer_ack(&mut self, id: Option<String>, outcome: AckOutcome) -> Result<(), Ending> {
        let frame = match outcome {
            AckOutcome::Delivered => Reply::Ack { id: id.as_deref() }.to_frame(),
            AckOutcome::NotDelivered => {
                let refusal = Refusal::new(
                    ErrorReason::NotDelivered,
                    "the message did not reach every destination; publish it again",
                );
                Reply::refused(&refusal, id.as_deref()).to_frame()
            }
        };
        self.send(frame).await
    }

    /// Pings the client, or closes it when it has been silent for two intervals.
    async fn on_ping_tick(&mut self, period: Duration) -> Result<(), Ending> {
        if self.last_seen.elapsed() >= period * 2 {
            return Err(Ending::Close(
                CloseCode::Away,
                "no frame from the client for two ping intervals",
            ));
        }
        self.send(Frame::Ping(Default::default())).await
    }

    /// Counts a refused request as invalid and tells the client why.
    async fn reject(&mut self, refusal: Refusal) -> Result<(), Ending> {
        self.served.ctx.metrics.dropped(
            DropReason::Invalid,
            format_args!("a WebSocket client: {}", refusal.detail),
        );
        self.send(Reply::refused(&refusal, None).to_frame()).await
    }

    /// Writes and flushes one frame.
    async fn send(&mut self, frame: Frame) -> Result<(), Ending> {
        let write = self.socket.send(frame);
        bounded(write, self.stall_limit, &self.shutdown, &self.handle.kicked).await
    }

    /// Sends the Close frame when the server ends the connection, then lets the client
    /// answer for a moment so the close is clean rather than a reset.
    async fn finish(&mut self, ending: Ending) {
        let id = self.handle.id;
        let bridge = &self.served.ctx.name;
        match ending {
            Ending::Transport(error) => {
                tracing::debug!(%bridge, connection = id, "WebSocket client lost: {error}");
                return;
            }
            Ending::ClientClosed => {
                tracing::debug!(%bridge, connection = id, "WebSocket client disconnected.");
            }
            Ending::Close(code, reason) => {
                tracing::debug!(%bridge, connection = id, "Closing a WebSocket client: {reason}.");
                let close = Frame::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }));
                if !matches!(
                    tokio::time::timeout(CLOSE_GRACE, self.socket.send(close)).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
            }
        }
        let socket = &mut self.socket;
        let drain = async {
            while let Some(Ok(_)) = socket.next().await {}
            // Reading what the client still sends until it hangs up avoids a reset that
            // could destroy the Close frame before the client reads it.
            let stream = socket.get_mut();
            if stream.shutdown().await.is_ok() {
                let mut discard = vec![0; DISCARD_BUFFER_BYTES];
                while matches!(stream.read(&mut discard).await, Ok(read) if read > 0) {}
            }
        };
        // The client's answer is a courtesy; a client that does not answer is dropped.
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

/// Runs a write, bounded by the stall limit and cut short by shutdown or a kick.
async fn bounded(
    write: impl Future<Output = Result<(), WsError>>,
    stall_limit: Duration,
    shutdown: &CancellationToken,
    kicked: &CancellationToken,
) -> Result<(), Ending> {
    tokio::select! {
        written = tokio::time::timeout(stall_limit, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Ending::Transport(error)),
            Err(_) => Err(Ending::Close(
                CloseCode::Policy,
                "the client did not read for two ping intervals",
            )),
        },
        () = shutdown.cancelled() => Err(shutting_down()),
        () = kicked.cancelled() => Err(too_slow()),
    }
}

fn shutting_down() -> Ending {
    Ending::Close(CloseCode::Away, "the server is shutting down")
}

fn too_slow() -> Ending {
    Ending::Close(
        CloseCode::Policy,
        "the client read too slowly and its send queue overflowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::server::SlowClient;
    use switchyard_api::{
        Ack, BoxFuture, BridgeId, BridgeMetrics, LatencyHistogram, Message, OutboundQueue,
        Overflow, QueueLimits, Router, RuleSet,
    };
    use tokio::net::TcpStream;

    /// Bytes the state of one connection's task may take (its future, not counting the
    /// heap buffers): part of the budget of under 10 KiB per idle connection.
    const MAX_TASK_BYTES: usize = 2560;

    struct Nowhere;

    impl Router for Nowhere {
        fn route(&self, _: BridgeId, _: Message, _: Option<Ack>) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }

        fn retained(&self, _: BridgeId) -> Vec<(Arc<Message>, usize)> {
            Vec::new()
        }
    }

    fn size_of_future<F: Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let stream = TcpStream::connect(address).await.expect("connect");
        let metrics = Arc::new(BridgeMetrics::new("probe"));
        let limits = QueueLimits {
            max_messages: 1,
            max_bytes: 1,
            overflow: Overflow::DropNewest,
            ttl: None,
        };
        let ctx = BridgeContext {
            id: 1,
            name: Arc::from("probe"),
            hub_name: Arc::from("hub"),
            rules: Arc::new(RuleSet::default()),
            outbound: Arc::new(OutboundQueue::new(limits, Arc::clone(&metrics))),
            metrics: Arc::clone(&metrics),
            latency: Arc::new(LatencyHistogram::default()),
            router: Arc::new(Nowhere),
            shutdown: CancellationToken::new(),
        };
        let settings = ServerSettings::parse(serde_json::json!({})).expect("defaults");
        let served = Arc::new(Served {
            ctx,
            settings: Arc::new(settings),
            registry: ClientRegistry::new(1, SlowClient::Drop, metrics),
            policy: Arc::new(AccessPolicy::allow_all()),
            tls: None,
        });
        let task = serve(served, stream, None);
        assert!(
            size_of_future(&task) <= MAX_TASK_BYTES,
            "a connection task takes {} bytes",
            size_of_future(&task)
        );
    }
}

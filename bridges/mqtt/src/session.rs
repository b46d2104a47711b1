//! One client connection, from CONNECT to close, over any byte stream (TCP or the
//! WebSocket adapter).
//!
//! A session is one task with one `select!` loop: bytes from the client, acknowledgements
//! settling in the hub, messages from the client's queue, the keepalive deadline, and the
//! reasons to stop (shutdown, takeover by a newer connection with the same client
//! identifier, being too slow). While `max_inflight` of the client's publishes wait for
//! the hub, the client is held back: its PINGREQs and acknowledgements are still handled,
//! its other packets wait in order in [`Held`], and the session stops reading only once
//! that queue is full. Sessions are not kept after a connection ends: a client
//! that connects with clean session (3.1.1) / clean start (5) off is accepted, but always
//! starts afresh (CONNACK session present = 0), and MQTT 5 clients are told so with a
//! session expiry interval of 0.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use switchyard_api::access::{AccessPolicy, Credentials, LoginError};
use switchyard_api::acl::ReadGrant;
use switchyard_api::server::{
    ClientHandle, ClientRegistry, ConnectionId, Reader, SubscriptionOptions,
};
use switchyard_api::server_tls::ServerTls;
use switchyard_api::{BridgeContext, DropReason, QoS, TopicFilter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::access::{Access, Identity};
use crate::clients::{Admission, ConnectedClients};
use crate::codec::{CodecError, ConnectRefusal, Granted, Protocol};
use crate::config::MqttServerSettings;
use crate::egress::Egress;
use crate::ending::Ending;
use crate::handshake::{read_connect, refuse, refuse_connect};
use crate::held::Held;
use crate::incoming::{FilterRequest, Incoming};
use crate::ingress::{Ingress, Settled, Violation};

/// Smallest read; idle connections hold no more than this for input.
pub const MIN_READ: usize = 512;
/// Largest read, reached by doubling while reads fill the buffer.
const MAX_READ: usize = 64 * 1024;
/// Buffers larger than this are given back once empty.
const SHRINK_ABOVE: usize = 16 * 1024;
/// Time allowed for the last words (MQTT 5 DISCONNECT) to a closing client.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every connection of one running `mqtt-server` bridge shares.
pub struct Broker {
    /// The bridge's context.
    pub ctx: BridgeContext,
    /// The bridge's settings.
    pub settings: Arc<MqttServerSettings>,
    /// Subscriptions and per-client queues.
    pub registry: ClientRegistry,
    /// Connected client identifiers (limit and takeover).
    pub clients: ConnectedClients,
    /// Who may connect, publish and subscribe: the configured policy and the hook.
    pub access: Arc<dyn Access>,
    /// The configured policy alone: logins, and read checks at delivery.
    pub policy: Arc<AccessPolicy>,
    /// The TLS of `tls_listen` and `wss_listen`, when set.
    pub tls: Option<ServerTls>,
}

/// Serves one accepted connection until it ends. `certificate_user` is the common name
/// of the client's verified TLS certificate, if it presented one.
pub async fn serve<T>(broker: Arc<Broker>, mut transport: T, certificate_user: Option<String>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let settings = Arc::clone(&broker.settings);
    let mut input = BytesMut::new();
    let first = read_connect(&mut transport, &mut input, settings.max_packet());
    let opened = tokio::select! {
        () = broker.ctx.shutdown.cancelled() => return,
        opened = timeout(settings.connect_timeout.0, first) => opened,
    };
    let (protocol, mut connect) = match opened {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => return refuse(&broker.ctx, transport, refusal).await,
        Err(_) => {
            debug!(bridge = %broker.ctx.name, "Closing a connection that sent no CONNECT in time.");
            return;
        }
    };
    let credentials = Credentials {
        certificate_user,
        token: None,
        username: connect.username.clone().filter(|name| !name.is_empty()),
        password: connect.password.take(),
    };
    let user = match broker.policy.login(credentials).await {
        Ok(user) => user,
        Err(error) => {
            let refusal = match error {
                LoginError::BadCredentials => ConnectRefusal::BadCredentials,
                LoginError::NotAuthorized => ConnectRefusal::NotAuthorized,
            };
            debug!(bridge = %broker.ctx.name, client = %connect.client_id, "Refused a login: {error:?}.");
            return refuse_connect(transport, protocol, refusal).await;
        }
    };
    let handle = broker.registry.register();
    let connection = handle.id;
    if broker.policy.has_acl() {
        let reader = Reader {
            policy: Arc::clone(&broker.policy),
            user: user.clone(),
        };
        broker.registry.set_reader(connection, reader);
    }
    let (client_id, assigned) = if connect.client_id.is_empty() {
        let generated = format!("{}-{connection}", broker.ctx.hub_name);
        (generated.clone(), Some(generated))
    } else {
        (connect.client_id.clone(), None)
    };
    let identity = Arc::new(Identity {
        client_id,
        username: user.as_deref().map(str::to_owned),
    });
    if !broker.access.may_connect(&identity) {
        broker.registry.remove(connection);
        debug!(bridge = %broker.ctx.name, client = %identity.client_id, "Refused a client the access policy does not allow.");
        return refuse_connect(transport, protocol, ConnectRefusal::NotAuthorized).await;
    }
    let taken_over = CancellationToken::new();
    match broker
        .clients
        .admit(&identity.client_id, connection, taken_over.clone())
    {
        Admission::Full => {
            broker.registry.remove(connection);
            debug!(bridge = %broker.ctx.name, "Refused a client: max_connections reached.");
            return refuse_connect(transport, protocol, ConnectRefusal::Full).await;
        }
        Admission::TookOver => {
            debug!(bridge = %broker.ctx.name, client = %identity.client_id, "A client reconnected; closing its older connection.");
        }
        Admission::Admitted => {}
    }
    let mut output = BytesMut::new();
    broker.ctx.metrics.connection_opened();
    let receive_maximum = u16::try_from(settings.max_inflight).unwrap_or(u16::MAX);
    let accepted = protocol.encode_connack_accepted(
        &mut output,
        assigned,
        receive_maximum,
        settings.max_packet(),
    );
    let mut session = Session {
        egress: Egress::new(
            protocol,
            settings.max_inflight,
            connect.receive_maximum,
            connect.maximum_packet_size,
        ),
        ingress: Ingress::new(
            connection,
            Arc::clone(&identity),
            Arc::clone(&broker.access),
            settings.max_payload_bytes(),
        ),
        identity: Arc::clone(&identity),
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_secs(u64::from(connect.keep_alive)) * 3 / 2),
        broker: Arc::clone(&broker),
        transport,
        protocol,
        connection,
        input,
        output,
        read_size: MIN_READ,
        // As much as the largest packet a client may send, which `input` may hold anyway.
        held: Held::new(settings.max_packet()),
    };
    let ending = match accepted {
        Ok(()) => session.run(handle, &taken_over).await,
        Err(error) => Ending::Failed(std::io::Error::other(error)),
    };
    session.finish(&ending).await;
    broker.registry.remove(connection);
    broker.clients.leave(&identity.client_id, connection);
    broker.ctx.metrics.connection_closed();
    debug!(bridge = %broker.ctx.name, client = %identity.client_id, "A client connection ended: {ending}.");
    if ending.publishes_will() {
        if let Some(will) = connect.will {
            session.ingress.publish_will(&broker.ctx, will).await;
        }
    }
}

/// Writes and consumes `bytes`. Cancel-safe: when the future is dropped half-way,
/// `bytes` holds exactly what was not written yet, so the session's last words never
/// repeat the start of a packet the client already received.
pub async fn write_out<T: AsyncWrite + Unpin>(
    transport: &mut T,
    bytes: &mut BytesMut,
) -> std::io::Result<()> {
    transport.write_all_buf(bytes).await?;
    transport.flush().await
}

/// A connected client.
struct Session<T> {
    broker: Arc<Broker>,
    transport: T,
    protocol: Protocol,
    connection: ConnectionId,
    /// The client, for the access policy.
    identity: Arc<Identity>,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Bytes encoded and not yet written.
    output: BytesMut,
    /// How much room the next read gets.
    read_size: usize,
    ingress: Ingress,
    egress: Egress,
    /// Packets that wait while the client is held back.
    held: Held,
    /// 1.5 times the client's keepalive; `None` when it asked for none.
    keep_alive: Option<Duration>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session<T> {
    async fn run(&mut self, mut handle: ClientHandle, taken_over: &CancellationToken) -> Ending {
        let broker = Arc::clone(&self.broker);
        let mut deadline = self.keep_alive.map(|limit| Instant::now() + limit);
        // Packets that arrived together with CONNECT.
        if let Err(ending) = self.process_input().await {
            return ending;
        }
        loop {
            if !self.output.is_empty() {
                if let Err(ending) = self.flush(&handle, taken_over, deadline).await {
                    return ending;
                }
            }
            self.input.reserve(self.read_size);
            let can_read = !self.held.is_full();
            if !can_read {
                // The client is held back and what it sent fills the held queue (its
                // PINGREQs wait unread behind it): the time the server does not read is
                // not the client's silence.
                deadline = self.keep_alive.map(|limit| Instant::now() + limit);
            }
            let can_take = self.egress.can_take();
            let expiry = deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                () = broker.ctx.shutdown.cancelled() => return Ending::Shutdown,
                () = taken_over.cancelled() => return Ending::TakenOver,
                () = handle.kicked.cancelled() => return Ending::Kicked,
                settled = self.ingress.next_settled() => {
                    if let Err(ending) = self.answer(settled) {
                        return ending;
                    }
                    // Every other answer that is ready goes out in the same write: one
                    // syscall per PUBACK was the biggest cost of a QoS 1 publisher.
                    while let Some(settled) = self.ingress.next_settled().now_or_never() {
                        if let Err(ending) = self.answer(settled) {
                            return ending;
                        }
                    }
                    // The window has room again: what waited goes first.
                    if !self.held.is_empty() {
                        if let Err(ending) = self.process_input().await {
                            return ending;
                        }
                    }
                }
                read = self.transport.read_buf(&mut self.input), if can_read => {
                    match read {
                        Ok(0) => return Ending::Closed,
                        Ok(count) => self.adapt_read_size(count),
                        Err(error) => return Ending::Failed(error),
                    }
                    deadline = self.keep_alive.map(|limit| Instant::now() + limit);
                    if let Err(ending) = self.process_input().await {
                        return ending;
                    }
                }
                delivery = handle.messages.recv(), if can_take => match delivery {
                    Some(delivery) => {
                        self.egress.drain(&broker.ctx, delivery, &mut handle.messages, &mut self.output);
                    }
                    None => return Ending::Shutdown,
                },
                () = sleep_until(expiry), if deadline.is_some() && can_read => {
                    return Ending::KeepAliveExpired
                }
            }
        }
    }

    /// Doubles the read size while reads fill it; halves it back when they do not.
    fn adapt_read_size(&mut self, count: usize) {
        if count >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if count < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
    }

    /// Writes `output`, giving up when the session must end or the client stops reading
    /// for longer than its keepalive allows.
    async fn flush(
        &mut self,
        handle: &ClientHandle,
        taken_over: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<(), Ending> {
        let expiry = deadline.unwrap_or_else(Instant::now);
        let shutdown = self.broker.ctx.shutdown.clone();
        let written = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(Ending::Shutdown),
            () = taken_over.cancelled() => return Err(Ending::TakenOver),
            () = handle.kicked.cancelled() => return Err(Ending::Kicked),
            written = write_out(&mut self.transport, &mut self.output) => written,
            () = sleep_until(expiry), if deadline.is_some() => return Err(Ending::KeepAliveExpired),
        };
        written.map_err(Ending::Failed)?;
        self.output.clear();
        if self.output.capacity() > SHRINK_ABOVE {
            self.output = BytesMut::new();
        }
        Ok(())
    }

    /// Whether `max_inflight` of the client's publishes wait for the hub (the client is
    /// held back).
    fn window_full(&self) -> bool {
        self.ingress.pending() >= self.broker.settings.max_inflight
    }

    /// Handles held packets while the window has room, then every whole packet in
    /// `input`; while the client is held back, packets that must wait go to the held
    /// queue, and decoding stops once it is full. Afterwards, whole packets remain in
    /// `input` only when the held queue is full.
    async fn process_input(&mut self) -> Result<(), Ending> {
        while !self.window_full() {
            let Some(packet) = self.held.pop() else {
                break;
            };
            self.handle_packet(packet).await?;
        }
        let max_packet = self.broker.settings.max_packet();
        loop {
            let holding = !self.held.is_empty() || self.window_full();
            if holding && self.held.is_full() {
                break;
            }
            let before = self.input.len();
            let packet = match self.protocol.decode(&mut self.input, max_packet) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(CodecError::TooLarge(size)) => {
                    self.broker.ctx.metrics.dropped(
                        DropReason::TooLarge,
                        format_args!("a client sent a packet of {size} bytes"),
                    );
                    return Err(Ending::Violation(Violation {
                        reason: DisconnectReasonCode::PacketTooLarge,
                        detail: format!("packet of {size} bytes"),
                    }));
                }
                Err(CodecError::Malformed(detail)) => {
                    self.broker.ctx.metrics.dropped(
                        DropReason::Invalid,
                        format_args!("a client sent a malformed packet ({detail})"),
                    );
                    return Err(Ending::Violation(Violation {
                        reason: DisconnectReasonCode::MalformedPacket,
                        detail,
                    }));
                }
            };
            if holding && Held::must_wait(&packet) {
                self.held.push(packet, before - self.input.len());
            } else {
                self.handle_packet(packet).await?;
            }
        }
        if self.input.is_empty() && self.input.capacity() > SHRINK_ABOVE {
            self.input = BytesMut::new();
        }
        Ok(())
    }

    async fn handle_packet(&mut self, packet: Incoming) -> Result<(), Ending> {
        let written = match packet {
            Incoming::Publish(publish) => {
                let ctx = &self.broker.ctx;
                return self
                    .ingress
                    .publish(ctx, publish)
                    .await
                    .map_err(Ending::Violation);
            }
            Incoming::PubAck(pkid) => {
                self.egress.acknowledged(pkid);
                Ok(())
            }
            Incoming::PubRel(pkid) => self.protocol.encode_pubcomp(&mut self.output, pkid),
            Incoming::Subscribe { pkid, filters } => self.subscribe(pkid, filters),
            Incoming::Unsubscribe { pkid, filters } => self.unsubscribe(pkid, filters),
            Incoming::PingReq => self.protocol.encode_pingresp(&mut self.output),
            Incoming::Disconnect { publish_will } => {
                return Err(Ending::Disconnected { publish_will })
            }
            Incoming::Connect(_) => return Err(self.protocol_error("a second CONNECT")),
            Incoming::Unexpected(name) => return Err(self.protocol_error(name)),
        };
        written.map_err(|error| Ending::Failed(std::io::Error::other(error)))
    }

    /// Counts a packet that has no place in this conversation.
    fn protocol_error(&self, what: &str) -> Ending {
        self.broker.ctx.metrics.dropped(
            DropReason::Invalid,
            format_args!("a client sent {what}, which breaks the protocol"),
        );
        Ending::Violation(Violation {
            reason: DisconnectReasonCode::ProtocolError,
            detail: format!("unexpected {what}"),
        })
    }

    /// Sends the answer to a client's QoS 1 or 2 PUBLISH once the hub settled it.
    fn answer(&mut self, settled: Settled) -> Result<(), Ending> {
        if !settled.delivered {
            return Err(Ending::NotDelivered);
        }
        let written = if settled.exactly_once {
            self.protocol
                .encode_pubrec(&mut self.output, settled.pkid, settled.denied)
        } else {
            self.protocol
                .encode_puback(&mut self.output, settled.pkid, settled.denied)
        };
        written.map_err(|error| Ending::Failed(std::io::Error::other(error)))
    }

    /// Subscribes, answers SUBACK, then sends the retained messages each filter matches.
    fn subscribe(&mut self, pkid: u16, filters: Vec<FilterRequest>) -> Result<(), CodecError> {
        let broker = Arc::clone(&self.broker);
        let mut granted = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for request in filters {
            let Ok(filter) = TopicFilter::new(&request.path) else {
                granted.push(Granted::Invalid);
                continue;
            };
            if !broker.access.may_subscribe(&self.identity, &request.path) {
                debug!(bridge = %broker.ctx.name, client = %self.identity.client_id, "Refused a subscription the access policy does not allow.");
                granted.push(Granted::NotAuthorized);
                continue;
            }
            let user = self.identity.username.as_deref();
            let check_read = broker.policy.read_grant(user, &request.path) == ReadGrant::Partial;
            let qos = QoS::from_level(request.qos);
            let options = SubscriptionOptions {
                qos,
                no_local: request.no_local,
                check_read,
            };
            broker.registry.subscribe(self.connection, &filter, options);
            self.egress
                .set_retain_as_published(&filter, request.retain_as_published);
            granted.push(Granted::Qos(qos.level()));
            if request.send_retained {
                retained.extend(broker.registry.retained_for(
                    &broker.ctx,
                    self.connection,
                    &filter,
                    qos,
                ));
            }
        }
        self.protocol
            .encode_suback(&mut self.output, pkid, &granted)?;
        for delivery in &retained {
            self.egress
                .encode(&broker.ctx, delivery, true, &mut self.output);
        }
        Ok(())
    }

    fn unsubscribe(&mut self, pkid: u16, filters: Vec<String>) -> Result<(), CodecError> {
        for text in &filters {
            if let Ok(filter) = TopicFilter::new(text) {
                self.broker.registry.unsubscribe(self.connection, &filter);
                self.egress.unsubscribed(&filter);
            }
        }
        self.protocol
            .encode_unsuback(&mut self.output, pkid, filters.len())
    }

    /// Last words: pending answers and, for MQTT 5, a DISCONNECT with the reason; then
    /// the connection is shut down. Bounded by [`GOODBYE_TIMEOUT`].
    async fn finish(&mut self, ending: &Ending) {
        if matches!(ending, Ending::Failed(_) | Ending::Closed) {
            return;
        }
        if let Some(reason) = ending.reason() {
            // The connection closes either way; a failed encoding only loses the reason.
            let _ = self.protocol.encode_disconnect(&mut self.output, reason);
        }
        let goodbye = async {
            if !self.output.is_empty() {
                write_out(&mut self.transport, &mut self.output).await?;
            }
            self.transport.shutdown().await
        };
        let _ = timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
}

//! The remote connection over MQTT 3.1.1 (rumqttc's v4 client). MQTT 3.1.1 has no user
//! properties and no no-local: loops through a v4 broker are stopped only by the hub's
//! own guards (never back out of the bridge a message came in by).

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS as WireQoS,
};
use switchyard_api::{BoxFuture, BridgeError, QoS};
use tokio::sync::mpsc;

use super::client::{
    drive, network_options, request_failed, Connection, Endpoint, EventSource, IncomingPublish,
    RemoteClient, RemoteEvent, Request, StateTopic, EVENT_CAPACITY,
};
use super::config::RemoteSettings;

struct V4Client(AsyncClient);

fn wire_qos(qos: QoS) -> WireQoS {
    match qos {
        QoS::AtMostOnce => WireQoS::AtMostOnce,
        QoS::AtLeastOnce => WireQoS::AtLeastOnce,
    }
}

impl RemoteClient for V4Client {
    fn subscribe(
        &self,
        filter: String,
        qos: QoS,
        _no_local: bool,
    ) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async move {
            self.0
                .subscribe(filter, wire_qos(qos))
                .await
                .map_err(request_failed)
        })
    }

    fn try_send(&self, request: &Request) -> bool {
        match request {
            // MQTT 3.1.1 has no user properties: the headers stay behind.
            Request::Publish {
                topic,
                payload,
                qos,
                retain,
                ..
            } => self
                .0
                .try_publish(topic.as_str(), wire_qos(*qos), *retain, payload.to_vec())
                .is_ok(),
            Request::Ack { qos, pkid } => {
                let level = if *qos >= 2 {
                    WireQoS::ExactlyOnce
                } else {
                    WireQoS::AtLeastOnce
                };
                let mut publish = Publish::new("", level, Vec::new());
                publish.pkid = *pkid;
                self.0.try_ack(&publish).is_ok()
            }
        }
    }

    fn try_disconnect(&self) {
        let _ = self.0.try_disconnect();
    }
}

/// Opens an MQTT 3.1.1 connection.
pub fn connect(
    settings: &RemoteSettings,
    endpoint: &Endpoint,
    client_id: &str,
    will: Option<&StateTopic>,
) -> Connection {
    let address = &endpoint.address;
    let mut options = MqttOptions::new(client_id, address.broker_addr(), address.port);
    options
        .set_transport(endpoint.transport.clone())
        .set_keep_alive(settings.keep_alive())
        .set_clean_session(settings.clean_session)
        .set_manual_acks(true)
        .set_inflight(settings.max_inflight.max(1));
    if let Some((user, password)) = settings.credentials() {
        options.set_credentials(user, password);
    }
    if let Some(will) = will {
        options.set_last_will(LastWill::new(
            will.topic.as_str(),
            "0",
            WireQoS::AtLeastOnce,
            true,
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(options, EVENT_CAPACITY);
    eventloop.set_network_options(network_options(settings));
    let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
    let poller = drive(eventloop, events_tx);
    Connection {
        client: Box::new(V4Client(client)),
        events,
        poller,
    }
}

impl EventSource for EventLoop {
    async fn next_event(&mut self) -> Result<Option<RemoteEvent>, String> {
        let event = self.poll().await.map_err(|error| error.to_string())?;
        Ok(match event {
            Event::Incoming(Packet::ConnAck(ack)) => Some(RemoteEvent::Connected {
                session_present: ack.session_present,
            }),
            Event::Incoming(Packet::Publish(publish)) => {
                Some(RemoteEvent::Publish(IncomingPublish {
                    topic: publish.topic,
                    payload: publish.payload,
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    pkid: publish.pkid,
                    headers: Vec::new(),
                }))
            }
            Event::Incoming(Packet::PubAck(ack)) => Some(RemoteEvent::PubAck {
                pkid: ack.pkid,
                refusal: None,
            }),
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(RemoteEvent::Sent(pkid)),
            _ => None,
        })
    }
}

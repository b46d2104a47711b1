//! The remote connection over MQTT 5 (rumqttc's v5 client).

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, Packet, PubAckReason, Publish, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS as WireQoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use switchyard_api::{BoxFuture, BridgeError, QoS};
use tokio::sync::mpsc;

use super::client::{
    drive, network_options, request_failed, Connection, Endpoint, EventSource, IncomingPublish,
    RemoteClient, RemoteEvent, Request, StateTopic, EVENT_CAPACITY,
};
use super::config::RemoteSettings;

/// How long a persistent session outlives the connection on the broker (one week).
const SESSION_EXPIRY_SECONDS: u32 = 7 * 24 * 3600;

struct V5Client(AsyncClient);

fn wire_qos(qos: QoS) -> WireQoS {
    match qos {
        QoS::AtMostOnce => WireQoS::AtMostOnce,
        QoS::AtLeastOnce => WireQoS::AtLeastOnce,
    }
}

impl RemoteClient for V5Client {
    fn subscribe(
        &self,
        filter: String,
        qos: QoS,
        no_local: bool,
    ) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async move {
            let mut filter = Filter::new(filter, wire_qos(qos));
            // Never receive our own publications back (a `both` rule on one broker).
            filter.nolocal = no_local;
            filter.preserve_retain = true;
            self.0
                .subscribe_many([filter])
                .await
                .map_err(request_failed)
        })
    }

    fn try_send(&self, request: &Request) -> bool {
        match request {
            Request::Publish {
                topic,
                payload,
                qos,
                retain,
                headers,
            } => {
                let properties = PublishProperties {
                    user_properties: headers.clone(),
                    ..PublishProperties::default()
                };
                self.0
                    .try_publish_with_properties(
                        topic.as_str(),
                        wire_qos(*qos),
                        *retain,
                        payload.clone(),
                        properties,
                    )
                    .is_ok()
            }
            Request::Ack { qos, pkid } => {
                let level = if *qos >= 2 {
                    WireQoS::ExactlyOnce
                } else {
                    WireQoS::AtLeastOnce
                };
                let mut publish = Publish::new("", level, Bytes::new(), None);
                publish.pkid = *pkid;
                self.0.try_ack(&publish).is_ok()
            }
        }
    }

    fn try_disconnect(&self) {
        let _ = self.0.try_disconnect();
    }
}

/// Opens an MQTT 5 connection.
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
        .set_clean_start(settings.clean_session)
        .set_manual_acks(true)
        .set_outgoing_inflight_upper_limit(settings.max_inflight.max(1));
    if !settings.clean_session {
        options.set_session_expiry_interval(Some(SESSION_EXPIRY_SECONDS));
    }
    options.set_network_options(network_options(settings));
    if let Some((user, password)) = settings.credentials() {
        options.set_credentials(user, password);
    }
    if let Some(will) = will {
        options.set_last_will(LastWill::new(
            will.topic.as_str(),
            "0",
            WireQoS::AtLeastOnce,
            true,
            None,
        ));
    }
    let (client, eventloop) = AsyncClient::new(options, EVENT_CAPACITY);
    let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
    let poller = drive(eventloop, events_tx);
    Connection {
        client: Box::new(V5Client(client)),
        events,
        poller,
    }
}

fn incoming(publish: Publish) -> IncomingPublish {
    IncomingPublish {
        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
        payload: publish.payload,
        qos: publish.qos as u8,
        retain: publish.retain,
        pkid: publish.pkid,
        headers: publish
            .properties
            .map(|properties| properties.user_properties)
            .unwrap_or_default(),
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
                Some(RemoteEvent::Publish(incoming(publish)))
            }
            Event::Incoming(Packet::PubAck(ack)) => Some(RemoteEvent::PubAck {
                pkid: ack.pkid,
                refusal: match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                    reason => Some(format!("{reason:?}")),
                },
            }),
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(RemoteEvent::Sent(pkid)),
            _ => None,
        })
    }
}

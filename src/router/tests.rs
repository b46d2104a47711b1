//! Router behaviour: fan-out, loop and hop guards, duplicates, backpressure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchyard_api::{
    Ack, AckOutcome, BridgeMetrics, Direction, DropReason, Message, Naming, OutboundQueue,
    Overflow, QoS, QueueLimits, Router, Rule, RuleConfig, RuleSet, Topic,
};

use super::{DedupWindow, HubRouter, RouteTable, RouteTarget, Routing};

struct TestBridge {
    rules: Vec<(&'static str, Direction, QoS)>,
    is_server: bool,
    max_messages: usize,
}

fn bridge(rules: Vec<(&'static str, Direction, QoS)>) -> TestBridge {
    TestBridge {
        rules,
        is_server: false,
        max_messages: 100,
    }
}

struct Harness {
    router: HubRouter,
    queues: Vec<Arc<OutboundQueue>>,
    metrics: Vec<Arc<BridgeMetrics>>,
}

fn harness(bridges: Vec<TestBridge>) -> Harness {
    let mut table_input = Vec::new();
    let mut targets = Vec::new();
    let mut queues = Vec::new();
    let mut metrics = Vec::new();
    for (index, spec) in bridges.into_iter().enumerate() {
        let rules = spec
            .rules
            .iter()
            .map(|(pattern, direction, qos)| {
                let config = RuleConfig {
                    pattern: (*pattern).to_owned(),
                    direction: *direction,
                    qos: *qos,
                    local_prefix: String::new(),
                    remote_prefix: String::new(),
                };
                Rule::compile(&config, Naming::MQTT).expect("valid rule")
            })
            .collect();
        table_input.push((Arc::new(RuleSet::new(rules)), spec.is_server));
        let bridge_metrics = Arc::new(BridgeMetrics::new(&format!("b{index}")));
        let limits = QueueLimits {
            max_messages: spec.max_messages,
            max_bytes: usize::MAX,
            overflow: Overflow::DropOldest,
            ttl: None,
        };
        let queue = Arc::new(OutboundQueue::new(limits, Arc::clone(&bridge_metrics)));
        targets.push(Some(RouteTarget {
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&bridge_metrics),
            dedup: Arc::new(Mutex::new(DedupWindow::new(4))),
        }));
        queues.push(queue);
        metrics.push(bridge_metrics);
    }
    Harness {
        router: HubRouter::new(Routing::new(RouteTable::new(table_input), targets, 2), 100),
        queues,
        metrics,
    }
}

fn message(topic: &str, qos: QoS) -> Message {
    let mut message = Message::new(Topic::new(topic).unwrap(), Bytes::from_static(b"m"));
    message.qos = qos;
    message
}

fn depth(harness: &Harness, bridge: usize) -> usize {
    harness.queues[bridge].depth().0
}

fn dropped(harness: &Harness, bridge: usize, reason: DropReason) -> u64 {
    harness.metrics[bridge].snapshot().dropped[reason as usize]
}

const OUT0: (&str, Direction, QoS) = ("#", Direction::Out, QoS::AtMostOnce);
const OUT1: (&str, Direction, QoS) = ("#", Direction::Out, QoS::AtLeastOnce);
const BOTH1: (&str, Direction, QoS) = ("#", Direction::Both, QoS::AtLeastOnce);

#[tokio::test]
async fn fans_out_to_every_matching_bridge_once() {
    let h = harness(vec![
        bridge(vec![("#", Direction::In, QoS::AtLeastOnce)]),
        bridge(vec![OUT1, ("a/+", Direction::Out, QoS::AtMostOnce)]),
        bridge(vec![("b/#", Direction::Out, QoS::AtLeastOnce)]),
        bridge(vec![("a/#", Direction::Both, QoS::AtLeastOnce)]),
    ]);
    h.router
        .route(0, message("a/x", QoS::AtLeastOnce), None)
        .await;
    assert_eq!(
        (depth(&h, 0), depth(&h, 1), depth(&h, 2), depth(&h, 3)),
        (0, 1, 0, 1)
    );
    let mut batch = Vec::new();
    h.queues[1].pop_batch(&mut batch, 10).await;
    assert_eq!(
        batch[0].qos,
        QoS::AtLeastOnce,
        "the rule with the highest QoS wins"
    );
    assert_eq!(batch[0].rule, 0);
}

#[tokio::test]
async fn never_sends_a_message_back_where_it_came_from() {
    let h = harness(vec![bridge(vec![BOTH1]), bridge(vec![BOTH1])]);
    h.router.route(0, message("t", QoS::AtMostOnce), None).await;
    assert_eq!((depth(&h, 0), depth(&h, 1)), (0, 1));
    assert_eq!(dropped(&h, 0, DropReason::Loop), 1);
}

#[tokio::test]
async fn server_bridges_serve_their_other_clients() {
    let mut server = bridge(vec![BOTH1]);
    server.is_server = true;
    let h = harness(vec![server]);
    h.router.route(0, message("t", QoS::AtMostOnce), None).await;
    assert_eq!(depth(&h, 0), 1);
}

#[tokio::test]
async fn drops_messages_over_the_hop_limit() {
    let h = harness(vec![bridge(vec![]), bridge(vec![OUT0])]);
    let mut far = message("t", QoS::AtMostOnce);
    far.hops = 3;
    h.router.route(0, far, None).await;
    let mut near = message("t", QoS::AtMostOnce);
    near.hops = 2;
    h.router.route(0, near, None).await;
    assert_eq!(depth(&h, 1), 1);
    assert_eq!(dropped(&h, 0, DropReason::HopLimit), 1);
}

#[tokio::test]
async fn suppresses_duplicate_ids_within_the_window() {
    let h = harness(vec![bridge(vec![]), bridge(vec![]), bridge(vec![OUT0])]);
    for (source, id) in [
        (0, "a"),
        (0, "a"),
        (1, "a"),
        (0, "b"),
        (0, "c"),
        (0, "d"),
        (0, "e"),
        (0, "a"),
    ] {
        let mut message = message("t", QoS::AtMostOnce);
        message.id = Some(Arc::from(id));
        h.router.route(source, message, None).await;
    }
    // Window of 4 per source: the second "a" from bridge 0 is a duplicate; "a" from
    // bridge 1 is not; the last "a" fell out of the window after b, c, d, e.
    assert_eq!(depth(&h, 2), 7);
    assert_eq!(dropped(&h, 0, DropReason::Duplicate), 1);
}

#[tokio::test]
async fn qos1_waits_for_room_instead_of_being_lost() {
    let mut small = bridge(vec![OUT1]);
    small.max_messages = 1;
    let h = Arc::new(harness(vec![bridge(vec![]), small]));
    h.router
        .route(0, message("t", QoS::AtLeastOnce), None)
        .await;
    let (ack, receiver) = Ack::new();
    let blocked = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            h.router
                .route(0, message("t", QoS::AtLeastOnce), Some(ack))
                .await
        })
    };
    tokio::task::yield_now().await;
    assert!(
        !blocked.is_finished(),
        "the source must wait while the queue is full"
    );
    let mut batch = Vec::new();
    h.queues[1].pop_batch(&mut batch, 10).await;
    tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the source resumes")
        .unwrap();
    batch.clear();
    h.queues[1].pop_batch(&mut batch, 10).await;
    let entry = batch.pop().expect("the second message arrived");
    entry
        .ack
        .expect("a QoS 1 destination holds an ack share")
        .confirm();
    assert_eq!(receiver.await, AckOutcome::Delivered);
    assert_eq!(dropped(&h, 1, DropReason::QueueFull), 0);
}

#[tokio::test]
async fn the_source_learns_when_a_destination_gives_up() {
    let h = harness(vec![bridge(vec![]), bridge(vec![OUT1]), bridge(vec![OUT0])]);
    let (ack, receiver) = Ack::new();
    h.router
        .route(0, message("t", QoS::AtLeastOnce), Some(ack))
        .await;
    let mut batch = Vec::new();
    h.queues[2].pop_batch(&mut batch, 10).await;
    assert!(
        batch[0].ack.is_none(),
        "a QoS 0 destination promises nothing"
    );
    batch.clear();
    h.queues[1].pop_batch(&mut batch, 10).await;
    drop(batch);
    assert_eq!(receiver.await, AckOutcome::NotDelivered);
}

#[tokio::test]
async fn keeps_retained_messages_for_bridges_that_may_send_them() {
    let mut server = bridge(vec![BOTH1]);
    server.is_server = true;
    let h = harness(vec![
        server,
        bridge(vec![("a/#", Direction::Out, QoS::AtMostOnce)]),
    ]);
    let mut retained = message("a/b", QoS::AtMostOnce);
    retained.retain = true;
    h.router.route(0, retained, None).await;
    assert_eq!(
        h.router.retained(0).len(),
        1,
        "a server bridge sees its own"
    );
    assert_eq!(h.router.retained(1).len(), 1);
    let mut clear = Message::new(Topic::new("a/b").unwrap(), Bytes::new());
    clear.retain = true;
    h.router.route(0, clear, None).await;
    assert!(
        h.router.retained(0).is_empty(),
        "an empty payload clears it"
    );
}

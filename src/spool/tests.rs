//! The spooled queue against real redb files in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_api::settings::{ByteSize, QueueConfig};
use switchyard_api::{
    Ack, AckOutcome, BridgeMetrics, Direction, DropReason, Message, Naming, Outbound,
    OutboundQueue, Overflow, QoS, Rule, RuleConfig, RuleSet, Topic,
};

use super::{outbound_queue, SpoolOpenError};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-spool-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, max_messages: usize, memory_messages: usize) -> QueueConfig {
    QueueConfig {
        max_messages,
        max_bytes: ByteSize(1 << 30),
        spool: dir.to_str().unwrap().to_owned(),
        memory_messages,
        ..QueueConfig::default()
    }
}

fn open(config: &QueueConfig) -> (Arc<OutboundQueue>, Arc<BridgeMetrics>) {
    let metrics = Arc::new(BridgeMetrics::new("out"));
    let (queue, info) = outbound_queue("out", config, &rules(), &metrics).unwrap();
    assert!(info.is_some());
    (Arc::new(queue), metrics)
}

fn message(payload: String) -> Message {
    let mut message = Message::new(Topic::new("a/b").unwrap(), Bytes::from(payload));
    message.headers = vec![("h".into(), "v".into())];
    message.id = Some(Arc::from("id"));
    message.hops = 2;
    message
}

/// Out rules over `patterns` (hub topics), in order.
fn rules_over(patterns: &[&str]) -> RuleSet {
    let compile = |pattern: &&str| {
        let config = RuleConfig {
            pattern: (*pattern).to_owned(),
            direction: Direction::Out,
            qos: QoS::AtLeastOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        };
        Rule::compile(&config, Naming::MQTT).unwrap()
    };
    RuleSet::new(patterns.iter().map(compile).collect())
}

/// The rules the entries were queued under: rule 3 passes their topic `a/b`.
fn rules() -> RuleSet {
    rules_over(&["x/#", "y/#", "z/#", "a/#"])
}

fn entry(index: usize, qos: QoS, ack: Option<Ack>) -> Outbound {
    Outbound {
        message: Arc::new(message(format!("m{index}"))),
        rule: 3,
        qos,
        ack,
        received_at: Instant::now(),
    }
}

async fn pop_all(queue: &OutboundQueue, expected: usize) -> Vec<Outbound> {
    let mut all = Vec::new();
    while all.len() < expected {
        let mut batch = Vec::new();
        let popped = tokio::time::timeout(Duration::from_secs(5), queue.pop_batch(&mut batch, 7))
            .await
            .expect("entries become available");
        assert!(popped, "queue closed with {} of {expected}", all.len());
        all.extend(batch);
    }
    all
}

fn payloads(entries: &[Outbound]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.message.payload.to_vec()).unwrap())
        .collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|index| format!("m{index}")).collect()
}

async fn spool_records(queue: &OutboundQueue, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.spool_depth().unwrap().0 != count {
        assert!(
            Instant::now() < deadline,
            "spool holds {:?}, expected {count} records",
            queue.spool_depth()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Stops `queue` as the hub does: closed, then what it holds written to its spool.
async fn stop(queue: Arc<OutboundQueue>) {
    queue.close();
    tokio::task::spawn_blocking(move || queue.persist())
        .await
        .unwrap();
}

/// Queues `count` QoS 1 entries in the spooled queue of `config`, waits until they are on
/// disk, and stops the queue.
async fn spool_and_stop(config: &QueueConfig, count: usize) {
    let (queue, _) = open(config);
    for index in 0..count {
        queue.push(entry(index, QoS::AtLeastOnce, None)).await;
    }
    spool_records(&queue, count as u64).await;
    stop(queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_sources_are_acknowledged_once_on_disk_and_records_go_when_delivered() {
    let dir = TempDir::new();
    let (queue, _) = open(&config(&dir.0, 100, 100));
    let mut receivers = Vec::new();
    for index in 0..20 {
        let (ack, receiver) = Ack::new();
        queue.push(entry(index, QoS::AtLeastOnce, Some(ack))).await;
        receivers.push(receiver);
    }
    for receiver in receivers {
        let outcome = tokio::time::timeout(Duration::from_secs(5), receiver).await;
        assert_eq!(
            outcome.expect("acknowledged without delivery"),
            AckOutcome::Delivered
        );
    }
    spool_records(&queue, 20).await;
    let entries = pop_all(&queue, 20).await;
    assert_eq!(payloads(&entries), expected(0..20));
    for entry in entries {
        entry.ack.expect("a receipt").confirm();
    }
    spool_records(&queue, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_spills_to_disk_and_is_read_back_in_order() {
    let dir = TempDir::new();
    let (queue, _) = open(&config(&dir.0, 1000, 4));
    for index in 0..50 {
        let qos = if index % 3 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        queue.push(entry(index, qos, None)).await;
    }
    assert_eq!(queue.depth().0, 50);
    let entries = pop_all(&queue, 50).await;
    assert_eq!(payloads(&entries), expected(0..50));
    let first_spilled = &entries[10];
    assert_eq!(first_spilled.rule, 3);
    assert_eq!(*first_spilled.message, {
        let mut m = message("m10".into());
        m.timestamp_ms = first_spilled.message.timestamp_ms;
        m
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_replays_in_order_with_every_field_and_ttl_still_applies() {
    // The entries were queued long before the restart; the ttl after it lies between their
    // age and the few seconds (fsyncs on a busy disk included) a fresh entry takes to pass.
    const AGE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(15);
    let dir = TempDir::new();
    let config = config(&dir.0, 1000, 3);
    {
        let (queue, _) = open(&config);
        for index in 0..10 {
            let qos = if index % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let mut old = entry(index, qos, None);
            old.received_at = Instant::now()
                .checked_sub(AGE)
                .expect("the monotonic clock is older than AGE");
            queue.push(old).await;
        }
        // One delivered before the stop: not replayed.
        let mut batch = Vec::new();
        queue.pop_batch(&mut batch, 1).await;
        batch.pop().unwrap().ack.unwrap().confirm();
        stop(queue).await;
    }
    let (queue, _) = open(&config);
    assert_eq!(queue.depth().0, 9);
    let entries = pop_all(&queue, 9).await;
    assert_eq!(payloads(&entries), expected(1..10));
    let qos: Vec<QoS> = entries.iter().map(|e| e.qos).collect();
    assert_eq!(qos[0], QoS::AtMostOnce);
    assert_eq!(qos[1], QoS::AtLeastOnce);
    assert!(entries.iter().all(|e| e.message.hops == 2 && e.rule == 3));
    drop(entries);
    drop(queue);

    // Unconfirmed entries stay; with a ttl shorter than their age they expire on replay.
    let mut short = config.clone();
    short.ttl = Some(TTL);
    let (queue, metrics) = open(&short);
    queue.push(entry(99, QoS::AtMostOnce, None)).await;
    let entries = pop_all(&queue, 1).await;
    assert_eq!(payloads(&entries), ["m99"]);
    assert_eq!(metrics.snapshot().dropped[DropReason::Expired as usize], 9);
    // It waited on disk behind the replayed entries; delivering it deletes the last record.
    spool_records(&queue, 1).await;
    for entry in entries {
        entry.ack.expect("a receipt").confirm();
    }
    spool_records(&queue, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_policies_apply_when_the_spool_is_full() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let dir = TempDir::new();
        let mut config = config(&dir.0, 5, 2);
        config.overflow = overflow;
        let (queue, metrics) = open(&config);
        for index in 0..8 {
            queue.push(entry(index, QoS::AtMostOnce, None)).await;
        }
        let entries = pop_all(&queue, 5).await;
        let kept = match overflow {
            Overflow::DropNewest => expected(0..5),
            _ => expected(3..8),
        };
        assert_eq!(payloads(&entries), kept, "{overflow:?}");
        assert_eq!(
            metrics.snapshot().dropped[DropReason::QueueFull as usize],
            3
        );
    }
    // QoS 1 waits for room instead.
    let dir = TempDir::new();
    let (queue, _) = open(&config(&dir.0, 2, 1));
    for index in 0..2 {
        queue.push(entry(index, QoS::AtLeastOnce, None)).await;
    }
    let waiting = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { queue.push(entry(2, QoS::AtLeastOnce, None)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "QoS 1 waits while the spool is full"
    );
    let entries = pop_all(&queue, 3).await;
    assert_eq!(payloads(&entries), expected(0..3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_in_use_is_refused_and_a_damaged_one_is_moved_aside() {
    let dir = TempDir::new();
    let config = config(&dir.0, 1000, 1000);
    let (queue, _) = open(&config);
    for index in 0..30 {
        queue.push(entry(index, QoS::AtLeastOnce, None)).await;
    }
    spool_records(&queue, 30).await;
    let metrics = Arc::new(BridgeMetrics::new("out"));
    let error = outbound_queue("out", &config, &rules(), &metrics).expect_err("locked");
    assert!(matches!(error, SpoolOpenError::Locked { .. }), "{error}");
    stop(queue).await;

    let file = dir.0.join("out.spool");
    let length = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(length / 3)
        .unwrap();
    let metrics = Arc::new(BridgeMetrics::new("out"));
    let (queue, info) = outbound_queue("out", &config, &rules(), &metrics).expect("starts anyway");
    let damage = info.unwrap().damage.expect("damage reported");
    assert!(damage.contains("moved to"), "{damage}");
    assert!(metrics
        .snapshot()
        .status
        .last_error
        .unwrap()
        .contains("spool"));
    let aside = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".spool.corrupt-"))
        .count();
    assert_eq!(aside, 1);
    // The fresh spool works.
    queue.push(entry(100, QoS::AtLeastOnce, None)).await;
    let depth = queue.depth().0;
    let entries = pop_all(&queue, depth).await;
    assert_eq!(payloads(&entries).last().unwrap(), "m100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_bytes_lose_only_the_damaged_records() {
    let dir = TempDir::new();
    let config = config(&dir.0, 1000, 1000);
    spool_and_stop(&config, 30).await;
    let file = dir.0.join("out.spool");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(3)
        .rposition(|w| w == b"m17")
        .expect("the payload is in the file");
    bytes[at..at + 3].copy_from_slice(b"XYZ");
    std::fs::write(&file, &bytes).unwrap();
    let metrics = Arc::new(BridgeMetrics::new("out"));
    let (queue, info) = outbound_queue("out", &config, &rules(), &metrics).expect("starts anyway");
    let damage = info.unwrap().damage.expect("damage reported");
    assert!(damage.contains("moved to"), "{damage}");
    let depth = queue.depth().0;
    let entries = pop_all(&queue, depth).await;
    let mut kept = expected(0..30);
    kept.remove(17);
    assert_eq!(payloads(&entries), kept, "{damage}");
    let error = metrics.snapshot().status.last_error.unwrap_or_default();
    assert!(
        error.starts_with("spool: ") && error.contains("moved to"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_topics_bind_spooled_messages_to_a_rule_that_passes_them_or_drop_them() {
    let dir = TempDir::new();
    let config = config(&dir.0, 1000, 1000);
    // Rule 3 is gone; "a/b" now passes rule 1 only.
    spool_and_stop(&config, 5).await;
    let metrics = Arc::new(BridgeMetrics::new("out"));
    let moved = rules_over(&["x/#", "a/+"]);
    let (queue, _) = outbound_queue("out", &config, &moved, &metrics).unwrap();
    let entries = pop_all(&queue, 5).await;
    assert_eq!(payloads(&entries), expected(0..5));
    assert!(
        entries.iter().all(|e| e.rule == 1),
        "bound to the rule that passes a/b"
    );
    drop(entries);
    drop(queue);
    // Bound again in the file itself: the same rules find nothing to change.
    let (queue, _) = outbound_queue("out", &config, &moved, &metrics).unwrap();
    assert!(pop_all(&queue, 5).await.iter().all(|e| e.rule == 1));
    drop(queue);

    // No out rule passes "a/b" any more: dropped as unroutable, and deleted.
    let elsewhere = rules_over(&["x/#"]);
    let (queue, _) = outbound_queue("out", &config, &elsewhere, &metrics).unwrap();
    assert_eq!(queue.depth().0, 0);
    assert_eq!(queue.spool_depth(), Some((0, 0)));
    assert_eq!(
        metrics.snapshot().dropped[DropReason::Unroutable as usize],
        5
    );
}

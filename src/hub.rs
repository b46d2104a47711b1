//! The running bridges of a hub: assembling them from validated plans, replacing the set on
//! reload, and stopping them.
//!
//! Every bridge has an id for the life of the process (ids are never reused) and its own
//! cancellation token and task tracker, so one bridge can stop while the others run. On
//! reload a bridge whose table (and the hub name) did not change keeps its tasks, connections
//! and queue; an added one starts; a removed one drains its queue (within
//! `hub.shutdown_timeout`) and stops; a changed one stops and starts again with the new
//! settings, keeping its id, counters and (when `type`, `topics`, `escape` and `queue` are
//! the same) its queue. A queue with a disk spool is never replaced by a reload (its
//! records are bound to those keys): such a reload is refused. What a stopping bridge's
//! queue still holds is written to its spool, if it has one.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_api::{
    BridgeContext, BridgeId, BridgeMetrics, LatencyHistogram, OutboundQueue, RuleSet,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BridgePlan, ConfigError, HubSettings, Settings};
use crate::reload::ReloadRequests;
use crate::router::{DedupWindow, HubRouter, RouteTable, RouteTarget, Routing};
use crate::spool::{self, SpoolInfo};
use crate::state::{BridgeRuntime, HubState};
use crate::{state_topics, supervisor};

/// How often a stopping bridge's queue is checked for having drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How long bridges get to finish after being told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Keys of a bridge table that decide what its queued entries mean: with the same values,
/// a restarted bridge takes over its predecessor's queue.
const QUEUE_KEYS: &[&str] = &["type", "topics", "escape", "queue"];

/// One bridge in force.
struct Running {
    id: BridgeId,
    /// Its table as configured, to tell whether a reload changed it.
    table: serde_json::Value,
    rules: Arc<RuleSet>,
    is_server: bool,
    runtime: BridgeRuntime,
    dedup: Arc<Mutex<DedupWindow>>,
    /// Cancelled to stop this bridge alone (a child of the hub's token).
    token: CancellationToken,
    /// Its supervisor and state-topic tasks.
    tracker: TaskTracker,
}

impl Running {
    fn target(&self) -> RouteTarget {
        RouteTarget {
            queue: Arc::clone(&self.runtime.queue),
            metrics: Arc::clone(&self.runtime.metrics),
            dedup: Arc::clone(&self.dedup),
        }
    }
}

/// A bridge's counters and outbound queue (with its spool, if any).
struct QueueParts {
    metrics: Arc<BridgeMetrics>,
    queue: Arc<OutboundQueue>,
    spool: Option<SpoolInfo>,
}

impl QueueParts {
    /// New counters and a new queue for `plan`, opening its spool; a spool that cannot be
    /// used is an error of its `queue.spool` key.
    fn open(plan: &BridgePlan, metrics: Arc<BridgeMetrics>) -> Result<Self, ConfigError> {
        let name = &plan.spec.name;
        let (queue, spool) =
            spool::outbound_queue(name, &plan.spec.common.queue, &plan.spec.rules, &metrics)
                .map_err(|error| {
                    ConfigError::at(format!("bridges.{name}.queue.spool"), error.to_string())
                })?;
        Ok(Self {
            metrics,
            queue: Arc::new(queue),
            spool,
        })
    }

    /// What `plan` gets when it replaces `old`: the old counters, and the old queue when
    /// `keeps_queue`, else a new one (refused when the old one has a spool).
    fn replacing(plan: &BridgePlan, old: &Running, keeps_queue: bool) -> Result<Self, String> {
        let metrics = Arc::clone(&old.runtime.metrics);
        if keeps_queue {
            return Ok(Self {
                metrics,
                queue: Arc::clone(&old.runtime.queue),
                spool: old.runtime.spool.clone(),
            });
        }
        if old.runtime.spool.is_some() {
            return Err(format!(
                "bridges.{}: its spooled messages are bound to its type, topics, escape and \
                 queue, which this reload changes; restart the hub for that change (or give \
                 the bridge a new name)",
                plan.spec.name
            ));
        }
        Self::open(plan, metrics).map_err(|error| error.to_string())
    }
}

/// What a reload did, for the log and the `POST /api/reload` reply.
#[derive(Debug, Default)]
struct Changes {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    unchanged: Vec<String>,
    failed: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists = [
            ("added", &self.added),
            ("changed (restarted)", &self.changed),
            ("removed", &self.removed),
            ("unchanged", &self.unchanged),
            ("failed to start", &self.failed),
        ];
        let mut first = true;
        for (label, names) in lists {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{label}: {}", names.join(", "))?;
        }
        if first {
            f.write_str("no bridges")?;
        }
        Ok(())
    }
}

/// The hub: its router, its observable state and its running bridges.
pub struct Hub {
    settings: HubSettings,
    hub_name: Arc<str>,
    router: Arc<HubRouter>,
    state: Arc<HubState>,
    latency: Arc<LatencyHistogram>,
    running: BTreeMap<String, Running>,
    next_id: BridgeId,
    stop: CancellationToken,
}

impl Hub {
    /// Starts every bridge of `plans` (already opened) under supervision, opening their
    /// spools (an unusable spool is a configuration error).
    pub fn start(
        settings: &Settings,
        plans: Vec<BridgePlan>,
        stop: &CancellationToken,
        reload: ReloadRequests,
    ) -> Result<Self, ConfigError> {
        let latency = Arc::new(LatencyHistogram::default());
        let empty = Routing::new(RouteTable::new([]), Vec::new(), settings.hub.max_hops);
        let mut hub = Self {
            settings: settings.hub.clone(),
            hub_name: Arc::from(settings.hub.name.as_str()),
            router: Arc::new(HubRouter::new(empty, settings.hub.retained_max)),
            state: Arc::new(HubState::new(Vec::new(), Arc::clone(&latency), reload)),
            latency,
            running: BTreeMap::new(),
            next_id: 0,
            stop: stop.clone(),
        };
        for plan in &plans {
            let parts = QueueParts::open(plan, Arc::new(BridgeMetrics::new(&plan.spec.name)))?;
            let running = hub.prepare(settings, plan, None, parts);
            hub.running.insert(plan.spec.name.clone(), running);
        }
        hub.publish(&[]);
        for plan in plans {
            hub.spawn(plan);
        }
        Ok(hub)
    }

    /// What the admin endpoint shows.
    pub fn state(&self) -> &Arc<HubState> {
        &self.state
    }

    /// Puts `settings` in force: `plans` are its bridges, validated but not opened. Returns
    /// what changed, or why nothing did (an added bridge could not open).
    pub async fn reload(
        &mut self,
        settings: &Settings,
        plans: Vec<BridgePlan>,
    ) -> Result<String, String> {
        let renamed = *self.hub_name != *settings.hub.name;
        let mut changes = Changes::default();
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for plan in plans {
            let name = plan.spec.name.clone();
            match self.running.get(&name) {
                Some(running) if !renamed && running.table == settings.bridges[&name] => {
                    changes.unchanged.push(name);
                }
                Some(_) => changed.push(plan),
                None => added.push(plan),
            }
        }
        // Everything that can refuse the reload happens before anything changes.
        let mut parts = BTreeMap::new();
        for plan in &changed {
            let name = &plan.spec.name;
            let old = &self.running[name];
            let keeps_queue = QUEUE_KEYS
                .iter()
                .all(|key| old.table.get(key) == settings.bridges[name].get(key));
            let prepared = QueueParts::replacing(plan, old, keeps_queue)?;
            parts.insert(name.clone(), (prepared, keeps_queue));
        }
        for plan in &mut added {
            let name = plan.spec.name.clone();
            plan.bridge
                .open()
                .await
                .map_err(|error| format!("bridges.{name}: {error}"))?;
        }
        for plan in &added {
            let name = &plan.spec.name;
            let prepared = QueueParts::open(plan, Arc::new(BridgeMetrics::new(name)))
                .map_err(|error| error.to_string())?;
            parts.insert(name.clone(), (prepared, false));
        }
        let dedup_changed = self.settings.dedup != settings.hub.dedup;
        self.settings = settings.hub.clone();
        self.hub_name = Arc::from(settings.hub.name.as_str());
        let kept: Vec<&String> = changes
            .unchanged
            .iter()
            .chain(changed.iter().map(|plan| &plan.spec.name))
            .collect();
        let removed_names: Vec<String> = self
            .running
            .keys()
            .filter(|name| !kept.contains(name))
            .cloned()
            .collect();
        let mut retiring = Vec::new();
        for name in removed_names {
            if let Some(old) = self.running.remove(&name) {
                retiring.push((old, false));
                changes.removed.push(name);
            }
        }
        let mut restarting = Vec::new();
        for plan in changed {
            let name = plan.spec.name.clone();
            let (Some(old), Some((prepared, keeps_queue))) =
                (self.running.remove(&name), parts.remove(&name))
            else {
                continue;
            };
            let running = self.prepare(settings, &plan, Some(&old), prepared);
            self.running.insert(name.clone(), running);
            retiring.push((old, keeps_queue));
            restarting.push(plan);
            changes.changed.push(name);
        }
        if dedup_changed {
            for running in self.running.values_mut() {
                running.dedup = Arc::new(Mutex::new(DedupWindow::new(settings.hub.dedup)));
            }
        }
        let mut starting = Vec::new();
        for plan in added {
            let Some((prepared, _)) = parts.remove(&plan.spec.name) else {
                continue;
            };
            let running = self.prepare(settings, &plan, None, prepared);
            changes.added.push(plan.spec.name.clone());
            self.running.insert(plan.spec.name.clone(), running);
            starting.push(plan);
        }
        // Stopping bridges may still hand in messages: they stay sources until they stop.
        let sources: Vec<&Running> = retiring.iter().map(|(old, _)| old).collect();
        self.publish(&sources);
        for plan in starting {
            self.spawn(plan);
        }
        retire(&retiring, self.settings.shutdown_timeout.0).await;
        drop(retiring);
        for mut plan in restarting {
            let name = plan.spec.name.clone();
            match plan.bridge.open().await {
                Ok(()) => self.spawn(plan),
                Err(error) => {
                    let reason = format!("{name} ({error})");
                    if let Some(running) = self.running.get(&name) {
                        running.runtime.metrics.record_error(&error.to_string());
                    }
                    tracing::error!(bridge = %name, "The changed bridge cannot start: {error}.");
                    changes.failed.push(reason);
                }
            }
        }
        self.publish(&[]);
        Ok(changes.to_string())
    }

    /// Drains every queue (within `hub.shutdown_timeout`) and stops every bridge.
    pub async fn stop(self) {
        let timeout = self.settings.shutdown_timeout.0;
        tracing::info!("Draining queues for up to {timeout:?}.");
        let retiring: Vec<(Running, bool)> = self
            .running
            .into_values()
            .map(|running| (running, false))
            .collect();
        retire(&retiring, timeout).await;
    }

    /// The state of a bridge about to start, with its counters and queue: a new id, or
    /// (when it replaces `old`) the old id and duplicate window.
    fn prepare(
        &mut self,
        settings: &Settings,
        plan: &BridgePlan,
        old: Option<&Running>,
        parts: QueueParts,
    ) -> Running {
        let name = &plan.spec.name;
        let (id, dedup) = match old {
            Some(old) => (old.id, Arc::clone(&old.dedup)),
            None => {
                self.next_id += 1;
                (
                    self.next_id - 1,
                    Arc::new(Mutex::new(DedupWindow::new(settings.hub.dedup))),
                )
            }
        };
        let QueueParts {
            metrics,
            queue,
            spool,
        } = parts;
        Running {
            id,
            table: settings.bridges[name].clone(),
            rules: Arc::clone(&plan.spec.rules),
            is_server: plan.kind.is_server(),
            runtime: BridgeRuntime {
                name: Arc::from(name.as_str()),
                type_name: plan.kind.type_name(),
                required: plan.spec.common.required,
                metrics,
                queue,
                spool,
            },
            dedup,
            token: self.stop.child_token(),
            tracker: TaskTracker::new(),
        }
    }

    /// Puts the running bridges (and `sources`, stopping bridges that may still hand in
    /// messages but take none) in force in the router and the admin endpoint.
    fn publish(&self, sources: &[&Running]) {
        let mut rules = vec![(Arc::new(RuleSet::new(Vec::new())), false); self.next_id];
        let mut targets: Vec<Option<RouteTarget>> = (0..self.next_id).map(|_| None).collect();
        for old in sources {
            targets[old.id] = Some(old.target());
        }
        for running in self.running.values() {
            rules[running.id] = (Arc::clone(&running.rules), running.is_server);
            targets[running.id] = Some(running.target());
        }
        let routing = Routing::new(RouteTable::new(rules), targets, self.settings.max_hops);
        self.router.replace(routing, self.settings.retained_max);
        self.state.set_bridges(
            self.running
                .values()
                .map(|running| running.runtime.clone())
                .collect(),
        );
    }

    /// Starts `plan`'s bridge (opened) with the state prepared for it.
    fn spawn(&self, plan: BridgePlan) {
        let Some(running) = self.running.get(&plan.spec.name) else {
            return;
        };
        let ctx = BridgeContext {
            id: running.id,
            name: Arc::clone(&running.runtime.name),
            hub_name: Arc::clone(&self.hub_name),
            rules: Arc::clone(&running.rules),
            outbound: Arc::clone(&running.runtime.queue),
            metrics: Arc::clone(&running.runtime.metrics),
            latency: Arc::clone(&self.latency),
            router: Arc::clone(&self.router) as Arc<dyn switchyard_api::Router>,
            shutdown: running.token.clone(),
        };
        state_topics::publish_states(&running.tracker, std::slice::from_ref(&ctx));
        supervisor::supervise(
            &running.tracker,
            Arc::from(plan.bridge),
            ctx,
            plan.spec.common.reconnect,
        );
    }
}

/// Stops bridges: those whose queue goes away (`false`) first deliver what it holds, for up
/// to `timeout`; then every one is cancelled and given [`STOP_GRACE`] to finish.
async fn retire(bridges: &[(Running, bool)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let draining = || {
        bridges
            .iter()
            .filter(|(running, keeps_queue)| !keeps_queue && running.runtime.queue.depth().0 > 0)
    };
    while draining().next().is_some() && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let (mut lost, mut spooled) = (String::new(), String::new());
    for (running, _) in draining() {
        let report = match running.runtime.spool {
            Some(_) => &mut spooled,
            None => &mut lost,
        };
        let _ = write!(
            report,
            " {}: {};",
            running.runtime.name,
            running.runtime.queue.depth().0
        );
    }
    if !lost.is_empty() {
        tracing::warn!("Stopping with messages still queued, not delivered:{lost}");
    }
    if !spooled.is_empty() {
        tracing::info!(
            "Stopping with messages queued for spooled bridges; they stay in the spool:{spooled}"
        );
    }
    for (running, keeps_queue) in bridges {
        running.token.cancel();
        if !keeps_queue {
            running.runtime.queue.close();
        }
        running.tracker.close();
    }
    let finished = async {
        for (running, _) in bridges {
            running.tracker.wait().await;
        }
    };
    if tokio::time::timeout(STOP_GRACE, finished).await.is_err() {
        tracing::warn!("Some bridges did not stop within {STOP_GRACE:?}; going on anyway.");
    }
    persist_spools(bridges).await;
}

/// Writes what the closed, spooled queues of `bridges` still hold in memory to their
/// spools and waits until every spool is durable (blocking work, so on a blocking thread).
async fn persist_spools(bridges: &[(Running, bool)]) {
    let queues: Vec<_> = bridges
        .iter()
        .filter(|(running, keeps_queue)| !keeps_queue && running.runtime.spool.is_some())
        .map(|(running, _)| Arc::clone(&running.runtime.queue))
        .collect();
    if queues.is_empty() {
        return;
    }
    let persisting = tokio::task::spawn_blocking(move || queues.iter().for_each(|q| q.persist()));
    if persisting.await.is_err() {
        tracing::error!("Writing the spools failed; the last messages may not be on disk.");
    }
}

//! Disk spools of destination bridges (`queue.spool = "DIR"`): opening each bridge's file,
//! replaying what it holds, and coping with a damaged one.
//!
//! Each bridge has its own file, `DIR/<bridge>.spool` (see [`store`]). A file that cannot
//! be opened or read cleanly is reported (log, the bridge's last error on
//! `/api/bridges`, `switchyard_spool_damaged`), moved aside as
//! `<bridge>.spool.corrupt-<unix seconds>`, and what could be read from it is written to a
//! fresh file and replayed: a damaged spool never stops the hub from starting. Records
//! whose checksum fails are skipped the same way. A file locked by another process is a
//! configuration error, since two hubs must never share a spool.
//!
//! A record names the out rule that passed its message. If the bridge's `topics` changed
//! while messages waited on disk, each record is bound again on opening: to the same rule
//! if it still passes the message's topic, else to the first out rule that does. A message
//! no out rule passes any more is dropped as `unroutable` and logged.

mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_api::record::{RecordMeta, SpooledEntry};
use switchyard_api::settings::QueueConfig;
use switchyard_api::{
    record, BridgeMetrics, DropReason, OutboundQueue, RecoveredEntry, RuleSet, SpoolSetup,
    SpoolStore, SpoolWindow,
};
use thiserror::Error;

use store::{OpenFailure, RedbStore};

/// Why a bridge's spool cannot be used at all (a configuration error of
/// `bridges.<bridge>.queue.spool`).
#[derive(Debug, Error)]
pub enum SpoolOpenError {
    /// The directory could not be created.
    #[error("cannot create the directory {dir}: {source}")]
    Directory {
        /// The bridge.
        bridge: String,
        /// The directory.
        dir: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Another process has the file open.
    #[error(
        "{path} is in use by another switchyard process; give each hub its own spool \
         directory"
    )]
    Locked {
        /// The bridge.
        bridge: String,
        /// The file.
        path: PathBuf,
    },
    /// Not even a fresh file could be made.
    #[error("cannot create {path}: {reason}")]
    Unusable {
        /// The bridge.
        bridge: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A bridge's spool, opened and read.
pub struct OpenedSpool {
    /// What the bridge's queue needs.
    pub setup: SpoolSetup,
    /// The file.
    pub path: PathBuf,
    /// What was wrong with the file as found (already logged), if anything.
    pub damage: Option<String>,
    /// Records dropped because no out rule passes their message any more.
    pub unroutable: u64,
}

/// What the admin endpoint shows about a bridge's spool.
#[derive(Debug, Clone)]
pub struct SpoolInfo {
    /// The file.
    pub path: PathBuf,
    /// What was wrong with it at startup, if anything.
    pub damage: Option<String>,
}

/// The queue of bridge `bridge` (whose rules are `rules`) with `queue` settings `config`:
/// spooled in `config.spool` when set.
pub fn outbound_queue(
    bridge: &str,
    config: &QueueConfig,
    rules: &RuleSet,
    metrics: &Arc<BridgeMetrics>,
) -> Result<(OutboundQueue, Option<SpoolInfo>), SpoolOpenError> {
    let limits = config.limits();
    if config.spool.is_empty() {
        return Ok((OutboundQueue::new(limits, Arc::clone(metrics)), None));
    }
    let opened = open(
        Path::new(&config.spool),
        bridge,
        config.spool_window(),
        rules,
    )?;
    if let Some(damage) = &opened.damage {
        metrics.record_error(&format!("spool: {damage}"));
    }
    for _ in 0..opened.unroutable {
        metrics.dropped(
            DropReason::Unroutable,
            "spooled before the bridge's topics changed, and no out rule passes it now",
        );
    }
    let queue =
        OutboundQueue::with_spool(limits, Arc::clone(metrics), opened.setup).map_err(|error| {
            SpoolOpenError::Unusable {
                bridge: bridge.to_owned(),
                path: opened.path.clone(),
                reason: format!("cannot start its writer thread: {error}"),
            }
        })?;
    let info = SpoolInfo {
        path: opened.path,
        damage: opened.damage,
    };
    Ok((queue, Some(info)))
}

/// Opens bridge `bridge`'s spool in `dir` and reads the records to replay, bound to the
/// bridge's current `rules`.
pub fn open(
    dir: &Path,
    bridge: &str,
    window: SpoolWindow,
    rules: &RuleSet,
) -> Result<OpenedSpool, SpoolOpenError> {
    std::fs::create_dir_all(dir).map_err(|source| SpoolOpenError::Directory {
        bridge: bridge.to_owned(),
        dir: dir.to_owned(),
        source,
    })?;
    let path = dir.join(format!("{bridge}.spool"));
    let unusable = |reason: String| SpoolOpenError::Unusable {
        bridge: bridge.to_owned(),
        path: path.clone(),
        reason,
    };
    let mut records = Vec::new();
    let mut damage = None;
    let store = match RedbStore::open(&path) {
        Err(OpenFailure::Locked) => {
            return Err(SpoolOpenError::Locked {
                bridge: bridge.to_owned(),
                path,
            })
        }
        Ok((store, repaired)) => match store.read_all(&mut records) {
            Ok(()) => {
                if repaired {
                    damage = Some(
                        "redb found damage and repaired the file; records of the damaged \
                         commits are lost"
                            .to_owned(),
                    );
                }
                Some(store)
            }
            Err(error) => {
                damage = Some(format!("reading stopped at a damaged part: {error}"));
                None
            }
        },
        Err(OpenFailure::Damaged(reason)) => {
            damage = Some(reason);
            None
        }
    };
    let (store, rebuilt) = match store {
        Some(store) => (store, false),
        None => {
            let aside = move_aside(&path).map_err(|error| unusable(error.to_string()))?;
            let how = salvage(&aside, &mut records);
            if let Some(damage) = &mut damage {
                damage.push_str(&format!("; moved to {}; {how}", aside.display()));
            }
            let (store, _) =
                RedbStore::open(&path).map_err(|failure| unusable(format!("{failure:?}")))?;
            (store, true)
        }
    };
    let checked = check_records(&records, rules);
    // A fresh file gets the records to replay; a kept one loses the others, and those bound
    // to another rule are written again.
    let (keep, removed): (Vec<(u64, &[u8])>, Vec<u64>) = if rebuilt {
        let keep = records
            .iter()
            .filter(|(seq, _)| checked.replays(*seq))
            .map(|(seq, record)| (*seq, checked.rebound_record(*seq).unwrap_or(record)))
            .collect();
        (keep, Vec::new())
    } else {
        let rewritten = checked
            .rebound
            .iter()
            .map(|(seq, record)| (*seq, record.as_slice()))
            .collect();
        let removed = [checked.unreadable.as_slice(), &checked.unroutable].concat();
        (rewritten, removed)
    };
    store
        .commit(&keep, &removed)
        .map_err(|error| unusable(error.0))?;
    let unreadable = &checked.unreadable;
    if !unreadable.is_empty() {
        let note = format!(
            "{} record(s) failed their checksum and were skipped",
            unreadable.len()
        );
        damage = Some(match damage {
            Some(damage) => format!("{damage}; {note}"),
            None => note,
        });
    }
    report(bridge, &path, &checked, damage.as_deref());
    Ok(OpenedSpool {
        setup: SpoolSetup {
            store: Arc::new(store) as Arc<dyn SpoolStore>,
            window,
            recovered: checked.recovered,
            stored_bytes: checked.stored_bytes,
        },
        path,
        damage,
        unroutable: checked.unroutable.len() as u64,
    })
}

/// Adds what can be read of the damaged file `aside` to `records` (kept in sequence
/// order, without repeats): through redb if it can still open the file read-only, else by
/// looking for records (version, length, checksum) among its raw bytes. Says which.
fn salvage(aside: &Path, records: &mut Vec<(u64, Vec<u8>)>) -> &'static str {
    let mut found = Vec::new();
    let how = match store::salvage(aside, &mut found) {
        Ok(()) => "its records were read back with redb",
        Err(_) => {
            found.clear();
            if let Ok(data) = std::fs::read(aside) {
                for (offset, length) in record::find(&data) {
                    let bytes = &data[offset..offset + length];
                    if let Ok(entry) = record::decode(bytes) {
                        found.push((entry.seq, bytes.to_vec()));
                    }
                }
            }
            "its records were found by checksum among its bytes (records already delivered \
             may come back as duplicates)"
        }
    };
    let mut merged: BTreeMap<u64, Vec<u8>> = std::mem::take(records).into_iter().collect();
    for (seq, bytes) in found {
        merged.entry(seq).or_insert(bytes);
    }
    *records = merged.into_iter().collect();
    how
}

/// What the records found in a spool come to, by sequence number (each list in order).
#[derive(Default)]
struct CheckedRecords {
    /// The entries to replay.
    recovered: Vec<RecoveredEntry>,
    /// Their bytes on disk (as they will be stored).
    stored_bytes: u64,
    /// Records that fail their checksum or cannot be decoded.
    unreadable: Vec<u64>,
    /// Records whose message no out rule passes any more.
    unroutable: Vec<u64>,
    /// Records to replay bound to another rule than they name, encoded again.
    rebound: Vec<(u64, Vec<u8>)>,
}

impl CheckedRecords {
    /// Whether record `seq` is replayed.
    fn replays(&self, seq: u64) -> bool {
        self.recovered
            .binary_search_by_key(&seq, |entry| entry.seq)
            .is_ok()
    }

    /// The new encoding of record `seq`, if it was bound to another rule.
    fn rebound_record(&self, seq: u64) -> Option<&[u8]> {
        self.rebound
            .binary_search_by_key(&seq, |(rebound, _)| *rebound)
            .ok()
            .map(|index| self.rebound[index].1.as_slice())
    }
}

/// Decodes every record and binds it to one of the bridge's current `rules`.
fn check_records(records: &[(u64, Vec<u8>)], rules: &RuleSet) -> CheckedRecords {
    let mut checked = CheckedRecords {
        recovered: Vec::with_capacity(records.len()),
        ..CheckedRecords::default()
    };
    for (seq, data) in records {
        let Ok(entry) = record::decode(data) else {
            checked.unreadable.push(*seq);
            continue;
        };
        let Some(rule) = destination_rule(rules, &entry) else {
            checked.unroutable.push(*seq);
            continue;
        };
        let mut size = data.len();
        if rule != entry.rule {
            let mut again = Vec::with_capacity(data.len());
            let meta = RecordMeta {
                seq: entry.seq,
                rule,
                qos: entry.qos,
                enqueued_ms: entry.enqueued_ms,
            };
            record::encode(&entry.message, meta, &mut again);
            size = again.len();
            checked.rebound.push((*seq, again));
        }
        checked.stored_bytes += size as u64;
        checked.recovered.push(RecoveredEntry {
            seq: *seq,
            size: entry.message.size(),
            qos: entry.qos,
        });
    }
    checked
}

/// The out rule a spooled message leaves by: the one it was queued for while that still
/// passes its topic, else the first out rule that does; `None` when none does.
fn destination_rule(rules: &RuleSet, entry: &SpooledEntry) -> Option<usize> {
    let topic = entry.message.topic.as_str();
    let passes =
        |rule: &switchyard_api::Rule| rule.direction.is_out() && rule.matches_hub_topic(topic);
    if rules.get(entry.rule).is_some_and(passes) {
        return Some(entry.rule);
    }
    rules.rules().iter().position(passes)
}

/// Renames a damaged file to `<name>.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{seconds}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

fn report(bridge: &str, path: &Path, checked: &CheckedRecords, damage: Option<&str>) {
    let replay = checked.recovered.len();
    if !checked.unroutable.is_empty() || !checked.rebound.is_empty() {
        tracing::warn!(
            bridge,
            "The bridge's topics changed while the spool {} held messages: {} now leave by \
             another rule, and {} that no out rule passes any more are dropped (counted as \
             unroutable).",
            path.display(),
            checked.rebound.len(),
            checked.unroutable.len()
        );
    }
    if let Some(damage) = damage {
        tracing::error!(
            bridge,
            "The spool {} was damaged: {damage}. {replay} message(s) could be read and will be \
             replayed; check the disk.",
            path.display()
        );
    } else if replay > 0 {
        tracing::info!(
            bridge,
            "Replaying {replay} message(s) from the spool {}.",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests;

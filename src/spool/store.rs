//! The spool file: a redb database with one table of records keyed by sequence number.
//!
//! redb is a single-file, copy-on-write B-tree with ACID transactions: a commit with
//! `Durability::Immediate` is on disk (fsync) when it returns, a crash leaves the last
//! committed state, and page checksums let it detect damage. The file is locked while
//! open, so two hubs (or bridges) never share one spool.

use std::path::Path;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use switchyard_api::spool::Removed;
use switchyard_api::{SpoolError, SpoolStore};

/// The table of records.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

/// redb's page cache per spool. The default (1 GiB) would let a long outage grow the
/// hub's memory; records are read back once, in order, so a small cache suffices.
const CACHE_BYTES: usize = 8 << 20;

/// An open spool file.
pub struct RedbStore {
    db: Database,
}

/// Why a spool file could not be opened.
#[derive(Debug)]
pub enum OpenFailure {
    /// Another process holds it.
    Locked,
    /// It is damaged or unreadable.
    Damaged(String),
}

fn failed(error: impl std::fmt::Display) -> SpoolError {
    SpoolError(error.to_string())
}

impl RedbStore {
    /// Opens (or creates) the file at `path` and checks its integrity. Returns whether
    /// redb had to repair it (after a crash, or after damage it could mend).
    pub fn open(path: &Path) -> Result<(RedbStore, bool), OpenFailure> {
        let mut db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|error| match error {
                DatabaseError::DatabaseAlreadyOpen => OpenFailure::Locked,
                other => OpenFailure::Damaged(other.to_string()),
            })?;
        let repaired = !db
            .check_integrity()
            .map_err(|error| OpenFailure::Damaged(error.to_string()))?;
        let store = RedbStore { db };
        store
            .commit(&[], &[])
            .map_err(|error| OpenFailure::Damaged(error.0))?;
        Ok((store, repaired))
    }

    /// Every record, in order, as far as the file can be read; the error says where
    /// reading stopped.
    pub fn read_all(&self, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SpoolError> {
        self.read(0, u64::MAX, out)
    }
}

/// Reads what it can of a damaged spool file without changing it: the records, in
/// order, up to the first unreadable part.
pub fn salvage(path: &Path, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SpoolError> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .open_read_only(path)
        .map_err(failed)?;
    let txn = db.begin_read().map_err(failed)?;
    let table = txn.open_table(RECORDS).map_err(failed)?;
    for item in table.iter().map_err(failed)? {
        let (seq, record) = item.map_err(failed)?;
        out.push((seq.value(), record.value().to_vec()));
    }
    Ok(())
}

impl SpoolStore for RedbStore {
    fn commit(&self, records: &[(u64, &[u8])], removed: &[u64]) -> Result<Removed, SpoolError> {
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::Immediate).map_err(failed)?;
        let mut gone = Removed::default();
        {
            let mut table = txn.open_table(RECORDS).map_err(failed)?;
            for (seq, record) in records {
                table.insert(seq, record).map_err(failed)?;
            }
            for seq in removed {
                if let Some(old) = table.remove(seq).map_err(failed)? {
                    gone.records += 1;
                    gone.bytes += old.value().len() as u64;
                }
            }
        }
        txn.commit().map_err(failed)?;
        Ok(gone)
    }

    fn read(&self, first: u64, last: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SpoolError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(RECORDS).map_err(failed)?;
        for item in table.range(first..=last).map_err(failed)? {
            let (seq, record) = item.map_err(failed)?;
            out.push((seq.value(), record.value().to_vec()));
        }
        Ok(())
    }
}

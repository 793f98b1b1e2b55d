//! The SQLite backend: one file, `<state_dir>/synthd.db`, mode 0600, WAL.
//! One process owns it at a time ([`StateLock`]); within it, one writer
//! connection (SQLite serialises writers anyway, and transactions are one
//! page) and a pool of reader connections that never wait for the writer.
//!
//! Blocking SQLite calls run on tokio's blocking threads; each trait method
//! is one such call.

mod outbox;
mod polls;
mod views;

pub(crate) use views::collect_counts;

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number
/// applied so far.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE records (
    account_id   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    hash         BLOB NOT NULL,
    seen_scan    INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, resource, record_id)
) WITHOUT ROWID;
CREATE INDEX records_scan ON records (account_id, resource, seen_scan);
CREATE TABLE poll_state (
    account_id              TEXT NOT NULL,
    resource                TEXT NOT NULL,
    scan_seq                INTEGER NOT NULL DEFAULT 0,
    baseline_done           INTEGER NOT NULL DEFAULT 0,
    held_scan               INTEGER,
    last_started_at         INTEGER,
    last_finished_at        INTEGER,
    last_success_at         INTEGER,
    last_success_started_at INTEGER,
    last_full_scan_at       INTEGER,
    last_error              TEXT,
    consecutive_failures    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, resource)
);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    account_id TEXT NOT NULL,
    resource   TEXT,
    record_id  TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook_id      TEXT NOT NULL,
    order_key       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    payload         TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_order ON deliveries (webhook_id, order_key, status, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE TABLE attempts (
    delivery_id   TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    status_code   INTEGER,
    duration_ms   INTEGER NOT NULL,
    response_body TEXT,
    error_kind    TEXT,
    error         TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
"#,
    r#"
CREATE TABLE webhook_state (
    webhook_id    TEXT PRIMARY KEY,
    fingerprint   TEXT,
    failing_since INTEGER,
    paused_at     INTEGER,
    last_test_at  INTEGER
);
CREATE INDEX deliveries_retention ON deliveries (status, updated_at);
CREATE INDEX events_created ON events (created_at);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // The shape fingerprint of each resource (re-baseline on a change), and
    // `cancelled` deliveries (their webhook left the config).
    r#"
ALTER TABLE poll_state ADD COLUMN shape TEXT;
CREATE TABLE deliveries_v3 (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook_id      TEXT NOT NULL,
    order_key       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    payload         TEXT NOT NULL
);
INSERT INTO deliveries_v3 SELECT * FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v3 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_order ON deliveries (webhook_id, order_key, status, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_retention ON deliveries (status, updated_at);
"#,
    // Compact records: an integer key per (account, resource) instead of two
    // repeated strings, no per-record scan bookkeeping (a scan keeps the ids
    // it saw in memory), and a running count per resource. Every hash is
    // kept: no re-baseline, no events.
    r#"
CREATE TABLE streams (
    id         INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    UNIQUE (account_id, resource)
);
INSERT INTO streams (account_id, resource)
    SELECT account_id, resource FROM poll_state
    UNION SELECT DISTINCT account_id, resource FROM records;
CREATE TABLE records_v4 (
    stream    INTEGER NOT NULL,
    record_id TEXT NOT NULL,
    hash      BLOB NOT NULL,
    PRIMARY KEY (stream, record_id)
) WITHOUT ROWID;
INSERT INTO records_v4 (stream, record_id, hash)
    SELECT s.id, r.record_id, r.hash FROM records r
    JOIN streams s ON s.account_id = r.account_id AND s.resource = r.resource;
DROP TABLE records;
ALTER TABLE records_v4 RENAME TO records;
ALTER TABLE poll_state ADD COLUMN record_count INTEGER NOT NULL DEFAULT 0;
UPDATE poll_state SET record_count = (
    SELECT COUNT(*) FROM records r JOIN streams s ON r.stream = s.id
    WHERE s.account_id = poll_state.account_id AND s.resource = poll_state.resource);
"#,
    // records.hash now ends with a raw-text hash (see detect::Hash). Older
    // hashes still compare (only the first 24 bytes decide a change) and are
    // completed by the next scan; the version (nothing else changes) stops
    // an older synthd, which would compare all 32 bytes and announce every
    // record as updated.
    r#"
UPDATE meta SET value = value WHERE 0;
"#,
];

/// How long a writer waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers kept open between uses.
const READERS_KEPT: usize = 4;

/// An exclusive lock on a state directory, held for the life of a `run` or
/// `sync` so two of them never poll and deliver from one database at once.
/// The kernel drops it when the process exits, even on kill -9.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Takes `<state_dir>/synthd.lock` without waiting.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StoreError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        ensure_dir(state_dir)?;
        let mut file = open_private(&state_dir.join("synthd.lock"))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::InUse {
                dir: state_dir.to_path_buf(),
                pid: holder.trim().to_string(),
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(StateLock { _file: file })
    }
}

/// Opens (creating, mode 0600, never truncating, never through a symbolic
/// link) a file of the state directory.
fn open_private(path: &Path) -> Result<std::fs::File, StoreError> {
    refuse_symlink(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => StoreError::Symlink {
                path: path.to_path_buf(),
            },
            _ => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        })
}

fn refuse_symlink(path: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Symlink {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Creates the state directory (0700) or checks an existing one the way
/// OpenSSH checks `~/.ssh`: it must not be writable by group or others,
/// and must belong to this user or root. (The directory itself may be a
/// symbolic link to where the operator keeps it.)
fn ensure_dir(state_dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    if !state_dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
    }
    let meta = std::fs::metadata(state_dir).map_err(|source| StoreError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    // A sticky directory writable by others (such as /tmp itself) still
    // lets others create files; refuse it too.
    if mode & 0o022 != 0 {
        return Err(StoreError::InsecureDir {
            path: state_dir.to_path_buf(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(StoreError::ForeignDir {
            dir: state_dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `<state_dir>/synthd.db` and migrates it.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        ensure_dir(state_dir)?;
        let path = state_dir.join("synthd.db");
        // Create the file ourselves so it is 0600 from the first byte; SQLite
        // gives the -wal and -shm files the same mode.
        open_private(&path)?;
        for side in ["synthd.db-wal", "synthd.db-shm"] {
            refuse_symlink(&state_dir.join(side))?;
        }
        let conn = Connection::open(&path).map_err(|e| sql_error(&path, e))?;
        let inner = Inner {
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            path,
        };
        inner.init()?;
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a blocking thread. A panic inside `f` (a bug) comes back
    /// as an error; any transaction it had open rolls back.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Internal(super::panic_text(e)))?
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, e)
    }

    /// Runs a read on a reader connection (taken from the pool, or opened),
    /// which sees the last committed state and never waits for the writer.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(|e| self.err(e))?;
                c.busy_timeout(BUSY_TIMEOUT).map_err(|e| self.err(e))?;
                c.pragma_update(None, "query_only", true)
                    .map_err(|e| self.err(e))?;
                c
            }
        };
        let result = f(&conn).map_err(|e| self.err(e));
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READERS_KEPT {
            pool.push(conn);
        }
        result
    }

    fn init(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let path = &self.path;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| sql_error(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; continuing");
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| sql_error(path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_error(path, e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::NewerSchema {
                path: path.display().to_string(),
                found: version,
                known,
            });
        }
        let compacted = version > 0 && version < 4;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(|e| sql_error(path, e))?;
            tx.execute_batch(sql).map_err(|e| sql_error(path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| sql_error(path, e))?;
            tx.commit().map_err(|e| sql_error(path, e))?;
        }
        if compacted {
            // The old record rows are free pages now: give them back.
            tracing::info!(db = %path.display(), "compacting the database after the schema upgrade");
            conn.execute_batch("VACUUM")
                .map_err(|e| sql_error(path, e))?;
        }
        Ok(())
    }
}

/// A stored hash is 32 bytes; anything else is corruption, not a change.
pub(crate) fn stored_hash(
    path: &Path,
    id: &str,
    bytes: Vec<u8>,
) -> Result<crate::detect::Hash, StoreError> {
    bytes.try_into().map_err(|b: Vec<u8>| StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!(
            "the stored hash of record {id:?} is {} bytes, not 32",
            b.len()
        ),
    })
}

pub(crate) fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        match f.code {
            ErrorCode::DiskFull => return StoreError::DiskFull { path, dir },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Locked { path };
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                return StoreError::Corrupt {
                    path: path.display().to_string(),
                    detail: msg.clone().unwrap_or_else(|| e.to_string()),
                };
            }
            ErrorCode::ReadOnly => return StoreError::ReadOnly { path, dir },
            // Writes past a full disk can also surface as I/O errors (a
            // short write is "full", a refused one is EIO/EFBIG).
            ErrorCode::SystemIoFailure
                if [
                    rusqlite::ffi::SQLITE_IOERR_WRITE,
                    rusqlite::ffi::SQLITE_IOERR_FSYNC,
                    rusqlite::ffi::SQLITE_IOERR_TRUNCATE,
                    rusqlite::ffi::SQLITE_IOERR_SHMSIZE,
                ]
                .contains(&f.extended_code) =>
            {
                return StoreError::WriteFailed { path, dir };
            }
            _ => {}
        }
    }
    StoreError::Sqlite {
        path,
        detail: e.to_string(),
    }
}

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    AccountChange, AttemptOutcome, AttemptView, DeliveryCounts, DeliveryView, DueDelivery,
    InstanceView, PageRows, PollStatus, Pruned, ReplaySelection, Replayed, RetentionPolicy,
    ScanClaim, ScanEndRows, ScanRequest, ScanStart, StateStore, StoredAccount, TestClaim, TestSend,
};
use crate::detect::{Hash, SeenIds};

#[async_trait]
impl StateStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    fn shared(&self) -> bool {
        false
    }

    async fn ensure_hash_scheme(&self, scheme: &str) -> Result<bool, StoreError> {
        let scheme = scheme.to_string();
        self.run(move |s| s.ensure_hash_scheme(&scheme)).await
    }

    async fn stored_accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        self.run(|s| s.stored_accounts()).await
    }

    async fn apply_account_changes(
        &self,
        changes: &[AccountChange],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let changes = changes.to_vec();
        self.run(move |s| s.apply_account_changes(&changes, now))
            .await
    }

    async fn reconcile_webhooks(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let fingerprints = fingerprints.to_vec();
        self.run(move |s| s.reconcile_webhooks(&fingerprints)).await
    }

    async fn cancel_orphans(&self, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let keep = keep.to_vec();
        self.run(move |s| s.cancel_orphans(&keep, now)).await
    }

    async fn begin_scan(&self, req: &ScanRequest) -> Result<ScanClaim, StoreError> {
        let req = req.clone();
        self.run(move |s| s.begin_scan(&req)).await
    }

    async fn stored_hashes(
        &self,
        scan: &ScanStart,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Hash>>, StoreError> {
        let stream = scan.stream;
        self.run(move |s| s.stored_hashes(stream, &ids)).await
    }

    async fn commit_page(&self, scan: &ScanStart, rows: PageRows) -> Result<(), StoreError> {
        let scan = scan.clone();
        self.run(move |s| s.commit_page(&scan, &rows)).await
    }

    async fn missing_ids(
        &self,
        scan: &ScanStart,
        seen: Arc<SeenIds>,
    ) -> Result<Vec<String>, StoreError> {
        let stream = scan.stream;
        self.run(move |s| s.missing_ids(stream, &seen)).await
    }

    async fn finish_scan(&self, scan: &ScanStart, end: ScanEndRows) -> Result<(), StoreError> {
        let scan = scan.clone();
        self.run(move |s| s.finish_scan(&scan, &end)).await
    }

    async fn fail_scan(
        &self,
        scan: &ScanStart,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (scan, error) = (scan.clone(), error.to_string());
        self.run(move |s| s.fail_scan(&scan, &error, now)).await
    }

    async fn last_poll_starts(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.run(|s| s.last_poll_starts()).await
    }

    async fn due_deliveries(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.run(move |s| s.due_deliveries(&webhook_id, now, limit))
            .await
    }

    async fn record_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<String>, StoreError> {
        let outcomes = outcomes.to_vec();
        self.run(move |s| s.record_attempts(&outcomes)).await
    }

    async fn release_deliveries(&self, _ids: &[String]) -> Result<(), StoreError> {
        // One process owns the file: claims live in that process's memory.
        Ok(())
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run(|s| s.next_due_at()).await
    }

    async fn paused_webhooks(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.run(|s| s.paused_webhooks()).await
    }

    async fn resume_webhook(&self, webhook_id: &str) -> Result<bool, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.run(move |s| s.resume_webhook(&webhook_id)).await
    }

    async fn claim_test_send(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> Result<TestClaim, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.run(move |s| s.claim_test_send(&webhook_id, now, min_gap))
            .await
    }

    async fn record_test_send(&self, send: &TestSend) -> Result<(), StoreError> {
        let send = send.clone();
        self.run(move |s| s.record_test_send(&send)).await
    }

    async fn replay(
        &self,
        sel: &ReplaySelection,
        enabled: &[String],
        now: DateTime<Utc>,
    ) -> Result<Replayed, StoreError> {
        let (sel, enabled) = (sel.clone(), enabled.to_vec());
        self.run(move |s| s.replay(&sel, &enabled, now)).await
    }

    async fn prune_batch(
        &self,
        retention: RetentionPolicy,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        self.run(move |s| s.prune_batch(retention, now, batch))
            .await
    }

    async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        self.run(|s| s.delivery_counts()).await
    }

    async fn oldest_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run(|s| s.oldest_pending_at()).await
    }

    async fn poll_status(&self) -> Result<Vec<PollStatus>, StoreError> {
        self.run(|s| s.poll_status()).await
    }

    async fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryView, String, Vec<AttemptView>)>, StoreError> {
        let id = id.to_string();
        self.run(move |s| s.delivery(&id)).await
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.run(|s| s.pending_deliveries()).await
    }

    async fn webhook_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, super::DeliveryCounts)>, StoreError> {
        self.run(move |s| s.webhook_counts(since)).await
    }

    async fn delivery_log(
        &self,
        query: &super::LogQuery,
    ) -> Result<Vec<super::LogRow>, StoreError> {
        let query = query.clone();
        self.run(move |s| s.delivery_log(&query)).await
    }

    async fn events_per_hour(
        &self,
        account_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::HourCount>, StoreError> {
        let account_id = account_id.to_string();
        self.run(move |s| s.events_per_hour(&account_id, since))
            .await
    }

    async fn instances(&self) -> Result<Vec<InstanceView>, StoreError> {
        Ok(Vec::new())
    }

    async fn heartbeat(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("synthd.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    /// A state written by the schema before compact records keeps every
    /// hash and its poll state: no re-baseline, no events.
    #[tokio::test]
    async fn the_compact_schema_keeps_every_hash_of_an_older_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synthd.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute_batch(
                "INSERT INTO poll_state (account_id, resource, scan_seq, baseline_done, last_full_scan_at)
                     VALUES ('acme', 'hris', 4, 1, 1);
                 INSERT INTO records VALUES ('acme', 'hris', '1', zeroblob(32), 4, 0);
                 INSERT INTO records VALUES ('acme', 'hris', 'x', randomblob(32), 4, 0);
                 INSERT INTO records VALUES ('other', 'ats', '1', zeroblob(32), 2, 0);",
            )
            .unwrap();
        }
        let store = Store::new(Arc::new(SqliteStore::open(dir.path()).unwrap()));
        let status = store.poll_status().await.unwrap();
        assert_eq!(
            (status.len(), status[0].records, status[0].baseline_done),
            (1, 2, true)
        );
        let crate::store::ScanClaim::Started(scan) = store
            .begin_scan(&crate::store::ScanRequest {
                account_id: "acme".into(),
                resource: "hris".into(),
                shape: "s".into(),
                now: chrono::Utc::now(),
                skip_if_started_after: None,
            })
            .await
            .unwrap()
        else {
            panic!("not started");
        };
        assert!(scan.baseline_done && !scan.reshaped && scan.known_before == 2);
        let hashes = store
            .stored_hashes(&scan, vec!["1".into(), "x".into()])
            .await
            .unwrap();
        assert_eq!(hashes[0], Some([0; 32]));
        assert!(hashes[1].is_some());
        let conn = Connection::open(&path).unwrap();
        let columns: String = conn
            .query_row(
                "SELECT group_concat(name) FROM pragma_table_info('records')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(columns, "stream,record_id,hash");
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // the point: a writer held across the reads
    async fn readers_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // A long commit holds the writer; reads answer meanwhile.
        let writer = store.inner.lock();
        let reader = Store::new(Arc::new(store.clone()));
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            (reader.delivery_counts().await, reader.poll_status().await)
        })
        .await
        .expect("a read waited for the writer");
        assert_eq!(read.0.unwrap().pending, 0);
        assert!(read.1.unwrap().is_empty());
        drop(writer);
    }
}

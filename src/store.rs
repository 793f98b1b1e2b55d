//! The SQLite state: record hashes, poll state, events, deliveries and
//! attempts. One file, `<state_dir>/synthd.db`, mode 0600, WAL.
//!
//! Every change that produces events commits the new hashes, the events and
//! one delivery row per matching webhook in a single transaction (the
//! outbox), so a crash can neither lose an event nor emit one twice.
//!
//! Nothing from a record but its id is ever written here.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};

use crate::config::Webhook;
use crate::detect::{self, Change, DeleteDecision, Known, RecordDigest};
use crate::events::{self, Action, Event, EventKind};

mod outbox;
pub use outbox::{
    AttemptRow, DeliveryFilter, DeliveryRow, Pruned, ReplaySelection, Replayed, TestClaim,
};

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
];

/// How long a writer waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// No retry is ever scheduled further ahead than this (the longest step,
/// 10 h, plus its jitter, with room to spare); a pending delivery due later
/// than now plus this was scheduled by a wrong clock and is due now.
const MAX_RETRY_GAP_MS: i64 = 12 * 3600 * 1000;

/// A storage failure, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create state directory {path}: {source} (set daemon.state_dir to a writable directory)"
    )]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open {path}: {source} (the user synthd runs as must be able to read and write daemon.state_dir and its files)"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this synthd understands ({known}); run the newer synthd or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "database {path}: disk full; the last change was rolled back and nothing was lost; free space in {dir}"
    )]
    DiskFull { path: PathBuf, dir: PathBuf },
    #[error(
        "database {path}: a write failed (disk full, a file size limit, or a failing disk); the last change was rolled back and nothing was lost; check free space in {dir}"
    )]
    WriteFailed { path: PathBuf, dir: PathBuf },
    #[error(
        "database {path} stayed locked for {}s: another writer (a large commit of the running daemon, or another \
         synthd on this state_dir) held it that long; try again, and if it persists check for a second synthd",
        BUSY_TIMEOUT.as_secs()
    )]
    Locked { path: PathBuf },
    #[error(
        "state directory {path} is writable by other users (mode {mode:o}); another user could replace synthd's \
         files: run `chmod go-w {path}` (synthd keeps it 0700)"
    )]
    InsecureDir { path: PathBuf, mode: u32 },
    #[error(
        "state directory {dir} belongs to uid {owner}, not to the user synthd runs as ({me}) or root; \
         run `chown` on it or point daemon.state_dir elsewhere"
    )]
    ForeignDir { dir: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is a symbolic link; refusing to follow it (move it away: synthd creates its own files)"
    )]
    Symlink { path: PathBuf },
    #[error("internal error in the store (a bug; please report it): {0}")]
    Internal(String),
    #[error(
        "database {path} is damaged ({detail}); restore it from a backup or move it away to start over"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("database {path} is read-only; make {dir} writable by the synthd user")]
    ReadOnly { path: PathBuf, dir: PathBuf },
    #[error(
        "another synthd (pid {pid}) is running on state directory {dir}; stop it first, or give this one its own daemon.state_dir"
    )]
    InUse { dir: PathBuf, pid: String },
    #[error("database {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
}

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

/// Handle to the database. Cheap to clone. One writer connection behind a
/// mutex (SQLite serialises writers anyway, and our transactions are one
/// page), and a small pool of reader connections: in WAL mode a reader
/// never waits for the writer, so `/healthz`, `status` and the delivery
/// loop's queries are not held up by a big commit.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

/// Readers kept open between uses.
const READERS_KEPT: usize = 4;

/// What a failed task said, for an internal error.
pub fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a task panicked".into()),
        Err(e) => e.to_string(),
    }
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/synthd.db` and migrates it.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        ensure_dir(state_dir)?;
        let path = state_dir.join("synthd.db");
        // Create the file ourselves so it is 0600 from the first byte; SQLite
        // gives the -wal and -shm files the same mode.
        open_private(&path)?;
        for side in ["synthd.db-wal", "synthd.db-shm"] {
            refuse_symlink(&state_dir.join(side))?;
        }
        let conn = Connection::open(&path).map_err(|e| sql_error(&path, e))?;
        let store = Store {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::default(),
            path,
        };
        store.init()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(&self.path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; continuing");
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| sql_error(&self.path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.path, e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(|e| sql_error(&self.path, e))?;
            tx.execute_batch(sql)
                .map_err(|e| sql_error(&self.path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| sql_error(&self.path, e))?;
            tx.commit().map_err(|e| sql_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Runs `f` on a blocking thread, for callers on the async runtime. A
    /// panic inside `f` (a bug) comes back as an error instead of taking
    /// the caller down with it; any transaction it had open rolls back.
    pub async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Internal(panic_text(e)))
    }

    // -----------------------------------------------------------------------
    // Accounts
    // -----------------------------------------------------------------------

    /// Brings the `accounts` table in line with the config and emits
    /// `account.created` / `account.updated` / `account.deleted`. A removed
    /// account's hashes and poll state go with it.
    pub fn reconcile_accounts(
        &self,
        accounts: &[AccountFingerprint],
        webhooks: &[Webhook],
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let stored: Vec<(String, String, String)> = {
            let mut st = tx
                .prepare("SELECT id, provider, fingerprint FROM accounts")
                .map_err(|e| self.err(e))?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?
        };
        let mut emitted = Vec::new();
        for a in accounts {
            let action = match stored.iter().find(|(id, _, _)| id == &a.id) {
                None => Some(Action::Created),
                Some((_, _, fp)) if fp != &a.fingerprint => Some(Action::Updated),
                Some(_) => None,
            };
            let Some(action) = action else { continue };
            tx.execute(
                "INSERT INTO accounts (id, provider, fingerprint, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET provider = ?2, fingerprint = ?3, updated_at = ?4",
                params![a.id, a.provider, a.fingerprint, ms(now)],
            )
            .map_err(|e| self.err(e))?;
            let event = Event::new(
                EventKind::Account {
                    account_id: a.id.clone(),
                    provider: a.provider.clone(),
                    action,
                },
                now,
            );
            insert_event(&tx, &event, webhooks, now).map_err(|e| self.err(e))?;
            emitted.push(event);
        }
        for (id, provider, _) in &stored {
            if accounts.iter().any(|a| &a.id == id) {
                continue;
            }
            for sql in [
                "DELETE FROM records WHERE account_id = ?1",
                "DELETE FROM poll_state WHERE account_id = ?1",
                "DELETE FROM accounts WHERE id = ?1",
            ] {
                tx.execute(sql, [id]).map_err(|e| self.err(e))?;
            }
            let event = Event::new(
                EventKind::Account {
                    account_id: id.clone(),
                    provider: provider.clone(),
                    action: Action::Deleted,
                },
                now,
            );
            insert_event(&tx, &event, webhooks, now).map_err(|e| self.err(e))?;
            emitted.push(event);
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(emitted)
    }

    /// Records which hash function produced the stored hashes. When it
    /// changes (a `hash_key_file` added, removed or replaced), every stored
    /// hash is stale: rather than announce every record as updated, the next
    /// complete scan of each resource becomes a silent baseline again.
    /// Returns true when that happened.
    pub fn ensure_hash_scheme(&self, scheme: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let old: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'hash_scheme'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let changed = old.as_deref().is_some_and(|o| o != scheme);
        if changed {
            tx.execute("UPDATE poll_state SET baseline_done = 0", [])
                .map_err(|e| self.err(e))?;
        }
        if old.as_deref() != Some(scheme) {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('hash_scheme', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [scheme],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(changed)
    }

    // -----------------------------------------------------------------------
    // Polls
    // -----------------------------------------------------------------------

    /// Starts a scan: bumps the scan sequence, records the start time and
    /// counts the records known before it. When the resource's `shape`
    /// (how records become ids and hashes) differs from the stored one, the
    /// resource re-baselines: this scan is silent, as its first was.
    pub fn begin_scan(
        &self,
        account_id: &str,
        resource: &str,
        shape: &str,
        now: DateTime<Utc>,
    ) -> Result<ScanStart, StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: this transaction writes, and a deferred one that read
        // first could not wait for another writer (SQLite would refuse at
        // once rather than risk a deadlock).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let stored_shape: Option<Option<String>> = tx
            .query_row(
                "SELECT shape FROM poll_state WHERE account_id = ?1 AND resource = ?2",
                params![account_id, resource],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        // A database from before shapes were stored has none: record it
        // without re-baselining.
        let reshaped = matches!(&stored_shape, Some(Some(old)) if old != shape);
        tx.execute(
            "INSERT INTO poll_state (account_id, resource, scan_seq, last_started_at, shape)
             VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (account_id, resource)
             DO UPDATE SET scan_seq = scan_seq + 1, last_started_at = ?3, shape = ?4",
            params![account_id, resource, ms(now), shape],
        )
        .map_err(|e| self.err(e))?;
        if reshaped {
            tx.execute(
                "UPDATE poll_state SET baseline_done = 0, held_scan = NULL
                 WHERE account_id = ?1 AND resource = ?2",
                params![account_id, resource],
            )
            .map_err(|e| self.err(e))?;
        }
        let known_before: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM records WHERE account_id = ?1 AND resource = ?2",
                params![account_id, resource],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let start = tx
            .query_row(
                "SELECT scan_seq, baseline_done, held_scan, last_success_started_at, last_full_scan_at
                 FROM poll_state WHERE account_id = ?1 AND resource = ?2",
                params![account_id, resource],
                |r| {
                    let last_full_scan_at = r.get::<_, Option<i64>>(4)?.map(from_ms);
                    Ok(ScanStart {
                        account_id: account_id.to_string(),
                        resource: resource.to_string(),
                        scan: r.get(0)?,
                        baseline_done: r.get::<_, i64>(1)? != 0,
                        held: r.get::<_, Option<i64>>(2)?.is_some(),
                        last_success_started_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                        first_baseline: last_full_scan_at.is_none(),
                        last_full_scan_at,
                        started_at: now,
                        known_before: known_before as u64,
                        reshaped,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(start)
    }

    /// Applies one page of digests: new and changed hashes, their events and
    /// deliveries, in one transaction. `keep` are ids seen on the page whose
    /// records could not be hashed: they count as seen, with their old hash.
    /// `emit` is false during a silent baseline.
    pub fn apply_page(
        &self,
        scan: &ScanStart,
        digests: &[RecordDigest],
        keep: &[String],
        emit: bool,
        webhooks: &[Webhook],
        now: DateTime<Utc>,
    ) -> Result<PageCounts, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut counts = PageCounts::default();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT hash, seen_scan FROM records
                     WHERE account_id = ?1 AND resource = ?2 AND record_id = ?3",
                )
                .map_err(|e| self.err(e))?;
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO records (account_id, resource, record_id, hash, seen_scan, last_seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (account_id, resource, record_id)
                     DO UPDATE SET hash = ?4, seen_scan = ?5, last_seen_at = ?6",
                )
                .map_err(|e| self.err(e))?;
            for d in digests {
                let known: Option<Known> = select
                    .query_row(params![scan.account_id, scan.resource, d.id], |r| {
                        let hash: Vec<u8> = r.get(0)?;
                        Ok((hash, r.get::<_, i64>(1)?))
                    })
                    .optional()
                    .map_err(|e| self.err(e))?
                    .map(|(hash, seen_scan)| {
                        Ok::<_, StoreError>(Known {
                            hash: stored_hash(&self.path, &d.id, hash)?,
                            seen_scan,
                        })
                    })
                    .transpose()?;
                let change = detect::classify(known, &d.hash, scan.scan);
                let action = match change {
                    Change::Duplicate => {
                        counts.duplicates += 1;
                        continue;
                    }
                    Change::Created => {
                        counts.created += 1;
                        Some(Action::Created)
                    }
                    Change::Updated => {
                        counts.updated += 1;
                        Some(Action::Updated)
                    }
                    Change::Unchanged => None,
                };
                counts.records += 1;
                upsert
                    .execute(params![
                        scan.account_id,
                        scan.resource,
                        d.id,
                        &d.hash[..],
                        scan.scan,
                        ms(now)
                    ])
                    .map_err(|e| self.err(e))?;
                if let (Some(action), true) = (action, emit) {
                    let event = record_event(scan, action, &d.id, now);
                    insert_event(&tx, &event, webhooks, now).map_err(|e| self.err(e))?;
                }
            }
            let mut touch = tx
                .prepare_cached(
                    "UPDATE records SET seen_scan = ?4
                     WHERE account_id = ?1 AND resource = ?2 AND record_id = ?3",
                )
                .map_err(|e| self.err(e))?;
            for id in keep {
                touch
                    .execute(params![scan.account_id, scan.resource, id, scan.scan])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(counts)
    }

    /// Ends a scan in which every page was fetched. A full scan deletes the
    /// ids it did not see (subject to the mass-deletion guard); an
    /// incremental one deletes nothing.
    pub fn finish_scan(
        &self,
        scan: &ScanStart,
        full: bool,
        emit: bool,
        webhooks: &[Webhook],
        now: DateTime<Utc>,
    ) -> Result<ScanEnd, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut end = ScanEnd::default();
        if full {
            // Missing: known before this scan and not seen by it. Ids new in
            // this scan were seen, so they are neither missing nor counted
            // as known: a scan that swaps every id for a new one is still a
            // mass deletion.
            let missing: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM records
                     WHERE account_id = ?1 AND resource = ?2 AND seen_scan != ?3",
                    params![scan.account_id, scan.resource, scan.scan],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            let decision = if emit {
                detect::deletion_decision(scan.known_before, missing as u64, scan.held)
            } else {
                DeleteDecision::Apply
            };
            match decision {
                DeleteDecision::Hold => end.held = missing as u64,
                DeleteDecision::Apply => {
                    end.deleted =
                        delete_unseen(&tx, scan, emit, webhooks, now).map_err(|e| self.err(e))?;
                }
            }
            tx.execute(
                "UPDATE poll_state SET baseline_done = 1, last_full_scan_at = ?3, held_scan = ?4
                 WHERE account_id = ?1 AND resource = ?2",
                params![
                    scan.account_id,
                    scan.resource,
                    ms(scan.started_at),
                    (decision == DeleteDecision::Hold).then_some(scan.scan)
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "UPDATE poll_state SET last_finished_at = ?3, last_success_at = ?3,
                 last_success_started_at = ?4, last_error = NULL, consecutive_failures = 0
             WHERE account_id = ?1 AND resource = ?2",
            params![scan.account_id, scan.resource, ms(now), ms(scan.started_at)],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(end)
    }

    /// Records a failed poll. Deletions held by the guard need two
    /// *consecutive* complete scans, so a failure resets the hold.
    pub fn fail_scan(
        &self,
        scan: &ScanStart,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE poll_state SET last_finished_at = ?3, last_error = ?4,
                     consecutive_failures = consecutive_failures + 1, held_scan = NULL
                 WHERE account_id = ?1 AND resource = ?2",
                params![scan.account_id, scan.resource, ms(now), error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When each account's most recent poll (of any resource) started.
    pub fn last_poll_starts(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare(
                "SELECT account_id, MIN(last_started_at) FROM poll_state
                 WHERE last_started_at IS NOT NULL GROUP BY account_id",
            )?;
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, from_ms(r.get(1)?))))
                .and_then(|rows| rows.collect())
        })
    }

    // -----------------------------------------------------------------------
    // Deliveries
    // -----------------------------------------------------------------------

    /// Pending deliveries whose time has come (or whose time lies further
    /// ahead than any retry is ever scheduled: written by a clock that was
    /// wrong), oldest first, for the given
    /// webhooks, skipping any whose earlier event for the same record is
    /// still pending for the same webhook (per-record order).
    pub fn due_deliveries(
        &self,
        webhook_ids: &[&str],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        if webhook_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|conn| {
            let placeholders = vec!["?"; webhook_ids.len()].join(",");
            let sql = format!(
                "SELECT d.id, d.event_id, d.webhook_id, d.attempts, d.payload
             FROM deliveries d
             WHERE d.status = 'pending'
               AND (d.next_attempt_at <= ?1 OR d.next_attempt_at > ?1 + {MAX_RETRY_GAP_MS})
               AND d.webhook_id IN ({placeholders})
               AND NOT EXISTS (
                   SELECT 1 FROM deliveries p
                   WHERE p.webhook_id = d.webhook_id AND p.order_key = d.order_key
                     AND p.status = 'pending' AND p.seq < d.seq)
             ORDER BY d.next_attempt_at, d.seq
             LIMIT ?"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = vec![ms(now).into()];
            values.extend(
                webhook_ids
                    .iter()
                    .map(|w| rusqlite::types::Value::from(w.to_string())),
            );
            values.push((limit as i64).into());
            st.query_map(rusqlite::params_from_iter(values), |r| {
                Ok(DueDelivery {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    webhook_id: r.get(2)?,
                    attempts_made: r.get::<_, i64>(3)? as u32,
                    payload: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
        })
    }

    /// The earliest time any pending delivery becomes due, to sleep until.
    pub fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.earliest_pending("next_attempt_at")
    }

    /// When the oldest still-pending delivery was created.
    pub fn oldest_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.earliest_pending("created_at")
    }

    /// The smallest value of a time column among pending deliveries.
    fn earliest_pending(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT MIN({column}) FROM deliveries WHERE status = 'pending'"),
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(from_ms))
        })
    }

    // -----------------------------------------------------------------------
    // Reporting
    // -----------------------------------------------------------------------

    pub fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        self.read(|conn| {
            let mut counts = DeliveryCounts::default();
            let mut st = conn.prepare("SELECT status, COUNT(*) FROM deliveries GROUP BY status")?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())?;
            for (status, n) in rows {
                match status.as_str() {
                    "pending" => counts.pending = n as u64,
                    "delivered" => counts.delivered = n as u64,
                    "cancelled" => counts.cancelled = n as u64,
                    _ => counts.failed = n as u64,
                }
            }
            Ok(counts)
        })
    }

    /// (resources whose last poll succeeded, resources whose last poll failed).
    pub fn poll_health(&self) -> Result<(u64, u64), StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(SUM(consecutive_failures = 0), 0), COALESCE(SUM(consecutive_failures > 0), 0)
                 FROM poll_state",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
    }

    pub fn poll_status(&self) -> Result<Vec<PollStatus>, StoreError> {
        self.read(|conn| {
        let mut st = conn
            .prepare(
                "SELECT p.account_id, p.resource, p.last_started_at, p.last_success_at, p.last_error,
                        p.baseline_done, p.consecutive_failures,
                        (SELECT COUNT(*) FROM records r WHERE r.account_id = p.account_id AND r.resource = p.resource)
                 FROM poll_state p ORDER BY p.account_id, p.resource",
            )
            ?;
        st.query_map([], |r| {
            Ok(PollStatus {
                account_id: r.get(0)?,
                resource: r.get(1)?,
                last_started_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                last_success_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                last_error: r.get(4)?,
                baseline_done: r.get::<_, i64>(5)? != 0,
                consecutive_failures: r.get::<_, i64>(6)? as u64,
                records: r.get::<_, i64>(7)? as u64,
            })
        })
        .and_then(|rows| rows.collect())
        })
    }
}

/// A stored hash is 32 bytes; anything else is corruption, not a change.
fn stored_hash(path: &Path, id: &str, bytes: Vec<u8>) -> Result<detect::Hash, StoreError> {
    bytes.try_into().map_err(|b: Vec<u8>| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "the stored hash of record {id:?} is {} bytes, not 32",
            b.len()
        ),
    })
}

fn record_event(scan: &ScanStart, action: Action, record_id: &str, now: DateTime<Utc>) -> Event {
    Event::new(
        EventKind::Record {
            account_id: scan.account_id.clone(),
            resource: scan.resource.clone(),
            action,
            record_id: record_id.to_string(),
        },
        now,
    )
}

/// Deletes, in batches, the records a complete scan did not see.
fn delete_unseen(
    tx: &Transaction<'_>,
    scan: &ScanStart,
    emit: bool,
    webhooks: &[Webhook],
    now: DateTime<Utc>,
) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    loop {
        let ids: Vec<String> = {
            let mut st = tx.prepare_cached(
                "SELECT record_id FROM records
                 WHERE account_id = ?1 AND resource = ?2 AND seen_scan != ?3 LIMIT 1000",
            )?;
            st.query_map(params![scan.account_id, scan.resource, scan.scan], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(deleted);
        }
        let mut del = tx.prepare_cached(
            "DELETE FROM records WHERE account_id = ?1 AND resource = ?2 AND record_id = ?3",
        )?;
        for id in &ids {
            del.execute(params![scan.account_id, scan.resource, id])?;
            if emit {
                insert_event(
                    tx,
                    &record_event(scan, Action::Deleted, id, now),
                    webhooks,
                    now,
                )?;
            }
            deleted += 1;
        }
    }
}

/// Writes the event and one pending delivery per matching webhook.
pub(crate) fn insert_event(
    tx: &Transaction<'_>,
    event: &Event,
    webhooks: &[Webhook],
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let (resource, record_id) = match &event.kind {
        EventKind::Record {
            resource,
            record_id,
            ..
        } => (Some(resource.as_str()), Some(record_id.as_str())),
        _ => (None, None),
    };
    tx.prepare_cached(
        "INSERT INTO events (id, type, account_id, resource, record_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        event.id,
        event.event_type(),
        event.account_id(),
        resource,
        record_id,
        ms(event.timestamp)
    ])?;
    let order_key = event.order_key();
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, next_attempt_at,
             created_at, updated_at, payload)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6)",
    )?;
    for webhook in events::routes(webhooks, event) {
        insert.execute(params![
            new_delivery_id(),
            event.id,
            webhook.id,
            order_key,
            ms(now),
            event.body(webhook)
        ])?;
    }
    Ok(())
}

pub fn new_delivery_id() -> String {
    format!("dlv_{}", ulid::Ulid::generate())
}

fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
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
                    path,
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

/// What the config says about an account, reduced to what triggers
/// `account.updated`: provider, base URL, resources, schedule and
/// credentials, hashed together.
#[derive(Debug, Clone)]
pub struct AccountFingerprint {
    pub id: String,
    pub provider: String,
    pub fingerprint: String,
}

/// The state a scan starts from.
#[derive(Debug, Clone)]
pub struct ScanStart {
    pub account_id: String,
    pub resource: String,
    pub scan: i64,
    pub baseline_done: bool,
    pub held: bool,
    pub last_success_started_at: Option<DateTime<Utc>>,
    pub last_full_scan_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    /// Records known when the scan began (the mass-deletion guard's base).
    pub known_before: u64,
    /// No complete scan ever finished: this is the very first baseline.
    pub first_baseline: bool,
    /// The resource's shape changed, so this scan re-baselines.
    pub reshaped: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub records: u64,
    pub created: u64,
    pub updated: u64,
    pub duplicates: u64,
    pub collisions: u64,
    pub unhashable: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanEnd {
    pub deleted: u64,
    /// Deletions held back by the mass-deletion guard.
    pub held: u64,
}

#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub attempts_made: u32,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub response_body: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Their webhook left the config.
    pub cancelled: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PollStatus {
    pub account_id: String,
    pub resource: String,
    pub records: u64,
    pub baseline_done: bool,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(ids: std::ops::Range<u32>, version: u8) -> Vec<RecordDigest> {
        ids.map(|i| RecordDigest {
            id: i.to_string(),
            numeric: true,
            hash: [version; 32],
        })
        .collect()
    }

    /// One complete scan; returns what it did.
    fn scan(store: &Store, records: &[RecordDigest]) -> (PageCounts, ScanEnd) {
        let now = Utc::now();
        let s = store.begin_scan("a", "r", "shape", now).unwrap();
        let emit = s.baseline_done;
        let counts = store.apply_page(&s, records, &[], emit, &[], now).unwrap();
        (counts, store.finish_scan(&s, true, emit, &[], now).unwrap())
    }

    fn event_types(store: &Store) -> Vec<String> {
        let conn = store.lock();
        let mut st = conn
            .prepare("SELECT type FROM events ORDER BY seq")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn baseline_is_silent_then_changes_become_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        scan(&store, &digests(0..5, 1));
        assert!(event_types(&store).is_empty());
        let mut next = digests(1..5, 1);
        next[0].hash = [2; 32];
        next.push(RecordDigest {
            id: "9".into(),
            numeric: true,
            hash: [1; 32],
        });
        let (counts, end) = scan(&store, &next);
        assert_eq!((counts.created, counts.updated, end.deleted), (1, 1, 1));
        assert_eq!(
            event_types(&store),
            vec!["r.updated", "r.created", "r.deleted"]
        );
    }

    #[test]
    fn mass_deletion_waits_for_a_second_consecutive_complete_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        scan(&store, &digests(0..40, 1));
        // 30 of 40 vanish: held.
        let (_, end) = scan(&store, &digests(0..10, 1));
        assert_eq!((end.deleted, end.held), (0, 30));
        // A failed scan in between resets the hold.
        let s = store.begin_scan("a", "r", "shape", Utc::now()).unwrap();
        store.fail_scan(&s, "boom", Utc::now()).unwrap();
        let (_, end) = scan(&store, &digests(0..10, 1));
        assert_eq!((end.deleted, end.held), (0, 30));
        // The next consecutive complete scan confirms.
        let (_, end) = scan(&store, &digests(0..10, 1));
        assert_eq!((end.deleted, end.held), (30, 0));
        assert_eq!(event_types(&store).len(), 30);
    }

    #[test]
    fn a_new_hash_scheme_rebaselines_silently() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.ensure_hash_scheme("sha256").unwrap());
        scan(&store, &digests(0..5, 1));
        assert!(!store.ensure_hash_scheme("sha256").unwrap());
        assert!(store.ensure_hash_scheme("hmac-sha256:abcd").unwrap());
        // Every hash differs under the new key: no update storm.
        let (counts, _) = scan(&store, &digests(0..5, 7));
        assert_eq!(counts.updated, 5);
        assert!(event_types(&store).is_empty());
        // After the re-baseline, changes are announced again.
        scan(&store, &digests(0..5, 8));
        assert_eq!(event_types(&store).len(), 5);
    }

    #[test]
    fn readers_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        scan(&store, &digests(0..5, 1));
        // A long commit holds the writer; reads answer meanwhile.
        let writer = store.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = store.clone();
        std::thread::spawn(move || {
            let _ = tx.send((reader.delivery_counts(), reader.poll_status()));
        });
        let (counts, polls) = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("a read waited for the writer");
        assert_eq!(counts.unwrap().pending, 0);
        assert_eq!(polls.unwrap()[0].records, 5);
        drop(writer);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("synthd.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }
}

//! The state: record hashes, poll state, and the outbox of events,
//! deliveries and attempts, behind one trait ([`StateStore`]) with one
//! module per backend: [`sqlite`] (one file, the default) and [`postgres`]
//! (shared by several synthd processes).
//!
//! The store holds no business rules. It writes the rows it is given (the
//! pure [`crate::ingest`] step decides which hashes change, which events
//! exist and which webhooks get them) and answers plain questions: the
//! stored hashes of these ids, the ids a scan did not see, the deliveries
//! that are due. Every write that produces events commits the hashes, the
//! events and their deliveries in one transaction, so a crash can neither
//! lose an event nor emit one twice.
//!
//! Nothing from a record but its id is ever written here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::detect::{Hash, SeenIds};

pub mod import;
pub mod postgres;
pub mod sqlite;

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
        path: String,
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
        sqlite::BUSY_TIMEOUT.as_secs()
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
    #[error(
        "database {path} is damaged ({detail}); restore it from a backup or move it away to start over"
    )]
    Corrupt { path: String, detail: String },
    #[error("database {path} is read-only; make {dir} writable by the synthd user")]
    ReadOnly { path: PathBuf, dir: PathBuf },
    #[error(
        "another synthd (pid {pid}) is running on state directory {dir}; stop it first, or give this one its own daemon.state_dir"
    )]
    InUse { dir: PathBuf, pid: String },
    #[error("database {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
    #[error("PostgreSQL store {url}: {detail}")]
    Postgres { url: String, detail: String },
    #[error(
        "the claim on {account}/{resource} was lost (another synthd took it over after the lease expired); \
         this scan's pages were not committed and it deletes nothing"
    )]
    LostClaim { account: String, resource: String },
    #[error("{0}")]
    Refused(String),
    #[error("internal error in the store (a bug; please report it): {0}")]
    Internal(String),
}

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

/// A stored millisecond time. Out of range only through corruption; such a
/// value reads as the epoch rather than failing a whole listing.
pub fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub fn new_delivery_id() -> String {
    format!("dlv_{}", ulid::Ulid::generate())
}

/// Where a delivery stands. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    /// Its webhook left the config.
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook whose every attempt has failed for this long is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// No retry is ever scheduled further ahead than this (the longest step,
/// 10 h, plus its jitter, with room to spare); a pending delivery due later
/// than now plus this was scheduled by a wrong clock and is due now.
pub const MAX_RETRY_GAP: Duration = Duration::from_secs(12 * 3600);

// ---------------------------------------------------------------------------
// Rows the store is given
// ---------------------------------------------------------------------------

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub account_id: String,
    pub resource: Option<String>,
    pub record_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One pending delivery of an event to a webhook: the exact body to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    /// Deliveries with the same key reach a webhook in order.
    pub order_key: String,
    pub payload: String,
}

/// An event with its deliveries, written together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event: EventRow,
    pub deliveries: Vec<DeliveryRow>,
}

/// What one page of a scan writes: hashes of new and changed records (an
/// unchanged one writes nothing), and the events of those changes.
#[derive(Debug, Clone, Default)]
pub struct PageRows {
    pub upserts: Vec<(String, Hash)>,
    /// How many of the upserts are records new to the store.
    pub created: u64,
    pub events: Vec<NewEvent>,
}

/// What the end of a successful scan writes.
#[derive(Debug, Clone)]
pub struct ScanEndRows {
    /// Every page was fetched and the scan was not incremental: the
    /// baseline is done and the time of the last full scan moves.
    pub full: bool,
    /// Ids to delete (their events are in `events`).
    pub deletes: Vec<String>,
    /// Deletions were held by the mass-deletion guard.
    pub held: bool,
    pub events: Vec<NewEvent>,
    pub finished_at: DateTime<Utc>,
}

/// An account as the store remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub id: String,
    pub provider: String,
    pub fingerprint: String,
}

/// A change to one account, applied only if the stored fingerprint is still
/// `expected` (so of several processes seeing the same config change, one
/// records it and emits its event).
#[derive(Debug, Clone)]
pub struct AccountChange {
    pub id: String,
    /// `None`: the account must not exist yet.
    pub expected: Option<String>,
    /// `None`: delete the account (and its hashes and poll state).
    pub new: Option<StoredAccount>,
    pub event: NewEvent,
}

/// Asking to scan one account/resource.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub account_id: String,
    pub resource: String,
    /// The resource's shape fingerprint: a change re-baselines it.
    pub shape: String,
    pub now: DateTime<Utc>,
    /// A shared store answers [`ScanClaim::Done`] when a scan of this pair
    /// started after this time (another process polled it since this one
    /// last did, so it is not due). `None` (`sync`): scan regardless.
    pub skip_if_started_after: Option<DateTime<Utc>>,
}

/// The state a scan starts from.
#[derive(Debug, Clone)]
pub struct ScanStart {
    /// The store's key of this account/resource.
    pub stream: i64,
    pub account_id: String,
    pub resource: String,
    pub scan: i64,
    /// Increases with every claim; a commit carrying an older one is
    /// refused (PostgreSQL; SQLite has one process).
    pub fence: i64,
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

/// A scan could start, or another process is scanning that pair now, or
/// has scanned it since the caller last looked.
#[derive(Debug, Clone)]
pub enum ScanClaim {
    Started(ScanStart),
    /// `until`: when the holder's claim lapses unless renewed.
    Busy {
        holder: String,
        until: DateTime<Utc>,
    },
    Done {
        last_started_at: DateTime<Utc>,
    },
}

/// A delivery whose time has come.
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

/// One attempt and what follows from it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery_id: String,
    pub webhook_id: String,
    pub attempt: AttemptRecord,
    pub next: NextStep,
}

/// The answer to a test-send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestClaim {
    Granted,
    /// Another test went out less than the minimum gap ago; wait this long.
    TooSoon(Duration),
}

/// A test send, logged as an event with one delivery and its one attempt.
#[derive(Debug, Clone)]
pub struct TestSend {
    pub event: EventRow,
    pub delivery: DeliveryRow,
    pub attempt: AttemptRecord,
    pub delivered: bool,
}

/// What `synthd replay` re-queues: deliveries matching all given filters.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    pub event_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub webhook: Option<String>,
    pub status: Option<DeliveryStatus>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub queued: u64,
    /// Their webhook is disabled or gone.
    pub skipped: u64,
    /// A delivery of that event to that webhook is already pending.
    pub already_pending: u64,
}

/// How long the delivery log keeps finished deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub delivered: Duration,
    pub failed: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
}

// ---------------------------------------------------------------------------
// Views (answers to the CLI, /metrics and the console)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Their webhook left the config.
    pub cancelled: u64,
}

impl DeliveryCounts {
    pub fn add(&mut self, status: DeliveryStatus, n: u64) {
        match status {
            DeliveryStatus::Pending => self.pending += n,
            DeliveryStatus::Delivered => self.delivered += n,
            DeliveryStatus::Failed => self.failed += n,
            DeliveryStatus::Cancelled => self.cancelled += n,
        }
    }
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

/// One row of the delivery log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub response_body: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// One page of the delivery log, newest first (the console's webhook page
/// and `synthd deliveries`).
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub webhook: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// An exact event type (`hris_employees.created`).
    pub event_type: Option<String>,
    /// One event's deliveries.
    pub event_id: Option<String>,
    pub offset: u64,
    pub limit: usize,
}

/// One row of the delivery log with what the console shows beside it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRow {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub account_id: String,
    pub record_id: Option<String>,
    /// How long the last attempt took.
    pub last_duration_ms: Option<u64>,
}

/// Events of one type in one hour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourCount {
    pub hour: DateTime<Utc>,
    pub event_type: String,
    pub count: u64,
}

/// A synthd process sharing the store (PostgreSQL).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceView {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub claims: u64,
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

/// Everything synthd asks of its state. Each backend implements it once;
/// the conformance suite in `tests/store.rs` runs the same cases on both.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Where the state is, for messages (`sqlite:/var/lib/synthd/synthd.db`).
    fn describe(&self) -> String;

    /// Whether several processes may share this store (no state-directory
    /// lock then; claims coordinate them).
    fn shared(&self) -> bool;

    /// How long an unrenewed claim lasts (`None`: nothing is claimed).
    fn lease(&self) -> Option<Duration> {
        None
    }

    // -- accounts and webhooks ------------------------------------------------

    /// Records which hash function produced the stored hashes. When it
    /// changes, every resource re-baselines. Returns true when it changed.
    async fn ensure_hash_scheme(&self, scheme: &str) -> Result<bool, StoreError>;

    async fn stored_accounts(&self) -> Result<Vec<StoredAccount>, StoreError>;

    /// Applies each change whose `expected` fingerprint still holds, with its
    /// event; returns the ids applied.
    async fn apply_account_changes(
        &self,
        changes: &[AccountChange],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores each webhook's config fingerprint; a paused webhook whose
    /// config changed is resumed. Returns the ids resumed.
    async fn reconcile_webhooks(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, StoreError>;

    /// Cancels the pending deliveries of webhooks not in `keep`.
    async fn cancel_orphans(&self, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError>;

    // -- polls ----------------------------------------------------------------

    /// Starts (claims) a scan of one account/resource.
    async fn begin_scan(&self, req: &ScanRequest) -> Result<ScanClaim, StoreError>;

    /// The stored hash of each id (in order), `None` for ids not stored.
    async fn stored_hashes(
        &self,
        scan: &ScanStart,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Hash>>, StoreError>;

    /// Commits one page: hashes, events, deliveries, in one transaction.
    async fn commit_page(&self, scan: &ScanStart, rows: PageRows) -> Result<(), StoreError>;

    /// Stored ids the scan did not see.
    async fn missing_ids(
        &self,
        scan: &ScanStart,
        seen: Arc<SeenIds>,
    ) -> Result<Vec<String>, StoreError>;

    /// Ends a scan in which every page was fetched.
    async fn finish_scan(&self, scan: &ScanStart, end: ScanEndRows) -> Result<(), StoreError>;

    /// Records a failed scan. Deletions held by the guard need two
    /// consecutive complete scans, so a failure resets the hold.
    async fn fail_scan(
        &self,
        scan: &ScanStart,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// When each account's most recent poll (of any resource) started. A
    /// shared store leaves out an account with a scan that has not ended
    /// (running elsewhere, or abandoned by a process that died), so that a
    /// process starting now looks at it at once: a live scan answers
    /// `Busy` until it ends, an abandoned one is taken over.
    async fn last_poll_starts(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;

    // -- deliveries -------------------------------------------------------------

    /// Pending deliveries of `webhook_id` whose time has come, oldest first,
    /// skipping any whose earlier event for the same record is still pending
    /// (per-record order). With a shared store they are claimed for this
    /// process until the lease runs out.
    async fn due_deliveries(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records attempts, the deliveries' new states and the webhooks'
    /// health, in one transaction. Returns the webhooks paused by them.
    async fn record_attempts(&self, outcomes: &[AttemptOutcome])
    -> Result<Vec<String>, StoreError>;

    /// Gives back claimed deliveries that were not attempted.
    async fn release_deliveries(&self, ids: &[String]) -> Result<(), StoreError>;

    /// The earliest time any pending delivery becomes due.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    async fn paused_webhooks(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;

    /// Un-pauses a webhook. Returns whether it was paused.
    async fn resume_webhook(&self, webhook_id: &str) -> Result<bool, StoreError>;

    /// At most one test send per `min_gap` per webhook.
    async fn claim_test_send(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> Result<TestClaim, StoreError>;

    async fn record_test_send(&self, send: &TestSend) -> Result<(), StoreError>;

    /// Queues the selected events again, same event id and payload, for the
    /// `enabled` webhooks; a pair already pending is not queued twice.
    async fn replay(
        &self,
        sel: &ReplaySelection,
        enabled: &[String],
        now: DateTime<Utc>,
    ) -> Result<Replayed, StoreError>;

    /// Deletes one batch of finished deliveries past retention, then events
    /// no delivery refers to.
    async fn prune_batch(
        &self,
        retention: RetentionPolicy,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<Pruned, StoreError>;

    // -- views ----------------------------------------------------------------

    async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError>;

    async fn oldest_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    async fn poll_status(&self) -> Result<Vec<PollStatus>, StoreError>;

    /// One delivery with its exact payload and every attempt.
    async fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryView, String, Vec<AttemptView>)>, StoreError>;

    /// Deliveries waiting to be sent (an indexed count: cheap for /metrics).
    async fn pending_deliveries(&self) -> Result<u64, StoreError>;

    /// Per webhook: every pending delivery, and those delivered, failed or
    /// cancelled since `since` (read through the `(status, updated_at)`
    /// index, so it stays cheap with a long log).
    async fn webhook_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DeliveryCounts)>, StoreError>;

    /// One page of the delivery log, newest first.
    async fn delivery_log(&self, query: &LogQuery) -> Result<Vec<LogRow>, StoreError>;

    /// An account's events per hour and type since `since`.
    async fn events_per_hour(
        &self,
        account_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<HourCount>, StoreError>;

    /// The processes sharing the store (empty for SQLite).
    async fn instances(&self) -> Result<Vec<InstanceView>, StoreError>;

    /// Registers this process as running (or refreshes its registration),
    /// renews the claims it still holds, and forgets processes that
    /// stopped refreshing long ago. A no-op for a store one process owns.
    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// This process stops: its registration goes and its claims are given
    /// back at once instead of expiring.
    async fn leave(&self) -> Result<(), StoreError>;
}

/// A handle to the state, whichever backend holds it. Cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<dyn StateStore>);

impl Store {
    pub fn new(inner: Arc<dyn StateStore>) -> Store {
        Store(inner)
    }

    /// Opens (creating if needed) `<state_dir>/synthd.db`.
    pub fn open_sqlite(state_dir: &std::path::Path) -> Result<Store, StoreError> {
        Ok(Store(Arc::new(sqlite::SqliteStore::open(state_dir)?)))
    }

    /// Connects to a PostgreSQL store shared with other processes, and
    /// migrates it under an advisory lock.
    pub async fn connect_postgres(
        url: &str,
        pool_size: usize,
        lease: Duration,
    ) -> Result<Store, StoreError> {
        Ok(Store(Arc::new(
            postgres::PgStore::connect(url, pool_size, lease).await?,
        )))
    }
}

impl std::ops::Deref for Store {
    type Target = dyn StateStore;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// An exclusive lock on a state directory, held for the life of a `run` or
/// `sync` on SQLite so two of them never poll and deliver from one database
/// at once. The kernel drops it when the process exits, even on kill -9.
pub use sqlite::StateLock;

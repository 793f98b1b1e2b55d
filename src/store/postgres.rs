//! The PostgreSQL backend: one database shared by any number of synthd
//! processes (`run` on several VMs, plus `sync`, `replay` and the read
//! commands from anywhere). The database decides who does what:
//!
//! - A scan of one (account, resource) is claimed in `poll_state` with a
//!   lease and a fencing token that increases with every claim. Every page
//!   commit renews the lease and checks the token in the same statement, so
//!   a process that lost its claim (paused past its lease, partitioned,
//!   killed and restarted) cannot commit; a dead holder's claim simply
//!   expires and the next process takes the work. The last start of every
//!   pair is in the database, so a poll another process just made is not
//!   repeated.
//! - Deliveries are claimed with `FOR UPDATE SKIP LOCKED` and a lease; a
//!   claim that expires (its process died) makes the delivery due again
//!   without counting an attempt. Per-record order, retries, pausing and
//!   the test-send limit are rows every process reads.
//! - `account.*` events are compare-and-set on the stored fingerprint;
//!   retention runs under an advisory lock, so one process at a time.
//! - Migrations run at connect under an advisory lock; a newer schema than
//!   this binary knows is refused.
//!
//! Pages are written with `unnest` arrays: a page of 1,000 digests is a
//! handful of round trips. Times are milliseconds since the epoch, as in
//! SQLite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{
    AccountChange, AttemptOutcome, AttemptView, DeliveryCounts, DeliveryStatus, DeliveryView,
    DueDelivery, InstanceView, MAX_RETRY_GAP, NewEvent, NextStep, PAUSE_AFTER, PageRows,
    PollStatus, Pruned, ReplaySelection, Replayed, RetentionPolicy, ScanClaim, ScanEndRows,
    ScanRequest, ScanStart, StateStore, StoreError, StoredAccount, TestClaim, TestSend, from_ms,
    ms, new_delivery_id,
};
use crate::detect::{Hash, SeenIds};

#[path = "postgres_views.rs"]
mod views;

/// Schema migrations, applied in order; `synthd_schema.version` counts them.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE streams (
    id         BIGSERIAL PRIMARY KEY,
    account_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    UNIQUE (account_id, resource)
);
CREATE TABLE records (
    stream    BIGINT NOT NULL,
    record_id TEXT NOT NULL,
    hash      BYTEA NOT NULL,
    PRIMARY KEY (stream, record_id)
);
CREATE TABLE poll_state (
    stream                  BIGINT PRIMARY KEY,
    account_id              TEXT NOT NULL,
    resource                TEXT NOT NULL,
    scan_seq                BIGINT NOT NULL DEFAULT 0,
    baseline_done           BOOLEAN NOT NULL DEFAULT FALSE,
    held_scan               BIGINT,
    last_started_at         BIGINT,
    last_finished_at        BIGINT,
    last_success_at         BIGINT,
    last_success_started_at BIGINT,
    last_full_scan_at       BIGINT,
    last_error              TEXT,
    consecutive_failures    BIGINT NOT NULL DEFAULT 0,
    shape                   TEXT,
    record_count            BIGINT NOT NULL DEFAULT 0,
    claim_owner             TEXT,
    claim_token             BIGINT NOT NULL DEFAULT 0,
    claim_expires           BIGINT,
    UNIQUE (account_id, resource)
);
CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    account_id TEXT NOT NULL,
    resource   TEXT,
    record_id  TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_created ON events (created_at);
CREATE TABLE deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook_id      TEXT NOT NULL,
    order_key       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    payload         TEXT NOT NULL,
    claim_owner     TEXT,
    claim_expires   BIGINT
);
CREATE INDEX deliveries_due ON deliveries (webhook_id, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX deliveries_order ON deliveries (webhook_id, order_key, seq) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_retention ON deliveries (status, updated_at);
CREATE INDEX deliveries_status ON deliveries (status);
CREATE TABLE attempts (
    delivery_id   TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    started_at    BIGINT NOT NULL,
    status_code   INTEGER,
    duration_ms   BIGINT NOT NULL,
    response_body TEXT,
    error_kind    TEXT,
    error         TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE webhook_state (
    webhook_id    TEXT PRIMARY KEY,
    fingerprint   TEXT,
    failing_since BIGINT,
    paused_at     BIGINT,
    last_test_at  BIGINT
);
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
"#,
    // records.hash now ends with a raw-text hash (see detect::Hash); the
    // version stops an older synthd, which would compare all 32 bytes.
    r#"
COMMENT ON COLUMN records.hash IS
    '24 bytes of the canonical record''s SHA-256, then 8 bytes of its raw text''s hash';
"#,
];

/// Advisory lock keys (arbitrary, fixed): migrations, retention, replays.
pub(super) const LOCK_MIGRATE: i64 = 0x5359_4e54_4844_0001;
const LOCK_RETENTION: i64 = 0x5359_4e54_4844_0002;
const LOCK_REPLAY: i64 = 0x5359_4e54_4844_0003;

/// A baseline that leaves at least this many records in its stream runs
/// `ANALYZE records` once committed: until autovacuum gets to it, a table
/// that grew from (nearly) empty has no statistics, and the planner then
/// reads the page lookup `stream = $1 AND record_id = ANY($2)` as a scan of
/// the whole stream (27 ms instead of 1.5 ms per 1,000-id page at 200,000
/// records). Small baselines leave it to autovacuum.
const ANALYZE_AFTER: i64 = 10_000;

/// A process that has not refreshed its registration for this many leases
/// is forgotten.
const STALE_LEASES: u32 = 10;

/// A connection URL as shown: the password and every query value hidden.
pub fn redact_db_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => crate::redact::redact_url_all(&u),
        // key=value form: hide the password's value.
        Err(_) => url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This process's name in claims and in `instances`.
    owner: String,
    host: String,
    lease: Duration,
    shown: String,
    started_at: DateTime<Utc>,
}

fn lease_ms(lease: Duration) -> i64 {
    lease.as_millis().min(i64::MAX as u128) as i64
}

impl PgStore {
    /// Connects (TLS when the URL asks for it), checks the schema version
    /// and applies migrations under an advisory lock.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        lease: Duration,
    ) -> Result<PgStore, StoreError> {
        let shown = redact_db_url(url);
        let fail = |detail: String| StoreError::Postgres {
            url: shown.clone(),
            detail,
        };
        let (url, check) = tls_policy(url);
        let pg: tokio_postgres::Config = url.parse().map_err(|_| {
            fail("the connection URL does not parse (postgres://user@host:5432/db)".into())
        })?;
        let tls = tls_connector(&check).map_err(fail)?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A process paused inside a transaction (SIGSTOP, a frozen VM)
        // would keep its row locks, and with them every other process out
        // of that pair, for as long as it stays paused: the server ends
        // such a transaction once it has been idle for a lease, by when the
        // paused process's claims have lapsed anyway.
        let idle = format!(
            "SET idle_in_transaction_session_timeout = {}",
            lease_ms(lease)
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let idle = idle.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&idle)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let host = hostname();
        let store = PgStore {
            pool,
            owner: format!("{host}:{}:{}", std::process::id(), ulid::Ulid::generate()),
            host,
            lease,
            shown,
            started_at: Utc::now(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Postgres {
            url: self.shown.clone(),
            detail: crate::redact::printable(&e.to_string()).into_owned(),
        }
    }

    /// The database as shown: no password.
    pub fn describe_url(&self) -> &str {
        &self.shown
    }

    pub(super) async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self.err(pg_error(&e)),
            other => self.err(other),
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        let result = async {
            // Checked first: IF NOT EXISTS would log a server NOTICE on
            // every start.
            let exists: bool = conn
                .query_one("SELECT to_regclass('synthd_schema') IS NOT NULL", &[])
                .await?
                .get(0);
            if !exists {
                conn.batch_execute("CREATE TABLE synthd_schema (version INTEGER NOT NULL)")
                    .await?;
            }
            let version: i32 = match conn
                .query_opt("SELECT version FROM synthd_schema", &[])
                .await?
            {
                Some(row) => row.get(0),
                None => {
                    conn.execute("INSERT INTO synthd_schema (version) VALUES (0)", &[])
                        .await?;
                    0
                }
            };
            if version as usize > MIGRATIONS.len() {
                return Ok(Some(version));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let tx = conn.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "UPDATE synthd_schema SET version = $1",
                    &[&((i + 1) as i32)],
                )
                .await?;
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(None)
        }
        .await;
        let _ = conn
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE])
            .await;
        match result {
            Ok(None) => Ok(()),
            Ok(Some(found)) => Err(StoreError::NewerSchema {
                path: self.shown.clone(),
                found: i64::from(found),
                known: MIGRATIONS.len() as i64,
            }),
            Err(e) => Err(self.err(pg_error(&e))),
        }
    }

    /// The process-wide identity in claims.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a connection URL asks for TLS, read the way libpq reads it so the
/// URL that works with `psql` works here: `sslmode=disable` is plain;
/// `prefer` (the default) and `require` encrypt without checking the
/// server's certificate; `verify-ca` and `verify-full` check it against
/// `sslrootcert` when given, else the system's trust store (`require`
/// with an `sslrootcert` checks too, as in libpq).
#[derive(Debug, PartialEq)]
enum CertCheck {
    None,
    System,
    RootFile(std::path::PathBuf),
}

/// Splits what tokio-postgres cannot parse (`verify-*` modes and
/// `sslrootcert`) out of the URL. Returns the URL to hand on and how to
/// check the certificate.
fn tls_policy(url: &str) -> (String, CertCheck) {
    let mut verify = false;
    let mut root = None;
    let rewrite = |key: &str, value: &str, verify: &mut bool, root: &mut Option<String>| {
        if key == "sslmode" && (value == "verify-ca" || value == "verify-full") {
            *verify = true;
            Some(("sslmode".to_string(), "require".to_string()))
        } else if key == "sslrootcert" {
            *root = Some(value.to_string());
            None
        } else {
            Some((key.to_string(), value.to_string()))
        }
    };
    let url = match url::Url::parse(url) {
        Ok(mut u) if u.query().is_some() => {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter_map(|(k, v)| rewrite(&k, &v, &mut verify, &mut root))
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // key=value form
        Err(_) => url
            .split_whitespace()
            .filter_map(|kv| match kv.split_once('=') {
                Some((k, v)) => {
                    rewrite(k, v, &mut verify, &mut root).map(|(k, v)| format!("{k}={v}"))
                }
                None => Some(kv.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let check = match (root, verify) {
        (Some(path), _) => CertCheck::RootFile(path.into()),
        (None, true) => CertCheck::System,
        (None, false) => CertCheck::None,
    };
    (url, check)
}

fn tls_connector(check: &CertCheck) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = match check {
        CertCheck::System => builder
            .with_platform_verifier()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth(),
        CertCheck::RootFile(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        CertCheck::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=prefer`/`require`: the session is encrypted and the handshake
/// signatures are checked, but the certificate is not (libpq's meaning of
/// those modes; `verify-full` is the one that authenticates the server).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server's own message for a database error (the Display of
/// tokio-postgres says only "db error").
pub(super) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => crate::net::error_chain(e),
    }
}

fn status_of(text: &str) -> DeliveryStatus {
    DeliveryStatus::parse(text).unwrap_or(DeliveryStatus::Failed)
}

fn delivery_view(r: &Row) -> DeliveryView {
    DeliveryView {
        id: r.get(0),
        event_id: r.get(1),
        event_type: r.get(2),
        webhook_id: r.get(3),
        status: status_of(r.get(4)),
        attempts: r.get::<_, i32>(5).max(0) as u32,
        created_at: from_ms(r.get(6)),
        updated_at: from_ms(r.get(7)),
        next_attempt_at: r.get::<_, Option<i64>>(8).map(from_ms),
        last_status: r.get::<_, Option<i32>>(9).map(|s| s as u16),
        last_error: r.get(10),
    }
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, e.type, d.webhook_id, d.status, d.attempts, d.created_at,
     d.updated_at, d.next_attempt_at, d.last_status, d.last_error";

/// Writes events and their pending deliveries (due when the event was
/// created) with one `unnest` insert each.
async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[NewEvent],
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut types = Vec::new();
    let mut accounts = Vec::new();
    let mut resources: Vec<Option<String>> = Vec::new();
    let mut records: Vec<Option<String>> = Vec::new();
    let mut created = Vec::new();
    let (mut d_ids, mut d_events, mut d_hooks, mut d_keys, mut d_due, mut d_payloads) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for e in events {
        let row = &e.event;
        ids.push(row.id.clone());
        types.push(row.event_type.clone());
        accounts.push(row.account_id.clone());
        resources.push(row.resource.clone());
        records.push(row.record_id.clone());
        created.push(ms(row.created_at));
        for d in &e.deliveries {
            d_ids.push(d.id.clone());
            d_events.push(row.id.clone());
            d_hooks.push(d.webhook_id.clone());
            d_keys.push(d.order_key.clone());
            d_due.push(ms(row.created_at));
            d_payloads.push(d.payload.clone());
        }
    }
    tx.execute(
        "INSERT INTO events (id, type, account_id, resource, record_id, created_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])",
        &[&ids, &types, &accounts, &resources, &records, &created],
    )
    .await?;
    if !d_ids.is_empty() {
        tx.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, next_attempt_at,
                 created_at, updated_at, payload)
             SELECT i, e, w, k, 'pending', t, t, t, p
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
                  AS x(i, e, w, k, t, p)",
            &[&d_ids, &d_events, &d_hooks, &d_keys, &d_due, &d_payloads],
        )
        .await?;
    }
    Ok(())
}

impl PgStore {
    /// Renews the scan's claim and checks its fencing token. `Err(LostClaim)`
    /// when another process holds the pair now.
    async fn fence(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        scan: &ScanStart,
        created: i64,
    ) -> Result<(), StoreError> {
        let now = ms(Utc::now());
        let n = tx
            .execute(
                "UPDATE poll_state SET claim_expires = $3::BIGINT + $4::BIGINT, record_count = record_count + $5
                 WHERE stream = $1 AND claim_token = $2 AND claim_owner = $6",
                &[
                    &scan.stream,
                    &scan.fence,
                    &now,
                    &lease_ms(self.lease),
                    &created,
                    &self.owner,
                ],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        if n == 0 {
            return Err(StoreError::LostClaim {
                account: scan.account_id.clone(),
                resource: scan.resource.clone(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for PgStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn ensure_hash_scheme(&self, scheme: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
                .await?;
            let old: Option<String> = tx
                .query_opt("SELECT value FROM meta WHERE key = 'hash_scheme'", &[])
                .await?
                .map(|r| r.get(0));
            let changed = old.as_deref().is_some_and(|o| o != scheme);
            if changed {
                tx.execute(
                    "UPDATE poll_state SET baseline_done = FALSE, held_scan = NULL",
                    &[],
                )
                .await?;
            }
            if old.as_deref() != Some(scheme) {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('hash_scheme', $1)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&scheme],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(changed)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn stored_accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT id, provider, fingerprint FROM accounts ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| StoredAccount {
                id: r.get(0),
                provider: r.get(1),
                fingerprint: r.get(2),
            })
            .collect())
    }

    async fn apply_account_changes(
        &self,
        changes: &[AccountChange],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            let mut applied = Vec::new();
            for c in changes {
                let current: Option<String> = tx
                    .query_opt(
                        "SELECT fingerprint FROM accounts WHERE id = $1 FOR UPDATE",
                        &[&c.id],
                    )
                    .await?
                    .map(|r| r.get(0));
                if current != c.expected {
                    continue;
                }
                match &c.new {
                    Some(a) if current.is_none() => {
                        let n = tx
                            .execute(
                                "INSERT INTO accounts (id, provider, fingerprint, created_at, updated_at)
                                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING",
                                &[&a.id, &a.provider, &a.fingerprint, &ms(now)],
                            )
                            .await?;
                        // Another process inserted it first: its event.
                        if n == 0 {
                            continue;
                        }
                    }
                    Some(a) => {
                        tx.execute(
                            "UPDATE accounts SET provider = $2, fingerprint = $3, updated_at = $4 WHERE id = $1",
                            &[&a.id, &a.provider, &a.fingerprint, &ms(now)],
                        )
                        .await?;
                    }
                    None => {
                        for sql in [
                            "DELETE FROM records WHERE stream IN (SELECT id FROM streams WHERE account_id = $1)",
                            "DELETE FROM poll_state WHERE account_id = $1",
                            "DELETE FROM streams WHERE account_id = $1",
                            "DELETE FROM accounts WHERE id = $1",
                        ] {
                            tx.execute(sql, &[&c.id]).await?;
                        }
                    }
                }
                insert_events(&tx, std::slice::from_ref(&c.event)).await?;
                applied.push(c.id.clone());
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(applied)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn reconcile_webhooks(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            let mut resumed = Vec::new();
            for (id, fp) in fingerprints {
                let old = tx
                    .query_opt(
                        "SELECT fingerprint, paused_at IS NOT NULL FROM webhook_state WHERE webhook_id = $1 FOR UPDATE",
                        &[id],
                    )
                    .await?;
                match old {
                    None => {
                        tx.execute(
                            "INSERT INTO webhook_state (webhook_id, fingerprint) VALUES ($1, $2)
                             ON CONFLICT (webhook_id) DO NOTHING",
                            &[id, fp],
                        )
                        .await?;
                    }
                    Some(row) => {
                        let (old_fp, paused): (Option<String>, bool) = (row.get(0), row.get(1));
                        if old_fp.as_deref() == Some(fp.as_str()) {
                            continue;
                        }
                        tx.execute(
                            "UPDATE webhook_state SET fingerprint = $2 WHERE webhook_id = $1",
                            &[id, fp],
                        )
                        .await?;
                        if paused && old_fp.is_some() {
                            tx.execute(
                                "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL WHERE webhook_id = $1",
                                &[id],
                            )
                            .await?;
                            resumed.push(id.clone());
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(resumed)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn cancel_orphans(&self, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let keep: Vec<String> = keep.to_vec();
        conn.execute(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $2,
                 last_error = 'webhook removed from the config', claim_owner = NULL, claim_expires = NULL
             WHERE status = 'pending' AND NOT (webhook_id = ANY($1))",
            &[&keep, &ms(now)],
        )
        .await
        .map_err(|e| self.err(pg_error(&e)))
    }

    async fn begin_scan(&self, req: &ScanRequest) -> Result<ScanClaim, StoreError> {
        let mut conn = self.conn().await?;
        let now = ms(req.now);
        let run = async {
            let tx = conn.transaction().await?;
            tx.execute(
                "INSERT INTO streams (account_id, resource) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&req.account_id, &req.resource],
            )
            .await?;
            let stream: i64 = tx
                .query_one(
                    "SELECT id FROM streams WHERE account_id = $1 AND resource = $2",
                    &[&req.account_id, &req.resource],
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO poll_state (stream, account_id, resource) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&stream, &req.account_id, &req.resource],
            )
            .await?;
            let state = tx
                .query_one(
                    "SELECT claim_owner, claim_expires, last_started_at, shape, last_finished_at FROM poll_state
                     WHERE stream = $1 FOR UPDATE",
                    &[&stream],
                )
                .await?;
            let (holder, expires, last_started, old_shape, last_finished): (
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<String>,
                Option<i64>,
            ) = (
                state.get(0),
                state.get(1),
                state.get(2),
                state.get(3),
                state.get(4),
            );
            if let (Some(h), Some(x)) = (&holder, expires)
                && x > now
                && h != &self.owner
            {
                return Ok(ScanClaim::Busy {
                    holder: h.clone(),
                    until: from_ms(x),
                });
            }
            // Only a scan that ended (finished or failed) counts as done: one
            // whose holder died mid-scan is taken over once its claim lapses.
            // A start later than now comes from a wrong clock, and is not
            // trusted; "now" is read here, after the row lock, since another
            // process may have started and finished this pair while the
            // caller waited for a connection or the lock.
            if let (Some(after), Some(last)) = (req.skip_if_started_after, last_started)
                && last > ms(after)
                && last <= now.max(ms(Utc::now()))
                && last_finished.is_some_and(|f| f >= last)
            {
                return Ok(ScanClaim::Done {
                    last_started_at: from_ms(last),
                });
            }
            let reshaped = old_shape.as_deref().is_some_and(|o| o != req.shape);
            let row = tx
                .query_one(
                    "UPDATE poll_state SET scan_seq = scan_seq + 1, last_started_at = $2, shape = $3,
                         claim_owner = $4, claim_token = claim_token + 1, claim_expires = $2::BIGINT + $5::BIGINT,
                         baseline_done = CASE WHEN $6::BOOLEAN THEN FALSE ELSE baseline_done END,
                         held_scan = CASE WHEN $6::BOOLEAN THEN NULL ELSE held_scan END
                     WHERE stream = $1
                     RETURNING scan_seq, claim_token, baseline_done, held_scan, last_success_started_at,
                         last_full_scan_at, record_count",
                    &[&stream, &now, &req.shape, &self.owner, &lease_ms(self.lease), &reshaped],
                )
                .await?;
            tx.commit().await?;
            let last_full_scan_at = row.get::<_, Option<i64>>(5).map(from_ms);
            Ok::<_, tokio_postgres::Error>(ScanClaim::Started(ScanStart {
                stream,
                account_id: req.account_id.clone(),
                resource: req.resource.clone(),
                scan: row.get(0),
                fence: row.get(1),
                baseline_done: row.get(2),
                held: row.get::<_, Option<i64>>(3).is_some(),
                last_success_started_at: row.get::<_, Option<i64>>(4).map(from_ms),
                first_baseline: last_full_scan_at.is_none(),
                last_full_scan_at,
                started_at: req.now,
                known_before: row.get::<_, i64>(6).max(0) as u64,
                reshaped,
            }))
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn stored_hashes(
        &self,
        scan: &ScanStart,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Hash>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        // Providers mostly list records in id order, so a page's ids sit
        // together in the index: one range scan between the smallest and
        // the largest (in the column's own collation) reads them for a
        // fraction of a descent per id. When the range holds many other
        // records (ids scattered), each id is looked up instead.
        let limit = (ids.len() * 2 + 16) as i64;
        let mut rows = conn
            .query(
                "SELECT record_id, hash FROM records WHERE stream = $1
                   AND record_id >= (SELECT min(i) FROM unnest($2::text[]) i)
                   AND record_id <= (SELECT max(i) FROM unnest($2::text[]) i)
                 LIMIT $3",
                &[&scan.stream, &ids, &limit],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        if rows.len() as i64 >= limit {
            rows = conn
                .query(
                    "SELECT record_id, hash FROM records WHERE stream = $1 AND record_id = ANY($2)",
                    &[&scan.stream, &ids],
                )
                .await
                .map_err(|e| self.err(pg_error(&e)))?;
        }
        let found: HashMap<String, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        // An id may be asked for twice (repeated on one page): each gets it.
        ids.iter()
            .map(|id| {
                found
                    .get(id)
                    .cloned()
                    .map(|h| {
                        h.try_into().map_err(|b: Vec<u8>| StoreError::Corrupt {
                            path: self.shown.clone(),
                            detail: format!(
                                "the stored hash of record {id:?} is {} bytes, not 32",
                                b.len()
                            ),
                        })
                    })
                    .transpose()
            })
            .collect()
    }

    async fn commit_page(&self, scan: &ScanStart, rows: PageRows) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        // Renews the lease even for an unchanged page, and refuses a commit
        // from a process that lost its claim.
        self.fence(&tx, scan, rows.created as i64).await?;
        let run = async {
            if rows.upserts.is_empty() && rows.events.is_empty() {
                // An unchanged page writes nothing but the lease renewal,
                // which a crash may lose harmlessly: no WAL flush to wait for.
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
            }
            if !rows.upserts.is_empty() {
                let (ids, hashes): (Vec<&str>, Vec<&[u8]>) = rows
                    .upserts
                    .iter()
                    .map(|(id, h)| (id.as_str(), &h[..]))
                    .unzip();
                tx.execute(
                    "INSERT INTO records (stream, record_id, hash)
                     SELECT $1, i, h FROM unnest($2::text[], $3::bytea[]) AS x(i, h)
                     ON CONFLICT (stream, record_id) DO UPDATE SET hash = EXCLUDED.hash",
                    &[&scan.stream, &ids, &hashes],
                )
                .await?;
            }
            insert_events(&tx, &rows.events).await?;
            tx.commit().await
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn missing_ids(
        &self,
        scan: &ScanStart,
        seen: Arc<SeenIds>,
    ) -> Result<Vec<String>, StoreError> {
        use futures_util::TryStreamExt as _;
        let conn = self.conn().await?;
        // Streamed, not collected: a million ids pass through, the few
        // missing ones stay.
        let params: [&(dyn ToSql + Sync); 1] = [&scan.stream];
        let rows = conn
            .query_raw("SELECT record_id FROM records WHERE stream = $1", params)
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        futures_util::pin_mut!(rows);
        let mut missing = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(pg_error(&e)))? {
            let id: &str = row.get(0);
            if !seen.contains(id) {
                missing.push(id.to_string());
            }
        }
        Ok(missing)
    }

    async fn finish_scan(&self, scan: &ScanStart, end: ScanEndRows) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        self.fence(&tx, scan, 0).await?;
        let run = async {
            if !end.deletes.is_empty() {
                let n = tx
                    .execute(
                        "DELETE FROM records WHERE stream = $1 AND record_id = ANY($2)",
                        &[&scan.stream, &end.deletes],
                    )
                    .await?;
                tx.execute(
                    "UPDATE poll_state SET record_count = GREATEST(record_count - $2, 0) WHERE stream = $1",
                    &[&scan.stream, &(n as i64)],
                )
                .await?;
            }
            insert_events(&tx, &end.events).await?;
            if end.full {
                tx.execute(
                    "UPDATE poll_state SET baseline_done = TRUE, last_full_scan_at = $2, held_scan = $3 WHERE stream = $1",
                    &[&scan.stream, &ms(scan.started_at), &end.held.then_some(scan.scan)],
                )
                .await?;
            }
            let records: i64 = tx
                .query_one(
                    "UPDATE poll_state SET last_finished_at = $2, last_success_at = $2, last_success_started_at = $3,
                         last_error = NULL, consecutive_failures = 0, claim_owner = NULL, claim_expires = NULL
                     WHERE stream = $1 RETURNING record_count",
                    &[&scan.stream, &ms(end.finished_at), &ms(scan.started_at)],
                )
                .await?
                .get(0);
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(records)
        };
        let records = run.await.map_err(|e| self.err(pg_error(&e)))?;
        if !scan.baseline_done
            && records >= ANALYZE_AFTER
            && let Err(e) = conn.batch_execute("ANALYZE records").await
        {
            // The scan is committed; only the planner's statistics wait
            // for autovacuum.
            tracing::warn!(error = %self.err(pg_error(&e)), "ANALYZE records after a large baseline failed");
        }
        Ok(())
    }

    async fn fail_scan(
        &self,
        scan: &ScanStart,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        // Only the holder records its failure; a process that lost the
        // claim has nothing to say about the pair any more.
        conn.execute(
            "UPDATE poll_state SET last_finished_at = $3, last_error = $4,
                 consecutive_failures = consecutive_failures + 1, held_scan = NULL,
                 claim_owner = NULL, claim_expires = NULL
             WHERE stream = $1 AND claim_token = $2 AND claim_owner = $5",
            &[&scan.stream, &scan.fence, &ms(now), &error, &self.owner],
        )
        .await
        .map_err(|e| self.err(pg_error(&e)))?;
        Ok(())
    }

    async fn last_poll_starts(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT account_id, MIN(last_started_at) FROM poll_state
                 WHERE last_started_at IS NOT NULL GROUP BY account_id
                 HAVING bool_and(last_finished_at >= last_started_at)",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows.iter().map(|r| (r.get(0), from_ms(r.get(1)))).collect())
    }

    async fn due_deliveries(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let conn = self.conn().await?;
        let now = ms(now);
        let rows = conn
            .query(
                "UPDATE deliveries SET claim_owner = $4, claim_expires = $2::BIGINT + $5::BIGINT
                 WHERE seq IN (
                     SELECT d.seq FROM deliveries d
                     WHERE d.status = 'pending' AND d.webhook_id = $1
                       AND (d.next_attempt_at <= $2 OR d.next_attempt_at > $2::BIGINT + $3::BIGINT)
                       AND (d.claim_expires IS NULL OR d.claim_expires < $2 OR d.claim_owner = $4)
                       AND NOT EXISTS (
                           SELECT 1 FROM deliveries p
                           WHERE p.webhook_id = d.webhook_id AND p.order_key = d.order_key
                             AND p.status = 'pending' AND p.seq < d.seq)
                     ORDER BY d.next_attempt_at, d.seq
                     LIMIT $6
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, event_id, webhook_id, attempts, payload, next_attempt_at, seq",
                &[
                    &webhook_id,
                    &now,
                    &(MAX_RETRY_GAP.as_millis() as i64),
                    &self.owner,
                    &lease_ms(self.lease),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        let mut due: Vec<(i64, i64, DueDelivery)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, Option<i64>>(5).unwrap_or(0),
                    r.get(6),
                    DueDelivery {
                        id: r.get(0),
                        event_id: r.get(1),
                        webhook_id: r.get(2),
                        attempts_made: r.get::<_, i32>(3).max(0) as u32,
                        payload: r.get(4),
                    },
                )
            })
            .collect();
        due.sort_by_key(|(at, seq, _)| (*at, *seq));
        Ok(due.into_iter().map(|(_, _, d)| d).collect())
    }

    async fn record_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<String>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            let mut paused = Vec::new();
            for o in outcomes {
                let a = &o.attempt;
                let at = ms(a.started_at);
                let (status, next_at) = match o.next {
                    NextStep::Delivered => (DeliveryStatus::Delivered, None),
                    NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(ms(t))),
                    NextStep::Failed => (DeliveryStatus::Failed, None),
                };
                // A claim that expired and was taken by another process:
                // that process's attempt counts, not this one; nor does a
                // stale attempt (a paused process resumed) once another
                // process has recorded an attempt of the same number.
                let n = tx
                    .execute(
                        "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4, updated_at = $5,
                             last_status = $6, last_error = $7, claim_owner = NULL, claim_expires = NULL
                         WHERE id = $1 AND (claim_owner IS NULL OR claim_owner = $8) AND attempts < $3",
                        &[
                            &o.delivery_id,
                            &status.as_str(),
                            &(a.number as i32),
                            &next_at,
                            &at,
                            &a.status_code.map(i32::from),
                            &a.error,
                            &self.owner,
                        ],
                    )
                    .await?;
                if n == 0 {
                    continue;
                }
                tx.execute(
                    "INSERT INTO attempts (delivery_id, attempt, started_at, status_code, duration_ms,
                         response_body, error_kind, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (delivery_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
                         status_code = EXCLUDED.status_code, duration_ms = EXCLUDED.duration_ms,
                         response_body = EXCLUDED.response_body, error_kind = EXCLUDED.error_kind,
                         error = EXCLUDED.error",
                    &[
                        &o.delivery_id,
                        &(a.number as i32),
                        &at,
                        &a.status_code.map(i32::from),
                        &(a.duration_ms as i64),
                        &a.response_body,
                        &a.error_kind,
                        &a.error,
                    ],
                )
                .await?;
                if o.next == NextStep::Delivered {
                    tx.execute(
                        "INSERT INTO webhook_state (webhook_id) VALUES ($1)
                         ON CONFLICT (webhook_id) DO UPDATE SET failing_since = NULL",
                        &[&o.webhook_id],
                    )
                    .await?;
                } else {
                    tx.execute(
                        "INSERT INTO webhook_state (webhook_id, failing_since) VALUES ($1, $2)
                         ON CONFLICT (webhook_id) DO UPDATE SET failing_since =
                             CASE WHEN webhook_state.failing_since IS NULL OR webhook_state.failing_since > $2
                                  THEN $2 ELSE webhook_state.failing_since END",
                        &[&o.webhook_id, &at],
                    )
                    .await?;
                    let n = tx
                        .execute(
                            "UPDATE webhook_state SET paused_at = $2
                             WHERE webhook_id = $1 AND paused_at IS NULL AND failing_since <= $3",
                            &[&o.webhook_id, &at, &(at - PAUSE_AFTER.as_millis() as i64)],
                        )
                        .await?;
                    if n > 0 {
                        paused.push(o.webhook_id.clone());
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(paused)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn release_deliveries(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE deliveries SET claim_owner = NULL, claim_expires = NULL
             WHERE id = ANY($1) AND claim_owner = $2 AND status = 'pending'",
            &[&ids, &self.owner],
        )
        .await
        .map_err(|e| self.err(pg_error(&e)))?;
        Ok(())
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(row.get::<_, Option<i64>>(0).map(from_ms))
    }

    async fn paused_webhooks(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT webhook_id, paused_at FROM webhook_state WHERE paused_at IS NOT NULL ORDER BY webhook_id",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows.iter().map(|r| (r.get(0), from_ms(r.get(1)))).collect())
    }

    async fn resume_webhook(&self, webhook_id: &str) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL
                 WHERE webhook_id = $1 AND paused_at IS NOT NULL",
                &[&webhook_id],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(n > 0)
    }

    async fn claim_test_send(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> Result<TestClaim, StoreError> {
        let mut conn = self.conn().await?;
        let gap = min_gap.as_millis() as i64;
        let now = ms(now);
        let run = async {
            let tx = conn.transaction().await?;
            tx.execute(
                "INSERT INTO webhook_state (webhook_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&webhook_id],
            )
            .await?;
            let last: Option<i64> = tx
                .query_one(
                    "SELECT last_test_at FROM webhook_state WHERE webhook_id = $1 FOR UPDATE",
                    &[&webhook_id],
                )
                .await?
                .get(0);
            // A last test in the future was written by a wrong clock.
            if let Some(last) = last
                && last <= now
                && now - last < gap
            {
                let wait = (last + gap - now).max(0) as u64;
                return Ok(TestClaim::TooSoon(Duration::from_millis(wait)));
            }
            tx.execute(
                "UPDATE webhook_state SET last_test_at = $2 WHERE webhook_id = $1",
                &[&webhook_id, &now],
            )
            .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(TestClaim::Granted)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn record_test_send(&self, send: &TestSend) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let a = &send.attempt;
        let at = ms(a.started_at);
        let status = if send.delivered {
            DeliveryStatus::Delivered
        } else {
            DeliveryStatus::Failed
        };
        let d = &send.delivery;
        let run = async {
            let tx = conn.transaction().await?;
            tx.execute(
                "INSERT INTO events (id, type, account_id, created_at) VALUES ($1, $2, '', $3)",
                &[
                    &send.event.id,
                    &send.event.event_type,
                    &ms(send.event.created_at),
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, attempts, created_at,
                     updated_at, last_status, last_error, payload)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8, $9)",
                &[
                    &d.id,
                    &send.event.id,
                    &d.webhook_id,
                    &d.order_key,
                    &status.as_str(),
                    &at,
                    &a.status_code.map(i32::from),
                    &a.error,
                    &d.payload,
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO attempts (delivery_id, attempt, started_at, status_code, duration_ms, response_body,
                     error_kind, error)
                 VALUES ($1, 1, $2, $3, $4, $5, $6, $7)",
                &[
                    &d.id,
                    &at,
                    &a.status_code.map(i32::from),
                    &(a.duration_ms as i64),
                    &a.response_body,
                    &a.error_kind,
                    &a.error,
                ],
            )
            .await?;
            tx.commit().await
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn replay(
        &self,
        sel: &ReplaySelection,
        enabled: &[String],
        now: DateTime<Utc>,
    ) -> Result<Replayed, StoreError> {
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            // One replay at a time across processes, so "already pending"
            // holds between the check and the insert.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_REPLAY])
                .await?;
            let picked = tx
                .query(
                    "SELECT d.event_id, d.webhook_id, d.order_key, d.payload
                     FROM deliveries d JOIN events e ON e.id = d.event_id
                     WHERE d.seq IN (
                         SELECT MAX(d2.seq) FROM deliveries d2 JOIN events e2 ON e2.id = d2.event_id
                         WHERE ($1::text IS NULL OR d2.event_id = $1)
                           AND ($2::int8 IS NULL OR e2.created_at >= $2)
                           AND ($3::int8 IS NULL OR e2.created_at < $3)
                           AND ($4::text IS NULL OR d2.webhook_id = $4)
                           AND ($5::text IS NULL OR d2.status = $5)
                         GROUP BY d2.event_id, d2.webhook_id)
                     ORDER BY e.seq",
                    &[
                        &sel.event_id,
                        &sel.since.map(ms),
                        &sel.until.map(ms),
                        &sel.webhook,
                        &sel.status.map(DeliveryStatus::as_str),
                    ],
                )
                .await?;
            let mut done = Replayed::default();
            for row in picked {
                let (event_id, webhook_id, order_key, payload): (String, String, String, String) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                if !enabled.contains(&webhook_id) {
                    done.skipped += 1;
                    continue;
                }
                let pending: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM deliveries
                         WHERE event_id = $1 AND webhook_id = $2 AND status = 'pending')",
                        &[&event_id, &webhook_id],
                    )
                    .await?
                    .get(0);
                if pending {
                    done.already_pending += 1;
                    continue;
                }
                tx.execute(
                    "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, next_attempt_at,
                         created_at, updated_at, payload)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $6)",
                    &[&new_delivery_id(), &event_id, &webhook_id, &order_key, &ms(now), &payload],
                )
                .await?;
                done.queued += 1;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(done)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn prune_batch(
        &self,
        retention: RetentionPolicy,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let mut conn = self.conn().await?;
        let run = async {
            let tx = conn.transaction().await?;
            // One process prunes at a time; the others find nothing to do.
            let mine: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_RETENTION])
                .await?
                .get(0);
            let mut pruned = Pruned::default();
            if !mine {
                return Ok(pruned);
            }
            for (status, keep) in [
                (DeliveryStatus::Delivered, retention.delivered),
                (DeliveryStatus::Failed, retention.failed),
                (DeliveryStatus::Cancelled, retention.failed),
            ] {
                let cutoff = ms(now) - keep.as_millis() as i64;
                let ids: Vec<String> = tx
                    .query(
                        "SELECT id FROM deliveries WHERE status = $1 AND updated_at < $2 LIMIT $3",
                        &[&status.as_str(), &cutoff, &(batch as i64)],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                tx.execute("DELETE FROM attempts WHERE delivery_id = ANY($1)", &[&ids])
                    .await?;
                tx.execute("DELETE FROM deliveries WHERE id = ANY($1)", &[&ids])
                    .await?;
                pruned.deliveries += ids.len() as u64;
            }
            let cutoff = ms(now) - retention.delivered.min(retention.failed).as_millis() as i64;
            pruned.events = tx
                .execute(
                    "DELETE FROM events WHERE seq IN (
                         SELECT seq FROM events e WHERE e.created_at < $1
                           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                         LIMIT $2)",
                    &[&cutoff, &(batch as i64)],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(pruned)
        };
        run.await.map_err(|e| self.err(pg_error(&e)))
    }

    async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        let mut counts = DeliveryCounts::default();
        for r in rows {
            counts.add(status_of(r.get(0)), r.get::<_, i64>(1).max(0) as u64);
        }
        Ok(counts)
    }

    async fn oldest_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT MIN(created_at) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(row.get::<_, Option<i64>>(0).map(from_ms))
    }

    async fn poll_status(&self) -> Result<Vec<PollStatus>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT account_id, resource, last_started_at, last_success_at, last_error,
                        baseline_done, consecutive_failures, record_count
                 FROM poll_state ORDER BY account_id, resource",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| PollStatus {
                account_id: r.get(0),
                resource: r.get(1),
                last_started_at: r.get::<_, Option<i64>>(2).map(from_ms),
                last_success_at: r.get::<_, Option<i64>>(3).map(from_ms),
                last_error: r.get(4),
                baseline_done: r.get(5),
                consecutive_failures: r.get::<_, i64>(6).max(0) as u64,
                records: r.get::<_, i64>(7).max(0) as u64,
            })
            .collect())
    }

    async fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryView, String, Vec<AttemptView>)>, StoreError> {
        let conn = self.conn().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, d.payload FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id = $1"
        );
        let Some(row) = conn
            .query_opt(&sql, &[&id])
            .await
            .map_err(|e| self.err(pg_error(&e)))?
        else {
            return Ok(None);
        };
        let attempts = conn
            .query(
                "SELECT attempt, started_at, status_code, duration_ms, response_body, error_kind, error
                 FROM attempts WHERE delivery_id = $1 ORDER BY attempt",
                &[&id],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?
            .iter()
            .map(|r| AttemptView {
                attempt: r.get::<_, i32>(0).max(0) as u32,
                started_at: from_ms(r.get(1)),
                status_code: r.get::<_, Option<i32>>(2).map(|s| s as u16),
                duration_ms: r.get::<_, i64>(3).max(0) as u64,
                response_body: r.get(4),
                error_kind: r.get(5),
                error: r.get(6),
            })
            .collect();
        Ok(Some((delivery_view(&row), row.get(11), attempts)))
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.view_pending_deliveries().await
    }

    async fn webhook_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DeliveryCounts)>, StoreError> {
        self.view_webhook_counts(since).await
    }

    async fn delivery_log(
        &self,
        query: &super::LogQuery,
    ) -> Result<Vec<super::LogRow>, StoreError> {
        self.view_delivery_log(query).await
    }

    async fn events_per_hour(
        &self,
        account_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::HourCount>, StoreError> {
        self.view_events_per_hour(account_id, since).await
    }

    async fn instances(&self) -> Result<Vec<InstanceView>, StoreError> {
        let conn = self.conn().await?;
        let now = ms(Utc::now());
        let rows = conn
            .query(
                "SELECT i.id, i.host, i.pid, i.version, i.started_at, i.heartbeat_at,
                        (SELECT COUNT(*) FROM poll_state p WHERE p.claim_owner = i.id AND p.claim_expires > $1)
                      + (SELECT COUNT(*) FROM deliveries d WHERE d.claim_owner = i.id AND d.claim_expires > $1
                           AND d.status = 'pending')
                 FROM instances i ORDER BY i.started_at",
                &[&now],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| InstanceView {
                id: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i32>(2).max(0) as u32,
                version: r.get(3),
                started_at: from_ms(r.get(4)),
                heartbeat_at: from_ms(r.get(5)),
                claims: r.get::<_, i64>(6).max(0) as u64,
            })
            .collect())
    }

    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
            &[
                &self.owner,
                &self.host,
                &(std::process::id() as i32),
                &env!("CARGO_PKG_VERSION"),
                &ms(self.started_at),
                &ms(now),
            ],
        )
        .await
        .map_err(|e| self.err(pg_error(&e)))?;
        // A live process keeps what it holds: a scan waiting on a slow
        // provider, deliveries queued behind the webhook's concurrency.
        // Only claims still valid are renewed; a lapsed one may be
        // another's already (and its owner column says so). A row locked
        // right now is being committed or recorded, which settles or renews
        // its claim: it is skipped, as waiting for it while holding the
        // others' locks deadlocks with a batch that locks them in another
        // order.
        let until = ms(now) + lease_ms(self.lease);
        for sql in [
            "UPDATE poll_state SET claim_expires = $3 WHERE stream IN (
                 SELECT stream FROM poll_state WHERE claim_owner = $1 AND claim_expires > $2
                 FOR UPDATE SKIP LOCKED)",
            "UPDATE deliveries SET claim_expires = $3 WHERE seq IN (
                 SELECT seq FROM deliveries WHERE claim_owner = $1 AND claim_expires > $2
                 FOR UPDATE SKIP LOCKED)",
        ] {
            conn.execute(sql, &[&self.owner, &ms(now), &until])
                .await
                .map_err(|e| self.err(pg_error(&e)))?;
        }
        let stale = ms(now) - lease_ms(self.lease) * i64::from(STALE_LEASES);
        conn.execute("DELETE FROM instances WHERE heartbeat_at < $1", &[&stale])
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(())
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        for sql in [
            "UPDATE poll_state SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = $1",
            "UPDATE deliveries SET claim_owner = NULL, claim_expires = NULL WHERE claim_owner = $1",
            "DELETE FROM instances WHERE id = $1",
        ] {
            conn.execute(sql, &[&self.owner])
                .await
                .map_err(|e| self.err(pg_error(&e)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_urls_are_shown_without_their_password() {
        assert_eq!(
            redact_db_url("postgres://synthd:hunter2@db.example:5432/synthd?sslmode=require"),
            "postgres://synthd:***@db.example:5432/synthd?sslmode=***"
        );
        assert_eq!(
            redact_db_url("host=db user=synthd password=hunter2 dbname=synthd"),
            "host=db user=synthd password=*** dbname=synthd"
        );
    }

    #[test]
    fn sslmodes_read_as_libpq_reads_them() {
        assert_eq!(
            tls_policy("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), CertCheck::None)
        );
        assert_eq!(
            tls_policy("postgres://u@h/db?sslmode=require&application_name=x"),
            (
                "postgres://u@h/db?sslmode=require&application_name=x".to_string(),
                CertCheck::None
            )
        );
        assert_eq!(
            tls_policy("postgres://u@h/db?sslmode=verify-full"),
            (
                "postgres://u@h/db?sslmode=require".to_string(),
                CertCheck::System
            )
        );
        assert_eq!(
            tls_policy("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u@h/db?sslmode=require".to_string(),
                CertCheck::RootFile("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            tls_policy("host=h sslmode=verify-full sslrootcert=/ca.pem dbname=d"),
            (
                "host=h sslmode=require dbname=d".to_string(),
                CertCheck::RootFile("/ca.pem".into())
            )
        );
        // what is handed on parses
        for url in [
            "postgres://u@h/db?sslmode=verify-full",
            "host=h sslmode=verify-ca dbname=d",
        ] {
            let (url, _) = tls_policy(url);
            assert!(url.parse::<tokio_postgres::Config>().is_ok(), "{url}");
        }
    }
}

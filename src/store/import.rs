//! `synthd store import`: moving one VM's SQLite state into a shared
//! PostgreSQL store, so scaling out neither re-baselines a resource nor
//! loses a pending delivery.
//!
//! Everything the next poll and the next delivery need is copied as it is:
//! record hashes, poll state (baselines, held deletions, full-scan times),
//! account and webhook fingerprints, the hash scheme, events, deliveries in
//! every state with their attempts. Row ids and sequence numbers are kept,
//! so per-record delivery order holds. The copy is one PostgreSQL
//! transaction (binary `COPY`, so a million records take seconds): it
//! lands whole or not at all, and a target that already holds state is
//! refused.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::{SqliteStore, StateLock};

/// One table to copy: the SQLite query (columns in the PostgreSQL table's
/// order) and the PostgreSQL columns with their types.
struct Table {
    name: &'static str,
    select: &'static str,
    columns: &'static [(&'static str, Type)],
}

const TABLES: &[Table] = &[
    Table {
        name: "meta",
        select: "SELECT key, value FROM meta",
        columns: &[("key", Type::TEXT), ("value", Type::TEXT)],
    },
    Table {
        name: "accounts",
        select: "SELECT id, provider, fingerprint, created_at, updated_at FROM accounts",
        columns: &[
            ("id", Type::TEXT),
            ("provider", Type::TEXT),
            ("fingerprint", Type::TEXT),
            ("created_at", Type::INT8),
            ("updated_at", Type::INT8),
        ],
    },
    Table {
        name: "streams",
        select: "SELECT id, account_id, resource FROM streams",
        columns: &[
            ("id", Type::INT8),
            ("account_id", Type::TEXT),
            ("resource", Type::TEXT),
        ],
    },
    Table {
        name: "records",
        select: "SELECT stream, record_id, hash FROM records",
        columns: &[
            ("stream", Type::INT8),
            ("record_id", Type::TEXT),
            ("hash", Type::BYTEA),
        ],
    },
    Table {
        name: "poll_state",
        select: "SELECT s.id, p.account_id, p.resource, p.scan_seq, p.baseline_done, p.held_scan,
                        p.last_started_at, p.last_finished_at, p.last_success_at,
                        p.last_success_started_at, p.last_full_scan_at, p.last_error,
                        p.consecutive_failures, p.shape, p.record_count
                 FROM poll_state p JOIN streams s
                   ON s.account_id = p.account_id AND s.resource = p.resource",
        columns: &[
            ("stream", Type::INT8),
            ("account_id", Type::TEXT),
            ("resource", Type::TEXT),
            ("scan_seq", Type::INT8),
            ("baseline_done", Type::BOOL),
            ("held_scan", Type::INT8),
            ("last_started_at", Type::INT8),
            ("last_finished_at", Type::INT8),
            ("last_success_at", Type::INT8),
            ("last_success_started_at", Type::INT8),
            ("last_full_scan_at", Type::INT8),
            ("last_error", Type::TEXT),
            ("consecutive_failures", Type::INT8),
            ("shape", Type::TEXT),
            ("record_count", Type::INT8),
        ],
    },
    Table {
        name: "events",
        select: "SELECT seq, id, type, account_id, resource, record_id, created_at FROM events",
        columns: &[
            ("seq", Type::INT8),
            ("id", Type::TEXT),
            ("type", Type::TEXT),
            ("account_id", Type::TEXT),
            ("resource", Type::TEXT),
            ("record_id", Type::TEXT),
            ("created_at", Type::INT8),
        ],
    },
    Table {
        name: "deliveries",
        select:
            "SELECT seq, id, event_id, webhook_id, order_key, status, attempts, next_attempt_at,
                        created_at, updated_at, last_status, last_error, payload
                 FROM deliveries",
        columns: &[
            ("seq", Type::INT8),
            ("id", Type::TEXT),
            ("event_id", Type::TEXT),
            ("webhook_id", Type::TEXT),
            ("order_key", Type::TEXT),
            ("status", Type::TEXT),
            ("attempts", Type::INT4),
            ("next_attempt_at", Type::INT8),
            ("created_at", Type::INT8),
            ("updated_at", Type::INT8),
            ("last_status", Type::INT4),
            ("last_error", Type::TEXT),
            ("payload", Type::TEXT),
        ],
    },
    Table {
        name: "attempts",
        select: "SELECT delivery_id, attempt, started_at, status_code, duration_ms, response_body,
                        error_kind, error
                 FROM attempts",
        columns: &[
            ("delivery_id", Type::TEXT),
            ("attempt", Type::INT4),
            ("started_at", Type::INT8),
            ("status_code", Type::INT4),
            ("duration_ms", Type::INT8),
            ("response_body", Type::TEXT),
            ("error_kind", Type::TEXT),
            ("error", Type::TEXT),
        ],
    },
    Table {
        name: "webhook_state",
        select: "SELECT webhook_id, fingerprint, failing_since, paused_at, last_test_at
                 FROM webhook_state",
        columns: &[
            ("webhook_id", Type::TEXT),
            ("fingerprint", Type::TEXT),
            ("failing_since", Type::INT8),
            ("paused_at", Type::INT8),
            ("last_test_at", Type::INT8),
        ],
    },
];

/// Identity columns whose sequences continue after the copied rows.
const SEQUENCES: &[(&str, &str)] = &[("streams", "id"), ("events", "seq"), ("deliveries", "seq")];

/// Rows per message from the SQLite reader to the PostgreSQL writer.
const BATCH: usize = 4096;

/// One SQLite value, typed for its PostgreSQL column.
#[derive(Debug)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), _) => v.to_sql(ty, out),
            (Value::Text(v), _) => v.to_sql(ty, out),
            (Value::Bytes(v), _) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL | Type::INT4 | Type::INT8 | Type::TEXT | Type::BYTEA
        )
    }

    to_sql_checked!();
}

/// What was copied, per table.
#[derive(Debug, Default, serde::Serialize)]
pub struct Imported {
    pub tables: Vec<(String, u64)>,
}

impl Imported {
    pub fn count(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// The state directory an import reads: the directory itself, or the
/// directory of a `synthd.db` file.
pub fn source_dir(path: &Path) -> Result<PathBuf, StoreError> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    match (path.file_name(), path.parent()) {
        (Some(name), Some(dir)) if name == "synthd.db" && path.is_file() => {
            Ok(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            })
        }
        _ if !path.exists() => Err(StoreError::Refused(format!(
            "{} does not exist; give the old state directory or its synthd.db",
            path.display()
        ))),
        _ => Err(StoreError::Refused(format!(
            "{} is not a state directory or a file named synthd.db; give the old daemon.state_dir \
             (its synthd.db-wal must stay next to synthd.db)",
            path.display()
        ))),
    }
}

/// Copies the SQLite state in `dir` into `target`, which must hold no
/// state yet. The state directory's lock is held throughout, so a daemon
/// still running on it is refused rather than copied mid-write.
pub async fn import_sqlite(dir: &Path, target: &PgStore) -> Result<Imported, StoreError> {
    if !dir.join("synthd.db").is_file() {
        return Err(StoreError::Refused(format!(
            "no synthd.db in {}; give the old daemon.state_dir",
            dir.display()
        )));
    }
    let _lock = StateLock::acquire(dir)?;
    // Opening migrates an older file to the current schema first.
    let path = SqliteStore::open(dir)?.path().to_path_buf();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
    let reader_path = path.clone();
    let reader = tokio::task::spawn_blocking(move || read_all(&reader_path, &tx));

    let mut conn = target.conn().await?;
    let fail = |e: tokio_postgres::Error| target.err(super::postgres::pg_error(&e));
    let pg = conn.transaction().await.map_err(fail)?;
    pg.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::postgres::LOCK_MIGRATE],
    )
    .await
    .map_err(fail)?;
    let held: Vec<String> = pg
        .query(
            "SELECT t FROM (VALUES
                ('accounts', EXISTS (SELECT 1 FROM accounts)),
                ('records', EXISTS (SELECT 1 FROM streams)),
                ('events', EXISTS (SELECT 1 FROM events)),
                ('deliveries', EXISTS (SELECT 1 FROM deliveries)),
                ('meta', EXISTS (SELECT 1 FROM meta)),
                ('running processes', EXISTS (SELECT 1 FROM instances))) AS v (t, held)
             WHERE held",
            &[],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !held.is_empty() {
        return Err(StoreError::Refused(format!(
            "the PostgreSQL store {} already holds state ({}); import only into an empty database \
             (create a new one, or stop every synthd using it and drop its tables)",
            target.describe_url(),
            held.join(", ")
        )));
    }

    let mut imported = Imported::default();
    let mut current: Option<(usize, std::pin::Pin<Box<BinaryCopyInWriter>>, u64)> = None;
    while let Some(batch) = rx.recv().await {
        if current.as_ref().is_none_or(|(t, _, _)| *t != batch.table) {
            if let Some((t, mut writer, n)) = current.take() {
                writer.as_mut().finish().await.map_err(fail)?;
                imported.tables.push((TABLES[t].name.to_string(), n));
            }
            let table = &TABLES[batch.table];
            let names: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            let types: Vec<Type> = table.columns.iter().map(|(_, t)| t.clone()).collect();
            let sink = pg
                .copy_in(&format!(
                    "COPY {} ({}) FROM STDIN BINARY",
                    table.name,
                    names.join(", ")
                ))
                .await
                .map_err(fail)?;
            current = Some((
                batch.table,
                Box::pin(BinaryCopyInWriter::new(sink, &types)),
                0,
            ));
        }
        let Some((_, writer, n)) = current.as_mut() else {
            continue;
        };
        for row in &batch.rows {
            let refs: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.map_err(fail)?;
            *n += 1;
        }
    }
    if let Some((t, mut writer, n)) = current.take() {
        writer.as_mut().finish().await.map_err(fail)?;
        imported.tables.push((TABLES[t].name.to_string(), n));
    }
    reader
        .await
        .map_err(|e| StoreError::Internal(super::panic_text(e)))??;
    for (table, column) in SEQUENCES {
        pg.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )
        .await
        .map_err(fail)?;
    }
    pg.commit().await.map_err(fail)?;
    // Fresh statistics, or the first scans plan their lookups blind (see
    // `postgres::ANALYZE_AFTER`).
    conn.batch_execute("ANALYZE").await.map_err(fail)?;
    Ok(imported)
}

/// A run of rows of one table.
struct Batch {
    table: usize,
    rows: Vec<Vec<Value>>,
}

/// Reads every table in one read transaction (a consistent snapshot) and
/// sends it on in batches; tables with no rows send nothing.
fn read_all(path: &Path, out: &tokio::sync::mpsc::Sender<Batch>) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Sqlite {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    let tx = conn.transaction().map_err(fail)?;
    for (i, table) in TABLES.iter().enumerate() {
        let mut stmt = tx.prepare(table.select).map_err(fail)?;
        let width = table.columns.len();
        let mut rows = stmt.query([]).map_err(fail)?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = rows.next().map_err(fail)? {
            let mut values = Vec::with_capacity(width);
            for c in 0..width {
                values.push(match row.get_ref(c).map_err(fail)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    // No column holds reals; a stray one keeps its integer part.
                    ValueRef::Real(v) => Value::Int(v as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                });
            }
            batch.push(values);
            if batch.len() == BATCH {
                let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out.blocking_send(Batch { table: i, rows }).is_err() {
                    return Ok(()); // the writer failed and says why
                }
            }
        }
        if !batch.is_empty()
            && out
                .blocking_send(Batch {
                    table: i,
                    rows: batch,
                })
                .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

//! Accounts, scans and hashes in SQLite.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Inner, stored_hash};
use crate::detect::{Hash, SeenIds};
use crate::store::{
    AccountChange, NewEvent, PageRows, PollStatus, ScanClaim, ScanEndRows, ScanRequest, ScanStart,
    StoreError, StoredAccount, from_ms, ms,
};

/// Writes events and their pending deliveries, due at once (when the
/// event was created).
pub(super) fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[NewEvent],
) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut event = tx.prepare_cached(
        "INSERT INTO events (id, type, account_id, resource, record_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut delivery = tx.prepare_cached(
        "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, next_attempt_at,
             created_at, updated_at, payload)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6)",
    )?;
    for e in events {
        let row = &e.event;
        event.execute(params![
            row.id,
            row.event_type,
            row.account_id,
            row.resource,
            row.record_id,
            ms(row.created_at)
        ])?;
        for d in &e.deliveries {
            delivery.execute(params![
                d.id,
                row.id,
                d.webhook_id,
                d.order_key,
                ms(row.created_at),
                d.payload
            ])?;
        }
    }
    Ok(())
}

impl Inner {
    pub(super) fn ensure_hash_scheme(&self, scheme: &str) -> Result<bool, StoreError> {
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
            tx.execute(
                "UPDATE poll_state SET baseline_done = 0, held_scan = NULL",
                [],
            )
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

    pub(super) fn stored_accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        self.read(|conn| {
            let mut st =
                conn.prepare_cached("SELECT id, provider, fingerprint FROM accounts ORDER BY id")?;
            st.query_map([], |r| {
                Ok(StoredAccount {
                    id: r.get(0)?,
                    provider: r.get(1)?,
                    fingerprint: r.get(2)?,
                })
            })?
            .collect()
        })
    }

    pub(super) fn apply_account_changes(
        &self,
        changes: &[AccountChange],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut applied = Vec::new();
        for c in changes {
            let current: Option<String> = tx
                .query_row(
                    "SELECT fingerprint FROM accounts WHERE id = ?1",
                    [&c.id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if current != c.expected {
                continue;
            }
            match &c.new {
                Some(a) => {
                    tx.execute(
                        "INSERT INTO accounts (id, provider, fingerprint, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?4)
                         ON CONFLICT (id) DO UPDATE SET provider = ?2, fingerprint = ?3, updated_at = ?4",
                        params![a.id, a.provider, a.fingerprint, ms(now)],
                    )
                    .map_err(|e| self.err(e))?;
                }
                None => {
                    for sql in [
                        "DELETE FROM records WHERE stream IN (SELECT id FROM streams WHERE account_id = ?1)",
                        "DELETE FROM streams WHERE account_id = ?1",
                        "DELETE FROM poll_state WHERE account_id = ?1",
                        "DELETE FROM accounts WHERE id = ?1",
                    ] {
                        tx.execute(sql, [&c.id]).map_err(|e| self.err(e))?;
                    }
                }
            }
            insert_events(&tx, std::slice::from_ref(&c.event)).map_err(|e| self.err(e))?;
            applied.push(c.id.clone());
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(applied)
    }

    pub(super) fn begin_scan(&self, req: &ScanRequest) -> Result<ScanClaim, StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: this transaction writes, and a deferred one that read
        // first could not wait for another writer (SQLite would refuse at
        // once rather than risk a deadlock).
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO streams (account_id, resource) VALUES (?1, ?2)
             ON CONFLICT (account_id, resource) DO NOTHING",
            params![req.account_id, req.resource],
        )
        .map_err(|e| self.err(e))?;
        let stream: i64 = tx
            .query_row(
                "SELECT id FROM streams WHERE account_id = ?1 AND resource = ?2",
                params![req.account_id, req.resource],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let stored_shape: Option<Option<String>> = tx
            .query_row(
                "SELECT shape FROM poll_state WHERE account_id = ?1 AND resource = ?2",
                params![req.account_id, req.resource],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        // A database from before shapes were stored has none: record it
        // without re-baselining.
        let reshaped = matches!(&stored_shape, Some(Some(old)) if old != &req.shape);
        tx.execute(
            "INSERT INTO poll_state (account_id, resource, scan_seq, last_started_at, shape)
             VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (account_id, resource)
             DO UPDATE SET scan_seq = scan_seq + 1, last_started_at = ?3, shape = ?4",
            params![req.account_id, req.resource, ms(req.now), req.shape],
        )
        .map_err(|e| self.err(e))?;
        if reshaped {
            tx.execute(
                "UPDATE poll_state SET baseline_done = 0, held_scan = NULL
                 WHERE account_id = ?1 AND resource = ?2",
                params![req.account_id, req.resource],
            )
            .map_err(|e| self.err(e))?;
        }
        let start = tx
            .query_row(
                "SELECT scan_seq, baseline_done, held_scan, last_success_started_at, last_full_scan_at,
                        record_count
                 FROM poll_state WHERE account_id = ?1 AND resource = ?2",
                params![req.account_id, req.resource],
                |r| {
                    let last_full_scan_at = r.get::<_, Option<i64>>(4)?.map(from_ms);
                    let scan: i64 = r.get(0)?;
                    Ok(ScanStart {
                        stream,
                        account_id: req.account_id.clone(),
                        resource: req.resource.clone(),
                        scan,
                        fence: scan,
                        baseline_done: r.get::<_, i64>(1)? != 0,
                        held: r.get::<_, Option<i64>>(2)?.is_some(),
                        last_success_started_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                        first_baseline: last_full_scan_at.is_none(),
                        last_full_scan_at,
                        started_at: req.now,
                        known_before: r.get::<_, i64>(5)?.max(0) as u64,
                        reshaped,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(ScanClaim::Started(start))
    }

    pub(super) fn stored_hashes(
        &self,
        stream: i64,
        ids: &[String],
    ) -> Result<Vec<Option<Hash>>, StoreError> {
        let raw = self.read(|conn| {
            // One read transaction for the page: without it every lookup
            // takes and drops SQLite's shared lock (two fcntl calls each).
            let tx = conn.unchecked_transaction()?;
            let found = match hashes_in_range(&tx, stream, ids)? {
                Some(found) => found,
                None => {
                    let mut st = tx.prepare_cached(
                        "SELECT hash FROM records WHERE stream = ?1 AND record_id = ?2",
                    )?;
                    ids.iter()
                        .map(|id| {
                            st.query_row(params![stream, id], |r| r.get::<_, Vec<u8>>(0))
                                .optional()
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            tx.finish()?;
            Ok(found)
        })?;
        raw.into_iter()
            .zip(ids)
            .map(|(h, id)| h.map(|h| stored_hash(&self.path, id, h)).transpose())
            .collect()
    }

    pub(super) fn commit_page(&self, scan: &ScanStart, rows: &PageRows) -> Result<(), StoreError> {
        if rows.upserts.is_empty() && rows.events.is_empty() {
            // An unchanged page writes nothing at all.
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO records (stream, record_id, hash) VALUES (?1, ?2, ?3)
                     ON CONFLICT (stream, record_id) DO UPDATE SET hash = excluded.hash",
                )
                .map_err(|e| self.err(e))?;
            for (id, hash) in &rows.upserts {
                upsert
                    .execute(params![scan.stream, id, &hash[..]])
                    .map_err(|e| self.err(e))?;
            }
        }
        if rows.created > 0 {
            tx.prepare_cached(
                "UPDATE poll_state SET record_count = record_count + ?3
                 WHERE account_id = ?1 AND resource = ?2",
            )
            .and_then(|mut st| {
                st.execute(params![scan.account_id, scan.resource, rows.created as i64])
            })
            .map_err(|e| self.err(e))?;
        }
        insert_events(&tx, &rows.events).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn missing_ids(
        &self,
        stream: i64,
        seen: &Arc<SeenIds>,
    ) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT record_id FROM records WHERE stream = ?1")?;
            let mut rows = st.query([stream])?;
            let mut missing = Vec::new();
            while let Some(row) = rows.next()? {
                let id: rusqlite::types::ValueRef<'_> = row.get_ref(0)?;
                let id = id.as_str()?;
                if !seen.contains(id) {
                    missing.push(id.to_string());
                }
            }
            Ok(missing)
        })
    }

    pub(super) fn finish_scan(
        &self,
        scan: &ScanStart,
        end: &ScanEndRows,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if !end.deletes.is_empty() {
            let mut del = tx
                .prepare_cached("DELETE FROM records WHERE stream = ?1 AND record_id = ?2")
                .map_err(|e| self.err(e))?;
            let mut deleted = 0i64;
            for id in &end.deletes {
                deleted += del
                    .execute(params![scan.stream, id])
                    .map_err(|e| self.err(e))? as i64;
            }
            tx.execute(
                "UPDATE poll_state SET record_count = MAX(record_count - ?3, 0)
                 WHERE account_id = ?1 AND resource = ?2",
                params![scan.account_id, scan.resource, deleted],
            )
            .map_err(|e| self.err(e))?;
        }
        insert_events(&tx, &end.events).map_err(|e| self.err(e))?;
        if end.full {
            tx.execute(
                "UPDATE poll_state SET baseline_done = 1, last_full_scan_at = ?3, held_scan = ?4
                 WHERE account_id = ?1 AND resource = ?2",
                params![
                    scan.account_id,
                    scan.resource,
                    ms(scan.started_at),
                    end.held.then_some(scan.scan)
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "UPDATE poll_state SET last_finished_at = ?3, last_success_at = ?3,
                 last_success_started_at = ?4, last_error = NULL, consecutive_failures = 0
             WHERE account_id = ?1 AND resource = ?2",
            params![
                scan.account_id,
                scan.resource,
                ms(end.finished_at),
                ms(scan.started_at)
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn fail_scan(
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

    pub(super) fn last_poll_starts(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT account_id, MIN(last_started_at) FROM poll_state
                 WHERE last_started_at IS NOT NULL GROUP BY account_id",
            )?;
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, from_ms(r.get(1)?))))?
                .collect()
        })
    }

    pub(super) fn poll_status(&self) -> Result<Vec<PollStatus>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT account_id, resource, last_started_at, last_success_at, last_error,
                        baseline_done, consecutive_failures, record_count
                 FROM poll_state ORDER BY account_id, resource",
            )?;
            st.query_map([], |r| {
                Ok(PollStatus {
                    account_id: r.get(0)?,
                    resource: r.get(1)?,
                    last_started_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                    last_success_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    last_error: r.get(4)?,
                    baseline_done: r.get::<_, i64>(5)? != 0,
                    consecutive_failures: r.get::<_, i64>(6)?.max(0) as u64,
                    records: r.get::<_, i64>(7)?.max(0) as u64,
                })
            })?
            .collect()
        })
    }
}

/// The stored hashes of `ids` read in one pass over their key range, when
/// that range holds few other records: providers mostly list records in id
/// order, so a page's ids sit next to each other in the table, and one
/// cursor walking the range costs a fraction of a B-tree descent per id.
/// `None` when the range holds more than twice as many records as `ids`
/// (ids scattered through the table): look each one up instead.
fn hashes_in_range(
    tx: &rusqlite::Transaction,
    stream: i64,
    ids: &[String],
) -> rusqlite::Result<Option<Vec<Option<Vec<u8>>>>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by(|&a, &b| ids[a].cmp(&ids[b]));
    let (Some(&first), Some(&last)) = (order.first(), order.last()) else {
        return Ok(Some(Vec::new()));
    };
    let limit = ids.len() * 2 + 16;
    let mut st = tx.prepare_cached(
        "SELECT record_id, hash FROM records
         WHERE stream = ?1 AND record_id BETWEEN ?2 AND ?3 ORDER BY record_id LIMIT ?4",
    )?;
    let mut rows = st.query(params![stream, ids[first], ids[last], limit as i64])?;
    let mut found = vec![None; ids.len()];
    // Both sides in key order (SQLite's BINARY collation is byte order, as
    // is Rust's for strings): a merge.
    let (mut next, mut read) = (0, 0);
    while let Some(row) = rows.next()? {
        read += 1;
        let id = row.get_ref(0)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?;
        while next < order.len() && ids[order[next]].as_str() < id {
            next += 1;
        }
        // Every occurrence of a repeated id gets the hash.
        let mut same = next;
        while same < order.len() && ids[order[same]] == id {
            found[order[same]] = Some(row.get::<_, Vec<u8>>(1)?);
            same += 1;
        }
    }
    Ok((read < limit).then_some(found))
}

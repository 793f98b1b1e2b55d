//! The delivery side of the store: attempts and webhook health (pausing),
//! the delivery log, replay, test-send claims, and retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{AttemptRecord, NextStep, Store, StoreError, from_ms, ms, new_delivery_id};
use crate::config::{Retention, Webhook};
use crate::events::Event;

/// A webhook whose every attempt has failed for this long is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// One row of the delivery log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub response_body: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// Filters for `synthd deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub webhook: Option<String>,
    pub status: Option<String>,
    pub event: Option<String>,
    pub limit: usize,
}

/// What `synthd replay` re-queues: deliveries matching all given filters.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    pub event_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub webhook: Option<String>,
    pub status: Option<String>,
}

/// The answer to a test-send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestClaim {
    Granted,
    /// Another test went out less than the minimum gap ago; wait this long.
    TooSoon(Duration),
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
}

const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, e.type, d.webhook_id, d.status, d.attempts, d.created_at,
     d.updated_at, d.next_attempt_at, d.last_status, d.last_error";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        webhook_id: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u32,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        next_attempt_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        last_status: r.get::<_, Option<i64>>(9)?.map(|s| s as u16),
        last_error: r.get(10)?,
    })
}

impl Store {
    /// Records one attempt, the delivery's new state and the webhook's
    /// health, in one transaction. Returns true when this failure paused the
    /// webhook (every attempt failing for [`PAUSE_AFTER`]).
    pub fn record_attempt(
        &self,
        delivery_id: &str,
        webhook_id: &str,
        attempt: &AttemptRecord,
        next: NextStep,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let at = ms(attempt.started_at);
        tx.execute(
            "INSERT OR REPLACE INTO attempts
                 (delivery_id, attempt, started_at, status_code, duration_ms, response_body, error_kind, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                delivery_id,
                attempt.number,
                at,
                attempt.status_code,
                attempt.duration_ms as i64,
                attempt.response_body,
                attempt.error_kind,
                attempt.error,
            ],
        )
        .map_err(|e| self.err(e))?;
        let (status, next_at) = match next {
            NextStep::Delivered => ("delivered", None),
            NextStep::RetryAt(t) => ("pending", Some(ms(t))),
            NextStep::Failed => ("failed", None),
        };
        tx.execute(
            "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5,
                 last_status = ?6, last_error = ?7
             WHERE id = ?1",
            params![
                delivery_id,
                status,
                attempt.number,
                next_at,
                at,
                attempt.status_code,
                attempt.error,
            ],
        )
        .map_err(|e| self.err(e))?;
        let mut paused_now = false;
        if next == NextStep::Delivered {
            tx.execute(
                "INSERT INTO webhook_state (webhook_id) VALUES (?1)
                 ON CONFLICT (webhook_id) DO UPDATE SET failing_since = NULL",
                [webhook_id],
            )
            .map_err(|e| self.err(e))?;
        } else {
            // A failing_since in the future was written by a wrong clock:
            // the streak starts now instead.
            tx.execute(
                "INSERT INTO webhook_state (webhook_id, failing_since) VALUES (?1, ?2)
                 ON CONFLICT (webhook_id) DO UPDATE SET failing_since =
                     CASE WHEN failing_since IS NULL OR failing_since > ?2 THEN ?2 ELSE failing_since END",
                params![webhook_id, at],
            )
            .map_err(|e| self.err(e))?;
            paused_now = tx
                .execute(
                    "UPDATE webhook_state SET paused_at = ?2
                     WHERE webhook_id = ?1 AND paused_at IS NULL AND failing_since <= ?3",
                    params![webhook_id, at, at - PAUSE_AFTER.as_millis() as i64],
                )
                .map_err(|e| self.err(e))?
                > 0;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(paused_now)
    }

    /// Webhooks paused after days of failures, with when they were paused.
    pub fn paused_webhooks(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT webhook_id, paused_at FROM webhook_state WHERE paused_at IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        st.query_map([], |r| Ok((r.get(0)?, from_ms(r.get(1)?))))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Un-pauses a webhook and forgets its failure streak. Returns whether
    /// it was paused.
    pub fn resume_webhook(&self, webhook_id: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let was_paused = conn
            .query_row(
                "SELECT paused_at IS NOT NULL FROM webhook_state WHERE webhook_id = ?1",
                [webhook_id],
                |r| r.get::<_, bool>(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(false);
        conn.execute(
            "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL WHERE webhook_id = ?1",
            [webhook_id],
        )
        .map_err(|e| self.err(e))?;
        Ok(was_paused)
    }

    /// Stores each webhook's config fingerprint; a paused webhook whose
    /// config changed is resumed (the operator fixed something). Returns the
    /// ids resumed.
    pub fn reconcile_webhooks(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut resumed = Vec::new();
        for (id, fp) in fingerprints {
            let old: Option<(Option<String>, bool)> = tx
                .query_row(
                    "SELECT fingerprint, paused_at IS NOT NULL FROM webhook_state WHERE webhook_id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            match old {
                None => {
                    tx.execute(
                        "INSERT INTO webhook_state (webhook_id, fingerprint) VALUES (?1, ?2)",
                        params![id, fp],
                    )
                    .map_err(|e| self.err(e))?;
                }
                Some((old_fp, paused)) => {
                    let changed = old_fp.as_deref() != Some(fp.as_str());
                    if changed && paused && old_fp.is_some() {
                        tx.execute(
                            "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL WHERE webhook_id = ?1",
                            [id],
                        )
                        .map_err(|e| self.err(e))?;
                        resumed.push(id.clone());
                    }
                    if changed {
                        tx.execute(
                            "UPDATE webhook_state SET fingerprint = ?2 WHERE webhook_id = ?1",
                            params![id, fp],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(resumed)
    }

    /// Claims the right to send a test event to `webhook_id` now: at most one
    /// per `min_gap`, enforced in the database so it holds across processes.
    pub fn claim_test_send(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> Result<TestClaim, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_test_at FROM webhook_state WHERE webhook_id = ?1",
                [webhook_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        let gap = min_gap.as_millis() as i64;
        // A last test in the future was written by a wrong clock: ignore it.
        if let Some(last) = last
            && last <= ms(now)
            && ms(now) - last < gap
        {
            let wait = (last + gap - ms(now)).max(0) as u64;
            return Ok(TestClaim::TooSoon(Duration::from_millis(wait)));
        }
        tx.execute(
            "INSERT INTO webhook_state (webhook_id, last_test_at) VALUES (?1, ?2)
             ON CONFLICT (webhook_id) DO UPDATE SET last_test_at = ?2",
            params![webhook_id, ms(now)],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(TestClaim::Granted)
    }

    /// Logs a test send as an event with one delivery and its single attempt,
    /// so it shows in `synthd deliveries`. Returns the delivery id.
    pub fn record_test_send(
        &self,
        event: &Event,
        webhook: &Webhook,
        payload: &str,
        attempt: &AttemptRecord,
        delivered: bool,
    ) -> Result<String, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let id = new_delivery_id();
        let at = ms(attempt.started_at);
        let status = if delivered { "delivered" } else { "failed" };
        tx.execute(
            "INSERT INTO events (id, type, account_id, created_at) VALUES (?1, ?2, '', ?3)",
            params![event.id, event.event_type(), ms(event.timestamp)],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, attempts, created_at,
                 updated_at, last_status, last_error, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6, ?7, ?8, ?9)",
            params![
                id,
                event.id,
                webhook.id,
                event.order_key(),
                status,
                at,
                attempt.status_code,
                attempt.error,
                payload
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO attempts (delivery_id, attempt, started_at, status_code, duration_ms, response_body,
                 error_kind, error)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                at,
                attempt.status_code,
                attempt.duration_ms as i64,
                attempt.response_body,
                attempt.error_kind,
                attempt.error
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// The delivery log, newest first.
    pub fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE (?1 IS NULL OR d.webhook_id = ?1) AND (?2 IS NULL OR d.status = ?2)
               AND (?3 IS NULL OR d.event_id = ?3)
             ORDER BY d.seq DESC LIMIT ?4"
        );
        let mut st = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        st.query_map(
            params![
                filter.webhook,
                filter.status,
                filter.event,
                filter.limit as i64
            ],
            delivery_row,
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// One delivery with its exact payload and every attempt.
    pub fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryRow, String, Vec<AttemptRow>)>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, d.payload FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id = ?1"
        );
        let found = conn
            .query_row(&sql, [id], |r| {
                Ok((delivery_row(r)?, r.get::<_, String>(11)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((row, payload)) = found else {
            return Ok(None);
        };
        let mut st = conn
            .prepare_cached(
                "SELECT attempt, started_at, status_code, duration_ms, response_body, error_kind, error
                 FROM attempts WHERE delivery_id = ?1 ORDER BY attempt",
            )
            .map_err(|e| self.err(e))?;
        let attempts = st
            .query_map([id], |r| {
                Ok(AttemptRow {
                    attempt: r.get::<_, i64>(0)? as u32,
                    started_at: from_ms(r.get(1)?),
                    status_code: r.get::<_, Option<i64>>(2)?.map(|s| s as u16),
                    duration_ms: r.get::<_, i64>(3)? as u64,
                    response_body: r.get(4)?,
                    error_kind: r.get(5)?,
                    error: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(Some((row, payload, attempts)))
    }

    /// Queues the selected events again: one new pending delivery per
    /// (event, webhook) pair among the matching deliveries, same event id and
    /// payload. Webhooks missing from `webhooks` or disabled are skipped, and
    /// so is a pair that already has a pending delivery (replaying twice
    /// queues it once).
    pub fn replay(
        &self,
        sel: &ReplaySelection,
        webhooks: &[Webhook],
        now: DateTime<Utc>,
    ) -> Result<Replayed, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let picked: Vec<(String, String, String, String)> = {
            let mut st = tx
                .prepare(
                    "SELECT d.event_id, d.webhook_id, d.order_key, d.payload
                     FROM deliveries d JOIN events e ON e.id = d.event_id
                     WHERE d.seq IN (
                         SELECT MAX(d2.seq) FROM deliveries d2 JOIN events e2 ON e2.id = d2.event_id
                         WHERE (?1 IS NULL OR d2.event_id = ?1)
                           AND (?2 IS NULL OR e2.created_at >= ?2)
                           AND (?3 IS NULL OR e2.created_at < ?3)
                           AND (?4 IS NULL OR d2.webhook_id = ?4)
                           AND (?5 IS NULL OR d2.status = ?5)
                         GROUP BY d2.event_id, d2.webhook_id)
                     ORDER BY e.seq",
                )
                .map_err(|e| self.err(e))?;
            st.query_map(
                params![
                    sel.event_id,
                    sel.since.map(ms),
                    sel.until.map(ms),
                    sel.webhook,
                    sel.status
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?
        };
        let mut done = Replayed::default();
        for (event_id, webhook_id, order_key, payload) in picked {
            if !webhooks.iter().any(|w| w.id == webhook_id && w.enabled) {
                done.skipped += 1;
                continue;
            }
            let pending: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM deliveries
                     WHERE event_id = ?1 AND webhook_id = ?2 AND status = 'pending')",
                    params![event_id, webhook_id],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            if pending {
                done.already_pending += 1;
                continue;
            }
            tx.execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, next_attempt_at,
                     created_at, updated_at, payload)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6)",
                params![new_delivery_id(), event_id, webhook_id, order_key, ms(now), payload],
            )
            .map_err(|e| self.err(e))?;
            done.queued += 1;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(done)
    }

    /// Cancels the pending deliveries of webhooks no longer in the config
    /// (they would otherwise wait forever). Returns how many.
    pub fn cancel_orphans(
        &self,
        webhook_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let conn = self.lock();
        let placeholders = vec!["?"; webhook_ids.len()].join(",");
        let keep = if webhook_ids.is_empty() {
            String::new()
        } else {
            format!("AND webhook_id NOT IN ({placeholders})")
        };
        let sql = format!(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = ?,
                 last_error = 'webhook removed from the config'
             WHERE status = 'pending' {keep}"
        );
        let mut values: Vec<rusqlite::types::Value> = vec![ms(now).into()];
        values.extend(
            webhook_ids
                .iter()
                .map(|w| rusqlite::types::Value::from(w.clone())),
        );
        // Look before writing: a start with nothing to cancel must not need
        // a writable database.
        let count_sql = format!("SELECT COUNT(*) FROM deliveries WHERE status = 'pending' {keep}");
        let orphans: i64 = conn
            .query_row(
                &count_sql,
                rusqlite::params_from_iter(values.iter().skip(1)),
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if orphans == 0 {
            return Ok(0);
        }
        let n = conn
            .execute(&sql, rusqlite::params_from_iter(values))
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    /// Deletes one batch of deliveries (and their attempts) past retention,
    /// then events that no delivery refers to any more. Call until it
    /// returns zeros; each batch is its own short transaction so polling is
    /// never blocked for long.
    pub fn prune_batch(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut pruned = Pruned::default();
        for (status, keep) in [
            ("delivered", retention.delivered),
            ("failed", retention.failed),
        ] {
            let cutoff = ms(now) - keep.as_millis() as i64;
            let ids: Vec<String> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id FROM deliveries WHERE status = ?1 AND updated_at < ?2 LIMIT ?3",
                    )
                    .map_err(|e| self.err(e))?;
                st.query_map(params![status, cutoff, batch as i64], |r| r.get(0))
                    .and_then(|rows| rows.collect())
                    .map_err(|e| self.err(e))?
            };
            for id in &ids {
                tx.execute("DELETE FROM attempts WHERE delivery_id = ?1", [id])
                    .map_err(|e| self.err(e))?;
                tx.execute("DELETE FROM deliveries WHERE id = ?1", [id])
                    .map_err(|e| self.err(e))?;
            }
            pruned.deliveries += ids.len() as u64;
        }
        let cutoff = ms(now) - retention.delivered.min(retention.failed).as_millis() as i64;
        pruned.events = tx
            .execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events e WHERE e.created_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                     LIMIT ?2)",
                params![cutoff, batch as i64],
            )
            .map_err(|e| self.err(e))? as u64;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(pruned)
    }
}

//! The delivery side in SQLite: due deliveries, attempts and webhook health
//! (pausing), test sends, replay, retention and the delivery log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::Inner;
use crate::store::{
    AttemptOutcome, AttemptView, DeliveryCounts, DeliveryStatus, DeliveryView, DueDelivery,
    MAX_RETRY_GAP, NextStep, PAUSE_AFTER, Pruned, ReplaySelection, Replayed, RetentionPolicy,
    StoreError, TestClaim, TestSend, from_ms, ms, new_delivery_id,
};

pub(super) const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, e.type, d.webhook_id, d.status, d.attempts, d.created_at,
     d.updated_at, d.next_attempt_at, d.last_status, d.last_error";

pub(super) fn status_of(text: &str) -> rusqlite::Result<DeliveryStatus> {
    DeliveryStatus::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown delivery status {text:?}").into(),
        )
    })
}

pub(super) fn delivery_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryView> {
    Ok(DeliveryView {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        webhook_id: r.get(3)?,
        status: status_of(&r.get::<_, String>(4)?)?,
        attempts: r.get::<_, i64>(5)?.max(0) as u32,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        next_attempt_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        last_status: r.get::<_, Option<i64>>(9)?.map(|s| s as u16),
        last_error: r.get(10)?,
    })
}

impl Inner {
    pub(super) fn due_deliveries(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // Due now, or due later than any retry is ever scheduled (written by
        // a wrong clock). Oldest first, and never ahead of an earlier
        // pending event of the same record.
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT d.id, d.event_id, d.webhook_id, d.attempts, d.payload
                 FROM deliveries d
                 WHERE d.status = 'pending' AND d.webhook_id = ?2
                   AND (d.next_attempt_at <= ?1 OR d.next_attempt_at > ?1 + ?3)
                   AND NOT EXISTS (
                       SELECT 1 FROM deliveries p
                       WHERE p.webhook_id = d.webhook_id AND p.order_key = d.order_key
                         AND p.status = 'pending' AND p.seq < d.seq)
                 ORDER BY d.next_attempt_at, d.seq
                 LIMIT ?4",
            )?;
            st.query_map(
                params![
                    ms(now),
                    webhook_id,
                    MAX_RETRY_GAP.as_millis() as i64,
                    limit as i64
                ],
                |r| {
                    Ok(DueDelivery {
                        id: r.get(0)?,
                        event_id: r.get(1)?,
                        webhook_id: r.get(2)?,
                        attempts_made: r.get::<_, i64>(3)?.max(0) as u32,
                        payload: r.get(4)?,
                    })
                },
            )?
            .collect()
        })
    }

    pub(super) fn record_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<String>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut paused = Vec::new();
        {
            let mut attempt_st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO attempts
                         (delivery_id, attempt, started_at, status_code, duration_ms, response_body, error_kind, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| self.err(e))?;
            let mut delivery_st = tx
                .prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5,
                         last_status = ?6, last_error = ?7
                     WHERE id = ?1 AND attempts < ?3",
                )
                .map_err(|e| self.err(e))?;
            let mut healthy_st = tx
                .prepare_cached(
                    "INSERT INTO webhook_state (webhook_id) VALUES (?1)
                     ON CONFLICT (webhook_id) DO UPDATE SET failing_since = NULL",
                )
                .map_err(|e| self.err(e))?;
            // A failing_since in the future was written by a wrong clock:
            // the streak starts now instead.
            let mut failing_st = tx
                .prepare_cached(
                    "INSERT INTO webhook_state (webhook_id, failing_since) VALUES (?1, ?2)
                     ON CONFLICT (webhook_id) DO UPDATE SET failing_since =
                         CASE WHEN failing_since IS NULL OR failing_since > ?2 THEN ?2 ELSE failing_since END",
                )
                .map_err(|e| self.err(e))?;
            let mut pause_st = tx
                .prepare_cached(
                    "UPDATE webhook_state SET paused_at = ?2
                     WHERE webhook_id = ?1 AND paused_at IS NULL AND failing_since <= ?3",
                )
                .map_err(|e| self.err(e))?;
            for o in outcomes {
                let a = &o.attempt;
                let at = ms(a.started_at);
                let (status, next_at) = match o.next {
                    NextStep::Delivered => (DeliveryStatus::Delivered, None),
                    NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(ms(t))),
                    NextStep::Failed => (DeliveryStatus::Failed, None),
                };
                // An attempt whose number was already recorded is stale:
                // the first record stands (the same rule as PostgreSQL's).
                let counted = delivery_st
                    .execute(params![
                        o.delivery_id,
                        status.as_str(),
                        a.number,
                        next_at,
                        at,
                        a.status_code,
                        a.error,
                    ])
                    .map_err(|e| self.err(e))?;
                if counted == 0 {
                    continue;
                }
                attempt_st
                    .execute(params![
                        o.delivery_id,
                        a.number,
                        at,
                        a.status_code,
                        a.duration_ms as i64,
                        a.response_body,
                        a.error_kind,
                        a.error,
                    ])
                    .map_err(|e| self.err(e))?;
                if o.next == NextStep::Delivered {
                    healthy_st
                        .execute([&o.webhook_id])
                        .map_err(|e| self.err(e))?;
                } else {
                    failing_st
                        .execute(params![o.webhook_id, at])
                        .map_err(|e| self.err(e))?;
                    let n = pause_st
                        .execute(params![
                            o.webhook_id,
                            at,
                            at - PAUSE_AFTER.as_millis() as i64
                        ])
                        .map_err(|e| self.err(e))?;
                    if n > 0 {
                        paused.push(o.webhook_id.clone());
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(paused)
    }

    pub(super) fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.earliest_pending("next_attempt_at")
    }

    pub(super) fn oldest_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
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

    pub(super) fn paused_webhooks(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT webhook_id, paused_at FROM webhook_state WHERE paused_at IS NOT NULL ORDER BY webhook_id",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, from_ms(r.get(1)?))))?
                .collect()
        })
    }

    pub(super) fn resume_webhook(&self, webhook_id: &str) -> Result<bool, StoreError> {
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
        if was_paused {
            conn.execute(
                "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL WHERE webhook_id = ?1",
                [webhook_id],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(was_paused)
    }

    pub(super) fn reconcile_webhooks(
        &self,
        fingerprints: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        // Look first: a start with nothing to change must not need a
        // writable database.
        let stored: Vec<(String, Option<String>, bool)> = self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT webhook_id, fingerprint, paused_at IS NOT NULL FROM webhook_state",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })?;
        let mut writes: Vec<(&str, &str, bool)> = Vec::new();
        for (id, fp) in fingerprints {
            match stored.iter().find(|(s, _, _)| s == id) {
                None => writes.push((id, fp, false)),
                Some((_, old, paused)) if old.as_deref() != Some(fp.as_str()) => {
                    writes.push((id, fp, *paused && old.is_some()))
                }
                Some(_) => {}
            }
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut resumed = Vec::new();
        for (id, fp, resume) in writes {
            tx.execute(
                "INSERT INTO webhook_state (webhook_id, fingerprint) VALUES (?1, ?2)
                 ON CONFLICT (webhook_id) DO UPDATE SET fingerprint = ?2",
                params![id, fp],
            )
            .map_err(|e| self.err(e))?;
            if resume {
                tx.execute(
                    "UPDATE webhook_state SET paused_at = NULL, failing_since = NULL WHERE webhook_id = ?1",
                    [id],
                )
                .map_err(|e| self.err(e))?;
                resumed.push(id.to_string());
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(resumed)
    }

    pub(super) fn cancel_orphans(
        &self,
        keep: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let orphans: Vec<String> = self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT DISTINCT webhook_id FROM deliveries WHERE status = 'pending'",
            )?;
            st.query_map([], |r| r.get::<_, String>(0))?.collect()
        })?;
        let orphans: Vec<String> = orphans.into_iter().filter(|w| !keep.contains(w)).collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = ?2,
                     last_error = 'webhook removed from the config'
                 WHERE status = 'pending' AND webhook_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut n = 0;
        for w in &orphans {
            n += st.execute(params![w, ms(now)]).map_err(|e| self.err(e))? as u64;
        }
        Ok(n)
    }

    pub(super) fn claim_test_send(
        &self,
        webhook_id: &str,
        now: DateTime<Utc>,
        min_gap: Duration,
    ) -> Result<TestClaim, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
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

    pub(super) fn record_test_send(&self, send: &TestSend) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let a = &send.attempt;
        let at = ms(a.started_at);
        let status = if send.delivered {
            DeliveryStatus::Delivered
        } else {
            DeliveryStatus::Failed
        };
        tx.execute(
            "INSERT INTO events (id, type, account_id, created_at) VALUES (?1, ?2, '', ?3)",
            params![
                send.event.id,
                send.event.event_type,
                ms(send.event.created_at)
            ],
        )
        .map_err(|e| self.err(e))?;
        let d = &send.delivery;
        tx.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, attempts, created_at,
                 updated_at, last_status, last_error, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6, ?7, ?8, ?9)",
            params![
                d.id,
                send.event.id,
                d.webhook_id,
                d.order_key,
                status.as_str(),
                at,
                a.status_code,
                a.error,
                d.payload
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO attempts (delivery_id, attempt, started_at, status_code, duration_ms, response_body,
                 error_kind, error)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                d.id,
                at,
                a.status_code,
                a.duration_ms as i64,
                a.response_body,
                a.error_kind,
                a.error
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn replay(
        &self,
        sel: &ReplaySelection,
        enabled: &[String],
        now: DateTime<Utc>,
    ) -> Result<Replayed, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let picked: Vec<(String, String, String, String)> = {
            let mut st = tx
                .prepare_cached(
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
                    sel.status.map(DeliveryStatus::as_str)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?
        };
        let mut done = Replayed::default();
        for (event_id, webhook_id, order_key, payload) in picked {
            if !enabled.contains(&webhook_id) {
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

    pub(super) fn prune_batch(
        &self,
        retention: RetentionPolicy,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut pruned = Pruned::default();
        for (status, keep) in [
            (DeliveryStatus::Delivered, retention.delivered),
            (DeliveryStatus::Failed, retention.failed),
            (DeliveryStatus::Cancelled, retention.failed),
        ] {
            let cutoff = ms(now) - keep.as_millis() as i64;
            let ids: Vec<String> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id FROM deliveries WHERE status = ?1 AND updated_at < ?2 LIMIT ?3",
                    )
                    .map_err(|e| self.err(e))?;
                st.query_map(params![status.as_str(), cutoff, batch as i64], |r| r.get(0))
                    .and_then(|rows| rows.collect())
                    .map_err(|e| self.err(e))?
            };
            for id in &ids {
                tx.prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")
                    .and_then(|mut st| st.execute([id]))
                    .map_err(|e| self.err(e))?;
                tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")
                    .and_then(|mut st| st.execute([id]))
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

    pub(super) fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let rows: Vec<(String, i64)> = self.read(|conn| {
            let mut st =
                conn.prepare_cached("SELECT status, COUNT(*) FROM deliveries GROUP BY status")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })?;
        let mut counts = DeliveryCounts::default();
        for (status, n) in rows {
            let status = status_of(&status).map_err(|e| self.err(e))?;
            counts.add(status, n.max(0) as u64);
        }
        Ok(counts)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliveryView, String, Vec<AttemptView>)>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS}, d.payload FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.id = ?1"
            );
            let found = conn
                .query_row(&sql, [id], |r| Ok((delivery_view(r)?, r.get::<_, String>(11)?)))
                .optional()?;
            let Some((row, payload)) = found else {
                return Ok(None);
            };
            let mut st = conn.prepare_cached(
                "SELECT attempt, started_at, status_code, duration_ms, response_body, error_kind, error
                 FROM attempts WHERE delivery_id = ?1 ORDER BY attempt",
            )?;
            let attempts = st
                .query_map([id], |r| {
                    Ok(AttemptView {
                        attempt: r.get::<_, i64>(0)?.max(0) as u32,
                        started_at: from_ms(r.get(1)?),
                        status_code: r.get::<_, Option<i64>>(2)?.map(|s| s as u16),
                        duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                        response_body: r.get(4)?,
                        error_kind: r.get(5)?,
                        error: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((row, payload, attempts)))
        })
    }
}

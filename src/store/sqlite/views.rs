//! The read-only views behind the console and /metrics on SQLite: cheap
//! indexed counts, the paged delivery log, events per hour.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::Inner;
use super::outbox::{DELIVERY_COLUMNS, delivery_view, status_of};
use crate::store::{DeliveryCounts, DeliveryStatus, HourCount, LogQuery, LogRow, StoreError, ms};

const HOUR_MS: i64 = 3_600_000;

impl Inner {
    pub(super) fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
    }

    pub(super) fn webhook_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DeliveryCounts)>, StoreError> {
        let rows: Vec<(String, String, i64)> = self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT webhook_id, status, COUNT(*) FROM deliveries WHERE status = 'pending'
                   GROUP BY webhook_id, status
                 UNION ALL
                 SELECT webhook_id, status, COUNT(*) FROM deliveries
                   WHERE status IN ('delivered', 'failed', 'cancelled') AND updated_at >= ?1
                   GROUP BY webhook_id, status",
            )?;
            st.query_map(params![ms(since)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })?;
        collect_counts(rows, |s| status_of(s).map_err(|e| self.err(e)))
    }

    pub(super) fn delivery_log(&self, q: &LogQuery) -> Result<Vec<LogRow>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS}, e.account_id, e.record_id,
                        (SELECT a.duration_ms FROM attempts a WHERE a.delivery_id = d.id
                          ORDER BY a.attempt DESC LIMIT 1)
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE (?1 IS NULL OR d.webhook_id = ?1) AND (?2 IS NULL OR d.status = ?2)
                   AND (?3 IS NULL OR e.type = ?3) AND (?4 IS NULL OR d.event_id = ?4)
                 ORDER BY d.seq DESC LIMIT ?5 OFFSET ?6"
            );
            let mut st = conn.prepare_cached(&sql)?;
            st.query_map(
                params![
                    q.webhook,
                    q.status.map(DeliveryStatus::as_str),
                    q.event_type,
                    q.event_id,
                    q.limit as i64,
                    q.offset as i64
                ],
                |r| {
                    Ok(LogRow {
                        delivery: delivery_view(r)?,
                        account_id: r.get(11)?,
                        record_id: r.get(12)?,
                        last_duration_ms: r.get::<_, Option<i64>>(13)?.map(|v| v.max(0) as u64),
                    })
                },
            )?
            .collect()
        })
    }

    pub(super) fn events_per_hour(
        &self,
        account_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<HourCount>, StoreError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT created_at / ?3, type, COUNT(*) FROM events
                 WHERE created_at >= ?2 AND account_id = ?1
                 GROUP BY 1, 2 ORDER BY 1, 2",
            )?;
            st.query_map(params![account_id, ms(since), HOUR_MS], |r| {
                Ok(HourCount {
                    hour: crate::store::from_ms(r.get::<_, i64>(0)? * HOUR_MS),
                    event_type: r.get(1)?,
                    count: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?
            .collect()
        })
    }
}

/// `(webhook, status, n)` rows into counts per webhook, sorted by webhook.
pub(crate) fn collect_counts<E>(
    rows: Vec<(String, String, i64)>,
    status: impl Fn(&str) -> Result<DeliveryStatus, E>,
) -> Result<Vec<(String, DeliveryCounts)>, E> {
    let mut by: std::collections::BTreeMap<String, DeliveryCounts> = Default::default();
    for (webhook, s, n) in rows {
        by.entry(webhook)
            .or_default()
            .add(status(&s)?, n.max(0) as u64);
    }
    Ok(by.into_iter().collect())
}

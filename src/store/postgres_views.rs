//! The read-only views behind the console and /metrics on PostgreSQL
//! (a child of `postgres`): cheap indexed counts, the paged delivery log,
//! events per hour.

use chrono::{DateTime, Utc};

use super::{DELIVERY_COLUMNS, PgStore, delivery_view, pg_error, status_of};
use crate::store::{
    DeliveryCounts, DeliveryStatus, HourCount, LogQuery, LogRow, StoreError, from_ms, ms,
};

const HOUR_MS: i64 = 3_600_000;

impl PgStore {
    pub(super) async fn view_pending_deliveries(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    pub(super) async fn view_webhook_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DeliveryCounts)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT webhook_id, status, COUNT(*) FROM deliveries WHERE status = 'pending'
                   GROUP BY webhook_id, status
                 UNION ALL
                 SELECT webhook_id, status, COUNT(*) FROM deliveries
                   WHERE status IN ('delivered', 'failed', 'cancelled') AND updated_at >= $1
                   GROUP BY webhook_id, status",
                &[&ms(since)],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        let rows = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2)))
            .collect();
        crate::store::sqlite::collect_counts(rows, |s| {
            Ok::<DeliveryStatus, StoreError>(status_of(s))
        })
    }

    pub(super) async fn view_delivery_log(&self, q: &LogQuery) -> Result<Vec<LogRow>, StoreError> {
        let conn = self.conn().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, e.account_id, e.record_id,
                    (SELECT a.duration_ms FROM attempts a WHERE a.delivery_id = d.id
                      ORDER BY a.attempt DESC LIMIT 1)
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE ($1::text IS NULL OR d.webhook_id = $1) AND ($2::text IS NULL OR d.status = $2)
               AND ($3::text IS NULL OR e.type = $3) AND ($4::text IS NULL OR d.event_id = $4)
             ORDER BY d.seq DESC LIMIT $5 OFFSET $6"
        );
        let rows = conn
            .query(
                &sql,
                &[
                    &q.webhook,
                    &q.status.map(DeliveryStatus::as_str),
                    &q.event_type,
                    &q.event_id,
                    &(q.limit as i64),
                    &(q.offset.min(i64::MAX as u64) as i64),
                ],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| LogRow {
                delivery: delivery_view(r),
                account_id: r.get(11),
                record_id: r.get(12),
                last_duration_ms: r.get::<_, Option<i64>>(13).map(|v| v.max(0) as u64),
            })
            .collect())
    }

    pub(super) async fn view_events_per_hour(
        &self,
        account_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<HourCount>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT created_at / $3, type, COUNT(*) FROM events
                 WHERE created_at >= $2 AND account_id = $1
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&account_id, &ms(since), &HOUR_MS],
            )
            .await
            .map_err(|e| self.err(pg_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| HourCount {
                hour: from_ms(r.get::<_, i64>(0) * HOUR_MS),
                event_type: r.get(1),
                count: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }
}

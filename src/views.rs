//! The query layer behind `synthd status`, `synthd deliveries` and the web
//! console: each screen's data is assembled here once, from the store and
//! the config, so the CLI and the console never disagree.
//!
//! Nothing here holds a secret: webhook URLs are the redacted
//! [`crate::config::Webhook::shown_url`], and the store keeps no record
//! field values.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::store::{
    AttemptView, DeliveryCounts, DeliveryView, HourCount, InstanceView, LogQuery, LogRow,
    PollStatus, Store, StoreError,
};

/// One account/resource pair with its schedule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourceRow {
    #[serde(flatten)]
    pub poll: PollStatus,
    /// `None`: the account left the config or is disabled.
    pub next_poll_at: Option<DateTime<Utc>>,
}

/// One configured webhook with its health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebhookRow {
    pub id: String,
    pub name: String,
    /// Every query value hidden.
    pub url: String,
    pub enabled: bool,
    pub paused_at: Option<DateTime<Utc>>,
    pub events: Vec<String>,
    /// Pending now; delivered, failed and cancelled in the last 24 h.
    pub last_24h: DeliveryCounts,
    /// The newest delivery's last attempt failed (it retries or failed).
    pub failing: bool,
}

/// What `synthd status` and the console's overview show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    pub now: DateTime<Utc>,
    pub resources: Vec<ResourceRow>,
    pub webhooks: Vec<WebhookRow>,
    pub paused: Vec<(String, DateTime<Utc>)>,
    pub instances: Vec<InstanceView>,
    pub shared: bool,
}

pub async fn overview(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Overview, StoreError> {
    let polls = store.poll_status().await?;
    let paused = store.paused_webhooks().await?;
    let counts = store
        .webhook_counts(now - chrono::Duration::hours(24))
        .await?;
    let instances = store.instances().await?;
    let resources = polls
        .into_iter()
        .map(|p| {
            let next_poll_at = config
                .accounts
                .iter()
                .find(|a| a.id == p.account_id && a.enabled)
                .map(|a| a.schedule.next_due(&a.id, p.last_started_at, now));
            ResourceRow {
                poll: p,
                next_poll_at,
            }
        })
        .collect();
    // The newest delivery of each webhook: one indexed row apiece.
    let mut failing = std::collections::HashSet::new();
    for w in &config.webhooks {
        let newest = store
            .delivery_log(&LogQuery {
                webhook: Some(w.id.clone()),
                limit: 1,
                ..Default::default()
            })
            .await?;
        if newest.first().is_some_and(|r| {
            r.delivery.attempts > 0
                && matches!(
                    r.delivery.status,
                    crate::store::DeliveryStatus::Pending | crate::store::DeliveryStatus::Failed
                )
        }) {
            failing.insert(w.id.clone());
        }
    }
    let webhooks = config
        .webhooks
        .iter()
        .map(|w| WebhookRow {
            failing: failing.contains(&w.id),
            id: w.id.clone(),
            name: w.name.clone(),
            url: w.shown_url(),
            enabled: w.enabled,
            paused_at: paused.iter().find(|(id, _)| *id == w.id).map(|(_, t)| *t),
            events: w.events.iter().map(ToString::to_string).collect(),
            last_24h: counts
                .iter()
                .find(|(id, _)| *id == w.id)
                .map(|(_, c)| *c)
                .unwrap_or_default(),
        })
        .collect();
    Ok(Overview {
        now,
        resources,
        webhooks,
        paused,
        instances,
        shared: store.shared(),
    })
}

/// A page of the delivery log, and whether another page follows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogPage {
    pub rows: Vec<LogRow>,
    pub more: bool,
}

pub async fn delivery_log(store: &Store, query: &LogQuery) -> Result<LogPage, StoreError> {
    let mut q = query.clone();
    q.limit = query.limit.saturating_add(1);
    let mut rows = store.delivery_log(&q).await?;
    let more = rows.len() > query.limit;
    rows.truncate(query.limit);
    Ok(LogPage { rows, more })
}

/// One delivery with its exact payload and every attempt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    /// The webhook's redacted URL, if it is still configured.
    pub url: Option<String>,
    pub payload: String,
    pub attempts: Vec<AttemptView>,
}

pub async fn delivery_detail(
    store: &Store,
    config: &Config,
    id: &str,
) -> Result<Option<DeliveryDetail>, StoreError> {
    let Some((delivery, payload, attempts)) = store.delivery(id).await? else {
        return Ok(None);
    };
    let url = config
        .webhooks
        .iter()
        .find(|w| w.id == delivery.webhook_id)
        .map(|w| w.shown_url());
    Ok(Some(DeliveryDetail {
        delivery,
        url,
        payload,
        attempts,
    }))
}

/// An account's page: its resources, the polls this process ran, and its
/// events per hour over the last 48 h.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountView {
    pub id: String,
    pub provider: Option<String>,
    pub enabled: bool,
    pub resources: Vec<ResourceRow>,
    pub polls: Vec<crate::metrics::PollRecord>,
    /// 48 hourly buckets, oldest first: (hour, created, updated, deleted,
    /// other).
    pub hours: Vec<HourBucket>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HourBucket {
    pub hour: DateTime<Utc>,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub other: u64,
}

pub const CHART_HOURS: i64 = 48;

pub async fn account(
    store: &Store,
    config: &Config,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<AccountView>, StoreError> {
    let configured = config.accounts.iter().find(|a| a.id == id);
    let ov = overview(store, config, now).await?;
    let resources: Vec<ResourceRow> = ov
        .resources
        .into_iter()
        .filter(|r| r.poll.account_id == id)
        .collect();
    if configured.is_none() && resources.is_empty() {
        return Ok(None);
    }
    let start = hour_floor(now) - chrono::Duration::hours(CHART_HOURS - 1);
    let counts = store.events_per_hour(id, start).await?;
    Ok(Some(AccountView {
        id: id.to_string(),
        provider: configured.map(|a| a.provider.clone()),
        enabled: configured.is_some_and(|a| a.enabled),
        resources,
        polls: crate::metrics::recent_polls(id, 50),
        hours: buckets(start, &counts),
    }))
}

fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    crate::store::from_ms(ms - ms.rem_euclid(3_600_000))
}

/// Spreads per-type hourly counts over [`CHART_HOURS`] buckets from `start`.
pub fn buckets(start: DateTime<Utc>, counts: &[HourCount]) -> Vec<HourBucket> {
    let mut out: Vec<HourBucket> = (0..CHART_HOURS)
        .map(|i| HourBucket {
            hour: start + chrono::Duration::hours(i),
            ..Default::default()
        })
        .collect();
    for c in counts {
        let i = (c.hour - start).num_hours();
        let Some(b) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        match c.event_type.rsplit('.').next() {
            Some("created") if !c.event_type.starts_with("account.") => b.created += c.count,
            Some("updated") if !c.event_type.starts_with("account.") => b.updated += c.count,
            Some("deleted") if !c.event_type.starts_with("account.") => b.deleted += c.count,
            _ => b.other += c.count,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_place_counts_by_hour_and_change() {
        let start = crate::store::from_ms(1_700_000_000_000 - 1_700_000_000_000 % 3_600_000);
        let h = |i: i64| start + chrono::Duration::hours(i);
        let counts = vec![
            HourCount {
                hour: h(0),
                event_type: "hris_employees.created".into(),
                count: 3,
            },
            HourCount {
                hour: h(47),
                event_type: "hris_employees.deleted".into(),
                count: 2,
            },
            HourCount {
                hour: h(47),
                event_type: "account.created".into(),
                count: 1,
            },
            HourCount {
                hour: h(48),
                event_type: "hris_employees.updated".into(),
                count: 9,
            },
        ];
        let b = buckets(start, &counts);
        assert_eq!(b.len(), 48);
        assert_eq!(b[0].created, 3);
        assert_eq!((b[47].deleted, b[47].other), (2, 1));
        assert_eq!(b.iter().map(|b| b.updated).sum::<u64>(), 0);
    }
}

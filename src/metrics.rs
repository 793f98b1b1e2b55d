//! The process's Prometheus series (`prometheus-client`).
//!
//! Counters and histograms are updated where the work happens (a poll ends
//! in [`crate::poll::poll_account`], an attempt ends in
//! [`crate::deliver::Deliverer::attempt`]), never recomputed from the store.
//! The gauges that describe the state are read at scrape time from small,
//! indexed figures only (the poll state rows, pending deliveries through the
//! `(status, …)` index, the paused webhooks), so a scrape stays cheap with
//! millions of delivery rows. Every series is listed in the README.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{NextStep, Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub resource: String,
    pub change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub result: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    pub account: String,
    pub resource: String,
}

/// Every series of this process.
pub struct Metrics {
    registry: Registry,
    pub polls: Family<ResultLabel, Counter>,
    pub poll_duration: Histogram,
    pub pages: Counter,
    pub records_scanned: Counter,
    pub events: Family<EventLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_duration: Histogram,
    pub retries: Counter,
    deliveries_pending: Gauge,
    oldest_pending_age: Gauge,
    paused_webhooks: Gauge,
    resources: Family<StateLabel, Gauge>,
    records_tracked: Family<PairLabels, Gauge>,
}

/// The one registry of the process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("synthd");
        let polls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "polls",
            "Polls of one account/resource, by result (ok, failed, skipped).",
            polls.clone(),
        );
        // 10 ms .. ~20 min.
        let poll_duration = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1200.0,
        ]);
        registry.register_with_unit(
            "poll_duration",
            "How long one account/resource poll took, from the first request to the commit.",
            prometheus_client::registry::Unit::Seconds,
            poll_duration.clone(),
        );
        let pages = Counter::default();
        registry.register("pages_fetched", "Provider pages fetched.", pages.clone());
        let records_scanned = Counter::default();
        registry.register(
            "records_scanned",
            "Records read from provider pages and hashed.",
            records_scanned.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Record events emitted, by resource and change (created, updated, deleted): the event type is <resource>.<change>.",
            events.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts, by result (delivered, retry, failed) and HTTP status class (2xx, 3xx, 4xx, 5xx, none).",
            deliveries.clone(),
        );
        let delivery_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register_with_unit(
            "delivery_duration",
            "Latency of one delivery attempt, from sending the request to the end of the response.",
            prometheus_client::registry::Unit::Seconds,
            delivery_duration.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "delivery_retries_scheduled",
            "Failed attempts after which a retry was scheduled.",
            retries.clone(),
        );
        let deliveries_pending = Gauge::default();
        registry.register(
            "deliveries_pending",
            "Deliveries waiting to be sent (first attempt or a retry).",
            deliveries_pending.clone(),
        );
        let oldest_pending_age = Gauge::default();
        registry.register_with_unit(
            "oldest_pending_delivery_age",
            "Age of the oldest pending delivery (0 when none is pending).",
            prometheus_client::registry::Unit::Seconds,
            oldest_pending_age.clone(),
        );
        let paused_webhooks = Gauge::default();
        registry.register(
            "paused_webhooks",
            "Webhooks paused after 5 days of failures.",
            paused_webhooks.clone(),
        );
        let resources = Family::<StateLabel, Gauge>::default();
        registry.register(
            "resources",
            "Account/resource pairs by the state of their last poll (ok, failing).",
            resources.clone(),
        );
        let records_tracked = Family::<PairLabels, Gauge>::default();
        registry.register(
            "records_tracked",
            "Records whose hash is stored, per account and resource.",
            records_tracked.clone(),
        );
        Metrics {
            registry,
            polls,
            poll_duration,
            pages,
            records_scanned,
            events,
            deliveries,
            delivery_duration,
            retries,
            deliveries_pending,
            oldest_pending_age,
            paused_webhooks,
            resources,
            records_tracked,
        }
    }

    /// One account/resource poll ended.
    pub fn poll_done(
        &self,
        resource: &str,
        result: &'static str,
        duration: Duration,
        summary: Option<PollFigures>,
    ) {
        self.polls.get_or_create(&ResultLabel { result }).inc();
        if result == "skipped" {
            return;
        }
        self.poll_duration.observe(duration.as_secs_f64());
        if let Some(s) = summary {
            self.pages.inc_by(s.pages);
            self.records_scanned.inc_by(s.records);
            if s.emitted {
                for (change, n) in [
                    ("created", s.created),
                    ("updated", s.updated),
                    ("deleted", s.deleted),
                ] {
                    if n > 0 {
                        self.events
                            .get_or_create(&EventLabels {
                                resource: resource.to_string(),
                                change,
                            })
                            .inc_by(n);
                    }
                }
            }
        }
    }

    /// One delivery attempt ended.
    pub fn attempt_done(&self, status: Option<u16>, duration_ms: u64, next: NextStep) {
        let result = match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => {
                self.retries.inc();
                "retry"
            }
            NextStep::Failed => "failed",
        };
        let status_class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "none",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                result,
                status_class,
            })
            .inc();
        self.delivery_duration
            .observe(Duration::from_millis(duration_ms).as_secs_f64());
    }

    /// The exposition text: the state gauges are refreshed from the store's
    /// cheap figures first.
    pub async fn render(&self, store: &Store, now: DateTime<Utc>) -> Result<String, StoreError> {
        let pending = store.pending_deliveries().await?;
        let oldest = store.oldest_pending_at().await?;
        let polls = store.poll_status().await?;
        let paused = store.paused_webhooks().await?;
        self.deliveries_pending.set(pending as i64);
        self.oldest_pending_age
            .set(oldest.map_or(0, |t| (now - t).num_seconds().max(0)));
        self.paused_webhooks.set(paused.len() as i64);
        let failing = polls.iter().filter(|p| p.consecutive_failures > 0).count();
        self.resources
            .get_or_create(&StateLabel { state: "ok" })
            .set((polls.len() - failing) as i64);
        self.resources
            .get_or_create(&StateLabel { state: "failing" })
            .set(failing as i64);
        self.records_tracked.clear();
        for p in &polls {
            self.records_tracked
                .get_or_create(&PairLabels {
                    account: p.account_id.clone(),
                    resource: p.resource.clone(),
                })
                .set(p.records as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| StoreError::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

/// The figures of a finished poll the counters need.
#[derive(Debug, Clone, Copy)]
pub struct PollFigures {
    pub pages: u64,
    pub records: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub emitted: bool,
}

/// One finished poll, kept in memory for the console's account page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PollRecord {
    pub account_id: String,
    pub resource: String,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// ok, failed or skipped.
    pub result: &'static str,
    pub records: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub pages: u64,
    pub error: Option<String>,
}

/// How many finished polls this process remembers.
const RECENT_POLLS: usize = 1000;

static RECENT: LazyLock<std::sync::Mutex<std::collections::VecDeque<PollRecord>>> =
    LazyLock::new(Default::default);

/// The polls this process finished, newest first, of one account.
pub fn recent_polls(account_id: &str, limit: usize) -> Vec<PollRecord> {
    let recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    recent
        .iter()
        .rev()
        .filter(|p| p.account_id == account_id)
        .take(limit)
        .cloned()
        .collect()
}

/// Counts a finished account/resource poll and remembers it.
pub fn poll_finished(
    account_id: &str,
    resource: &str,
    now: DateTime<Utc>,
    duration: Duration,
    result: &Result<crate::poll::PollSummary, crate::poll::PollError>,
) {
    let (label, figures, error) = match result {
        Ok(s) => (
            "ok",
            Some(PollFigures {
                pages: s.pages,
                records: s.records,
                created: s.created,
                updated: s.updated,
                deleted: s.deleted,
                emitted: s.emitted,
            }),
            None,
        ),
        Err(e) if e.is_skip() => ("skipped", None, Some(e.to_string())),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    METRICS.poll_done(resource, label, duration, figures);
    let f = figures.unwrap_or(PollFigures {
        pages: 0,
        records: 0,
        created: 0,
        updated: 0,
        deleted: 0,
        emitted: false,
    });
    let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    if recent.len() == RECENT_POLLS {
        recent.pop_front();
    }
    recent.push_back(PollRecord {
        account_id: account_id.to_string(),
        resource: resource.to_string(),
        finished_at: now,
        duration_ms: duration.as_millis().min(u64::MAX as u128) as u64,
        result: label,
        records: f.records,
        created: f.created,
        updated: f.updated,
        deleted: f.deleted,
        pages: f.pages,
        error: error.map(|e| crate::redact::printable(&e).into_owned()),
    });
}

//! One poll of one account: for each resource, page through the provider,
//! digest each record, and commit each page's changes (hashes, events,
//! deliveries) before fetching the next. A scan that fetched every page
//! ends with deletions; one that failed anywhere deletes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::{Account, Config, Resource};
use crate::detect::{self, Hasher, RecordDigest};
use crate::provider::{FetchError, Pager, ProviderClient};
use crate::store::{PageCounts, ScanStart, Store, StoreError};

/// Everything a poll needs besides the config.
#[derive(Clone)]
pub struct PollContext {
    pub store: Store,
    pub client: ProviderClient,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
}

/// What one resource's poll did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PollSummary {
    pub records: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Deletions held back by the mass-deletion guard.
    pub held: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub pages: u64,
    pub full_scan: bool,
    pub baseline: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "{invalid} records had no usable id (first: {first}); check the resource's id pointer. \
         Changes to the other records were applied; deletions were skipped"
    )]
    InvalidRecords { invalid: u64, first: String },
}

/// The result for one resource of an account.
#[derive(Debug)]
pub struct ResourceOutcome {
    pub account_id: String,
    pub resource: String,
    pub duration: Duration,
    pub result: Result<PollSummary, PollError>,
}

/// Polls the account's resources one after another (or only `only`).
pub async fn poll_account(
    ctx: &PollContext,
    config: &Arc<Config>,
    account: &Account,
    only: Option<&str>,
) -> Vec<ResourceOutcome> {
    let provider = config.provider(&account.provider);
    let mut outcomes = Vec::new();
    for name in &account.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let resource = &provider.resources[name];
        let started = Instant::now();
        let result = poll_resource(ctx, config, account, resource).await;
        let duration = started.elapsed();
        let duration_ms = duration.as_millis() as u64;
        match &result {
            Ok(s) => tracing::info!(
                account = %account.id, resource = %name, records = s.records, created = s.created,
                updated = s.updated, deleted = s.deleted, held = s.held, pages = s.pages,
                full_scan = s.full_scan, baseline = s.baseline, duration_ms, "poll finished"
            ),
            Err(e) => tracing::warn!(
                account = %account.id, resource = %name, duration_ms, error = %e, "poll failed"
            ),
        }
        outcomes.push(ResourceOutcome {
            account_id: account.id.clone(),
            resource: name.clone(),
            duration,
            result,
        });
    }
    outcomes
}

/// Whether this scan may be incremental, and from when: the start of the
/// last successful poll minus the lookback (for clock skew and records the
/// provider indexes late). A scan is complete instead when there is no
/// baseline yet, when deletions are held and need a complete scan to
/// confirm them, or when the last complete scan is `full_scan_every` old.
fn incremental_since(
    resource: &Resource,
    scan: &ScanStart,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let us = resource.updated_since.as_ref()?;
    if !scan.baseline_done || scan.held {
        return None;
    }
    let last_success = scan.last_success_started_at?;
    let last_full = scan.last_full_scan_at?;
    let full_every = chrono::Duration::from_std(us.full_scan_every).ok()?;
    if now - last_full >= full_every {
        return None;
    }
    Some(last_success - chrono::Duration::from_std(us.lookback).ok()?)
}

pub async fn poll_resource(
    ctx: &PollContext,
    config: &Arc<Config>,
    account: &Account,
    resource: &Resource,
) -> Result<PollSummary, PollError> {
    let provider = config.provider(&account.provider);
    let now = ctx.clock.now();
    let (acct, res) = (account.id.clone(), resource.name.clone());
    let scan = ctx
        .store
        .blocking(move |s| s.begin_scan(&acct, &res, now))
        .await?;
    let since = incremental_since(resource, &scan, now);
    let emit = scan.baseline_done || account.emit_initial;
    let mut summary = PollSummary {
        full_scan: since.is_none(),
        baseline: !scan.baseline_done,
        ..Default::default()
    };
    let mut first_invalid = None;
    let result = async {
        let mut pager = Pager::new(&ctx.client, account, provider, resource, since);
        while let Some(records) = pager.next_page().await? {
            summary.pages = pager.pages_fetched();
            let (counts, invalid) = apply_page(ctx, config, resource, &scan, records, emit).await?;
            summary.records += counts.records;
            summary.created += counts.created;
            summary.updated += counts.updated;
            summary.duplicates += counts.duplicates;
            summary.invalid += invalid.len() as u64;
            if first_invalid.is_none() {
                first_invalid = invalid.into_iter().next();
            }
        }
        Ok::<_, PollError>(())
    }
    .await;
    if summary.duplicates > 0 {
        tracing::warn!(account = %account.id, resource = %resource.name, duplicates = summary.duplicates,
            "provider returned the same record id more than once in one scan: the listing shifted between pages, so records may have been skipped; later copies ignored and no deletions this scan");
    }
    let result = result.and_then(|()| match first_invalid.take() {
        Some(first) => Err(PollError::InvalidRecords {
            invalid: summary.invalid,
            first,
        }),
        None => Ok(()),
    });
    let finished = ctx.clock.now();
    match result {
        Ok(()) => {
            let webhooks = config.clone();
            // A record seen twice means the listing moved under the pager
            // and another record may have been skipped: a scan like that
            // must not delete. A silent baseline still completes (its
            // deletions emit nothing), or a provider that always repeats an
            // id would keep every later poll silent too; with emit_initial
            // the baseline's deletions are events, so it waits like any
            // other scan.
            let full = summary.full_scan && (summary.duplicates == 0 || !emit);
            let end = ctx
                .store
                .blocking(move |s| s.finish_scan(&scan, full, emit, &webhooks.webhooks, finished))
                .await?;
            summary.deleted = end.deleted;
            summary.held = end.held;
            if end.held > 0 {
                tracing::warn!(account = %account.id, resource = %resource.name, held = end.held,
                    "more than half of the known records vanished in one scan; holding the deletions until the next complete scan confirms them");
            }
            Ok(summary)
        }
        Err(e) => {
            let message = e.to_string();
            ctx.store
                .blocking(move |s| s.fail_scan(&scan, &message, finished))
                .await?;
            Err(e)
        }
    }
}

/// Digests and commits one page on a blocking thread. Returns the counts
/// and a description of each record that could not be digested.
async fn apply_page(
    ctx: &PollContext,
    config: &Arc<Config>,
    resource: &Resource,
    scan: &ScanStart,
    records: Vec<serde_json::Value>,
    emit: bool,
) -> Result<(PageCounts, Vec<String>), StoreError> {
    let hasher = ctx.hasher.clone();
    let id_pointer = resource.id.clone();
    let ignore = resource.ignore.clone();
    let scan = scan.clone();
    let config = config.clone();
    let now = ctx.clock.now();
    ctx.store
        .blocking(move |s| {
            let mut digests: Vec<RecordDigest> = Vec::with_capacity(records.len());
            let mut invalid = Vec::new();
            for (i, record) in records.into_iter().enumerate() {
                match detect::digest(record, i, &id_pointer, &ignore, &hasher) {
                    Ok(d) => digests.push(d),
                    Err(e) => invalid.push(e.to_string()),
                }
            }
            let counts = s.apply_page(&scan, &digests, emit, &config.webhooks, now)?;
            Ok((counts, invalid))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pagination, TimeFormat, UpdatedSince};

    fn resource(updated_since: Option<UpdatedSince>) -> Resource {
        Resource {
            name: "hris_employees".into(),
            path: "/employees".into(),
            records: String::new(),
            id: "/id".into(),
            pagination: Pagination::None,
            query: Vec::new(),
            headers: Vec::new(),
            ignore: Vec::new(),
            updated_since,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn scan(baseline_done: bool, held: bool) -> ScanStart {
        ScanStart {
            account_id: "a".into(),
            resource: "hris_employees".into(),
            scan: 3,
            baseline_done,
            held,
            last_success_started_at: Some(at("2026-11-23T10:00:00Z")),
            last_full_scan_at: Some(at("2026-11-23T00:00:00Z")),
            started_at: at("2026-11-23T10:10:00Z"),
        }
    }

    #[test]
    fn incremental_only_between_full_scans() {
        let us = UpdatedSince {
            param: "updated_after".into(),
            format: TimeFormat::Rfc3339,
            lookback: Duration::from_secs(300),
            full_scan_every: Duration::from_secs(86400),
        };
        let r = resource(Some(us));
        let now = at("2026-11-23T10:10:00Z");
        assert_eq!(
            incremental_since(&r, &scan(true, false), now),
            Some(at("2026-11-23T09:55:00Z")),
            "last successful start minus the lookback"
        );
        assert_eq!(
            incremental_since(&resource(None), &scan(true, false), now),
            None
        );
        assert_eq!(
            incremental_since(&r, &scan(false, false), now),
            None,
            "baseline"
        );
        assert_eq!(
            incremental_since(&r, &scan(true, true), now),
            None,
            "held deletions"
        );
        let day_later = at("2026-11-24T00:00:00Z");
        assert_eq!(incremental_since(&r, &scan(true, false), day_later), None);
    }
}

//! One poll of one account: for each resource, page through the provider,
//! digest each record, and commit each page's changes (hashes, events,
//! deliveries) before fetching the next. A scan that fetched every page
//! ends with deletions; one that failed anywhere deletes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::{Account, Config, Provider, Resource};
use crate::detect::{
    Digester, Hash, Hasher, Identified, RecordDigest, SeenIds, Sighting, raw_part,
};
use crate::ingest;
use crate::provider::{FetchError, Page, Pager, ProviderClient};
use crate::store::{ScanClaim, ScanRequest, ScanStart, Store, StoreError};

/// Everything a poll needs besides the config.
#[derive(Clone)]
pub struct PollContext {
    pub store: Store,
    pub client: ProviderClient,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
    /// Told when a page commit queued events, so the daemon delivers them
    /// while a long scan goes on (not only when it ends).
    pub events_queued: Arc<tokio::sync::Notify>,
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
    /// Records whose id was already seen in this scan (the listing shifted
    /// between pages): later copies are ignored and the scan deletes
    /// nothing.
    pub duplicates: u64,
    /// Records whose id equals another's only after canonicalisation (`1`
    /// and `"1"`): the later one is ignored; deletions still happen.
    pub collisions: u64,
    /// Records without a usable id: the scan deletes nothing.
    pub invalid: u64,
    /// Records with an id that cannot be hashed (nested too deep): kept as
    /// they were, never deleted.
    pub unhashable: u64,
    pub pages: u64,
    pub full_scan: bool,
    pub baseline: bool,
    /// Whether this poll's events were sent (false during a silent
    /// baseline).
    pub emitted: bool,
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
    #[error("skipped: another synthd ({holder}) is scanning this account/resource right now")]
    Busy {
        holder: String,
        /// When the holder's claim lapses unless it renews it.
        until: DateTime<Utc>,
    },
    #[error(
        "skipped: another synthd polled this account/resource at {at} (after this one last did)"
    )]
    PolledElsewhere { at: DateTime<Utc> },
    #[error("internal error while polling (a bug; please report it): {0}")]
    Internal(String),
}

impl PollError {
    /// A pair left to another process is not a failure.
    pub fn is_skip(&self) -> bool {
        matches!(
            self,
            PollError::Busy { .. } | PollError::PolledElsewhere { .. }
        )
    }
}

/// How a poll was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollMode {
    /// With a shared store, a pair whose scan started after this time (in
    /// another process) is skipped: the schedule lives in the database.
    /// `None` (`sync`): poll now whatever the schedule; a pair being
    /// scanned elsewhere is still skipped.
    pub skip_if_started_after: Option<DateTime<Utc>>,
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
    mode: PollMode,
) -> Vec<ResourceOutcome> {
    let provider = config.provider(&account.provider);
    let mut outcomes = Vec::new();
    for name in &account.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let resource = &provider.resources[name];
        let started = Instant::now();
        let result = poll_resource(ctx, config, account, resource, mode).await;
        let duration = started.elapsed();
        let duration_ms = duration.as_millis() as u64;
        match &result {
            Ok(s) => tracing::info!(
                account = %account.id, resource = %name, records = s.records, created = s.created,
                updated = s.updated, deleted = s.deleted, held = s.held, pages = s.pages,
                full_scan = s.full_scan, baseline = s.baseline, duration_ms, "poll finished"
            ),
            Err(e) if e.is_skip() => tracing::info!(
                account = %account.id, resource = %name, reason = %e, "poll skipped"
            ),
            Err(e) => tracing::warn!(
                account = %account.id, resource = %name, duration_ms, error = %e, "poll failed"
            ),
        }
        crate::metrics::poll_finished(&account.id, name, ctx.clock.now(), duration, &result);
        outcomes.push(ResourceOutcome {
            account_id: account.id.clone(),
            resource: name.clone(),
            duration,
            result,
        });
    }
    outcomes
}

/// A stored time later than `now` can only come from a clock that was
/// wrong when it was written. It is treated as unknown, so the scan that
/// relies on it is complete rather than trusting it.
fn trusted(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    t.filter(|t| *t <= now)
}

/// Whether this scan may be incremental, and from when: the start of the
/// last successful poll minus the lookback (for clock skew and records the
/// provider indexes late). A scan is complete instead when there is no
/// baseline yet, when deletions are held and need a complete scan to
/// confirm them, when the last complete scan is `full_scan_every` old, or
/// when a stored time lies in the future.
fn incremental_since(
    resource: &Resource,
    scan: &ScanStart,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let us = resource.updated_since.as_ref()?;
    if !scan.baseline_done || scan.held {
        return None;
    }
    let last_success = trusted(scan.last_success_started_at, now)?;
    let last_full = trusted(scan.last_full_scan_at, now)?;
    let full_every = chrono::Duration::from_std(us.full_scan_every).ok()?;
    if now - last_full >= full_every {
        return None;
    }
    Some(last_success - chrono::Duration::from_std(us.lookback).ok()?)
}

/// What one page's digesting found, besides the digests.
#[derive(Default)]
struct Digested {
    digests: Vec<RecordDigest>,
    /// The stored hash of each digest's id, when the fast path already read
    /// them (otherwise the commit stage does).
    stored: Option<Vec<Option<Hash>>>,
    invalid: Vec<String>,
    /// A record that is not JSON makes the whole body not JSON: the page
    /// fails (the page scan only found where each record ends).
    not_json: Option<FetchError>,
    duplicates: u64,
    collisions: u64,
    unhashable: u64,
}

/// The raw-bytes fast path's first findings for a page: each record's id
/// and raw-text hash (`None`: no usable id), and the stored hash of each
/// identified record's id, in order.
struct Known {
    identified: Vec<Option<Identified>>,
    stored: Vec<Option<Hash>>,
}

/// What the fast path knows of one record: its id and raw-text hash, and
/// the hash stored under that id (`None` for the record: no usable id).
type Lookup<'a> = Option<(&'a Identified, Option<&'a Hash>)>;

/// Pages at least this long are digested on two threads (the machine's
/// second core does half); shorter ones are not worth a thread.
const SPLIT_AT: usize = 64;

/// `f` over every record of a page, in order: when `work` (how many
/// records need real work) is large, the second half on a second thread
/// with the second digester.
fn each_record<T: Send>(
    records: &[&str],
    work: usize,
    digesters: &mut [Digester; 2],
    f: impl Fn(&mut Digester, &str, usize) -> T + Sync,
) -> Vec<T> {
    let [first, second] = digesters;
    let all = |digester: &mut Digester, records: &[&str], offset: usize| {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| f(digester, r, offset + i))
            .collect::<Vec<_>>()
    };
    if work < SPLIT_AT {
        return all(first, records, 0);
    }
    let (a, b) = records.split_at(records.len() / 2);
    std::thread::scope(|scope| {
        let later = scope.spawn(|| all(second, b, a.len()));
        let mut results = all(first, a, 0);
        match later.join() {
            Ok(rest) => results.extend(rest),
            // A panic in the helper thread is a bug: raise it here,
            // where the pipeline turns it into an internal error.
            Err(panic) => std::panic::resume_unwind(panic),
        }
        results
    })
}

/// Digests every record of a page (on a blocking thread: this is the CPU
/// work) and then sorts out repeats in page order. With `known`, a record
/// whose raw text hashes to what is stored for its id takes its stored
/// digest instead of being canonicalised again. `seen` and the digesters
/// travel with it.
fn digest_page(
    page: Page,
    digesters: &mut [Digester; 2],
    seen: &mut SeenIds,
    known: Option<Known>,
) -> Digested {
    let records: Vec<&str> = page.records().collect();
    // Each record's (identified, stored hash), when the fast path ran.
    let lookups: Option<Vec<Lookup>> = known.as_ref().map(|k| {
        let mut stored = k.stored.iter();
        k.identified
            .iter()
            .map(|i| {
                let i = i.as_ref()?;
                Some((i, stored.next().and_then(Option::as_ref)))
            })
            .collect()
    });
    // Records the fast path cannot settle (all of them without it).
    let slow = lookups.as_ref().map_or(records.len(), |l| {
        l.iter()
            .filter(|k| !matches!(k, Some((k, Some(h))) if raw_part(h) == k.raw))
            .count()
    });
    let results = each_record(&records, slow, digesters, |digester, record, i| {
        let known = lookups.as_ref().and_then(|l| l[i]);
        digester.digest_known(record, i, known)
    });
    let mut out = Digested {
        digests: Vec::with_capacity(results.len()),
        stored: lookups.as_ref().map(|_| Vec::with_capacity(results.len())),
        ..Default::default()
    };
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(d) => match seen.see(&d.id, d.numeric) {
                Sighting::First => {
                    if let Some(stored) = &mut out.stored {
                        // The stored hash read under the identified id is
                        // this digest's only if the ids agree (they do for
                        // any valid record); if not, the commit stage reads.
                        match lookups.as_ref().and_then(|l| l[i]) {
                            Some((known, hash)) if known.id == d.id => stored.push(hash.copied()),
                            _ => out.stored = None,
                        }
                    }
                    out.digests.push(d);
                }
                Sighting::Duplicate => out.duplicates += 1,
                Sighting::Collision => out.collisions += 1,
            },
            Err(crate::detect::RecordError::Syntax { index, detail }) => {
                out.not_json = Some(FetchError::RecordNotJson {
                    url: page.url.clone(),
                    index,
                    detail,
                });
                return out;
            }
            Err(e) => match e.unhashable_id() {
                // Kept as it was: seen (so not deleted), never updated.
                Some(id) => {
                    out.unhashable += 1;
                    seen.see(id, false);
                }
                None => out.invalid.push(e.to_string()),
            },
        }
    }
    out
}

/// The fast path's first step for a page (on a blocking thread): every
/// record's id and raw-text hash.
fn identify_page(page: &Page, digesters: &mut [Digester; 2]) -> Vec<Option<Identified>> {
    let records: Vec<&str> = page.records().collect();
    each_record(&records, records.len(), digesters, |digester, record, _| {
        digester.identify(record)
    })
}

pub async fn poll_resource(
    ctx: &PollContext,
    config: &Arc<Config>,
    account: &Account,
    resource: &Resource,
    mode: PollMode,
) -> Result<PollSummary, PollError> {
    let provider = config.provider(&account.provider);
    let now = ctx.clock.now();
    let claim = ctx
        .store
        .begin_scan(&ScanRequest {
            account_id: account.id.clone(),
            resource: resource.name.clone(),
            shape: resource.shape_fingerprint(),
            now,
            skip_if_started_after: mode.skip_if_started_after,
        })
        .await?;
    let scan = match claim {
        ScanClaim::Started(s) => s,
        ScanClaim::Busy { holder, until } => return Err(PollError::Busy { holder, until }),
        ScanClaim::Done { last_started_at } => {
            return Err(PollError::PolledElsewhere {
                at: last_started_at,
            });
        }
    };
    if scan.reshaped {
        tracing::warn!(account = %account.id, resource = %resource.name,
            "the resource's records, id or ignore settings (or synthd's canonical form) changed, so stored \
             hashes no longer compare: this scan re-baselines silently (no events for changes made meanwhile)");
    }
    for (what, t) in [
        ("last full scan", scan.last_full_scan_at),
        ("last successful poll", scan.last_success_started_at),
    ] {
        if t.is_some_and(|t| t > now) {
            tracing::warn!(account = %account.id, resource = %resource.name, stored = %t.unwrap_or_default(),
                "the stored time of the {what} lies in the future (the clock was wrong when it was written); \
                 treating it as unknown: this scan is a full scan");
        }
    }
    let since = incremental_since(resource, &scan, now);
    // emit_initial asks for events from the very first baseline only; a
    // re-baseline after an operator's edit is always silent.
    let emit = scan.baseline_done || (account.emit_initial && scan.first_baseline);
    let mut summary = PollSummary {
        full_scan: since.is_none(),
        baseline: !scan.baseline_done,
        emitted: emit,
        ..Default::default()
    };
    let mut first_invalid = None;
    // Room for every known id, so the set is allocated once.
    let seen = SeenIds::with_capacity(scan.known_before as usize + 1024);
    let (result, seen) = scan_pages(
        ctx,
        config,
        (account, provider, resource),
        &scan,
        since,
        emit,
        seen,
        &mut summary,
        &mut first_invalid,
    )
    .await;
    if summary.duplicates > 0 {
        tracing::warn!(account = %account.id, resource = %resource.name, duplicates = summary.duplicates,
            "provider returned the same record id more than once in one scan: the listing shifted between pages, so records may have been skipped; later copies ignored and no deletions this scan");
    }
    if summary.collisions > 0 {
        tracing::warn!(account = %account.id, resource = %resource.name, collisions = summary.collisions,
            "records whose ids differ only in type (the number 1 and the string \"1\") share one canonical id; \
             the later of each pair is ignored. Deletions still apply");
    }
    if summary.unhashable > 0 {
        tracing::warn!(account = %account.id, resource = %resource.name, unhashable = summary.unhashable,
            "records nested too deeply to hash were kept as they were (not updated, not deleted)");
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
            // A record seen twice means the listing moved under the pager
            // and another record may have been skipped: a scan like that
            // must not delete. A silent baseline still completes (its
            // deletions emit nothing), or a provider that always repeats an
            // id would keep every later poll silent too; with emit_initial
            // the baseline's deletions are events, so it waits like any
            // other scan.
            let full = summary.full_scan && (summary.duplicates == 0 || !emit);
            let missing = if full {
                ctx.store.missing_ids(&scan, Arc::new(seen)).await?
            } else {
                drop(seen);
                Vec::new()
            };
            let (rows, end) =
                ingest::scan_end(&scan, missing, full, emit, &config.webhooks, finished);
            ctx.store.finish_scan(&scan, rows).await?;
            summary.deleted = end.deleted;
            summary.held = end.held;
            if end.held > 0 {
                tracing::warn!(account = %account.id, resource = %resource.name, held = end.held,
                    "more than half of the known records vanished in one scan; holding the deletions until the next complete scan confirms them");
            }
            Ok(summary)
        }
        Err(e) => {
            ctx.store.fail_scan(&scan, &e.to_string(), finished).await?;
            Err(e)
        }
    }
}

/// Fetches pages and applies them, in three stages that overlap: while
/// page N is compared and committed, page N+1 is digested and page N+2
/// fetched and read. The fetch stage is a task of its own (reading pages
/// is CPU work that must not hold up the other two stages); the CPU work of
/// digesting runs on blocking threads. At most one page waits between two
/// stages, so memory stays bounded by a few pages.
#[allow(clippy::too_many_arguments)]
async fn scan_pages(
    ctx: &PollContext,
    config: &Arc<Config>,
    (account, provider, resource): (&Account, &Provider, &Resource),
    scan: &ScanStart,
    since: Option<DateTime<Utc>>,
    emit: bool,
    seen: SeenIds,
    summary: &mut PollSummary,
    first_invalid: &mut Option<String>,
) -> (Result<(), PollError>, SeenIds) {
    type Fetched = (Page, u64, Option<Vec<Option<Identified>>>);
    let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel::<Fetched>(1);
    let (digests_tx, mut digests_rx) = tokio::sync::mpsc::channel::<(Digested, u64)>(1);
    // The raw-bytes fast path needs hashes from a completed baseline of
    // the current shape and hash key (a re-baseline clears `baseline_done`).
    let fast = scan.baseline_done;
    // Dropping the set (the poll cancelled) stops the fetch task too.
    let mut fetcher = tokio::task::JoinSet::new();
    fetcher.spawn({
        let (client, hasher) = (ctx.client.clone(), ctx.hasher.clone());
        let (account, provider, resource) = (account.clone(), provider.clone(), resource.clone());
        async move {
            let mut pager = Pager::new(&client, &account, &provider, &resource, since);
            // Fast path, first step: each record's id and raw-text hash.
            let mut digesters = [
                Digester::new(resource.shape(), hasher.clone()),
                Digester::new(resource.shape(), hasher),
            ];
            while let Some(mut page) = pager.next_page().await? {
                let mut identified = None;
                if fast {
                    let ids;
                    (ids, page, digesters) = tokio::task::spawn_blocking(move || {
                        (identify_page(&page, &mut digesters), page, digesters)
                    })
                    .await
                    .map_err(|e| PollError::Internal(crate::store::panic_text(e)))?;
                    identified = Some(ids);
                }
                if pages_tx
                    .send((page, pager.pages_fetched(), identified))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok::<_, PollError>(())
        }
    });
    let fetch = async move {
        match fetcher.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(PollError::Internal(crate::store::panic_text(e))),
            None => Ok(()),
        }
    };
    let digest = async move {
        let mut digester = [
            Digester::new(resource.shape(), ctx.hasher.clone()),
            Digester::new(resource.shape(), ctx.hasher.clone()),
        ];
        let mut seen = seen;
        while let Some((page, pages, identified)) = pages_rx.recv().await {
            let mut known = None;
            if let Some(identified) = identified {
                let ids: Vec<String> = identified.iter().flatten().map(|k| k.id.clone()).collect();
                let stored = match ctx.store.stored_hashes(scan, ids).await {
                    Ok(stored) => stored,
                    Err(e) => return (Err(e.into()), SeenIds::with_capacity(0)),
                };
                known = Some(Known { identified, stored });
            }
            let joined = tokio::task::spawn_blocking(move || {
                let out = digest_page(page, &mut digester, &mut seen, known);
                (out, digester, seen)
            })
            .await;
            let out;
            (out, digester, seen) = match joined {
                Ok(v) => v,
                Err(e) => {
                    return (
                        Err(PollError::Internal(crate::store::panic_text(e))),
                        SeenIds::with_capacity(0),
                    );
                }
            };
            if digests_tx.send((out, pages)).await.is_err() {
                break;
            }
        }
        (Ok(()), seen)
    };
    let apply = async move {
        while let Some((out, pages)) = digests_rx.recv().await {
            summary.pages = pages;
            if let Some(e) = out.not_json {
                return Err(e.into());
            }
            summary.duplicates += out.duplicates;
            summary.collisions += out.collisions;
            summary.unhashable += out.unhashable;
            summary.invalid += out.invalid.len() as u64;
            if first_invalid.is_none() {
                *first_invalid = out.invalid.into_iter().next();
            }
            apply_digests(ctx, config, scan, &out.digests, out.stored, emit, summary).await?;
        }
        Ok(())
    };
    // A stage that stops drops its channel ends, which stops the stages
    // before it; the first error wins.
    let (fetched, (digested, seen), applied) = tokio::join!(fetch, digest, apply);
    (applied.and(digested).and(fetched), seen)
}

/// Compares one page's digests with the stored hashes and commits the
/// changes with their events.
async fn apply_digests(
    ctx: &PollContext,
    config: &Arc<Config>,
    scan: &ScanStart,
    digests: &[RecordDigest],
    stored: Option<Vec<Option<Hash>>>,
    emit: bool,
    summary: &mut PollSummary,
) -> Result<(), PollError> {
    let stored = match stored {
        Some(stored) => stored,
        None => {
            let ids: Vec<String> = digests.iter().map(|d| d.id.clone()).collect();
            ctx.store.stored_hashes(scan, ids).await?
        }
    };
    let (rows, changes) = ingest::page(
        scan,
        digests,
        &stored,
        emit,
        &config.webhooks,
        ctx.clock.now(),
    );
    ctx.store.commit_page(scan, rows).await?;
    if emit && changes.created + changes.updated > 0 {
        ctx.events_queued.notify_one();
    }
    summary.records += changes.records;
    summary.created += changes.created;
    summary.updated += changes.updated;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pagination, TimeFormat, UpdatedSince};

    fn resource(updated_since: Option<UpdatedSince>) -> Resource {
        Resource {
            name: "hris_employees".into(),
            path: "/employees".into(),
            method: crate::config::Method::Get,
            body: None,
            records: crate::json::Pointer::default(),
            id: crate::json::Pointer::parse("/id").unwrap(),
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
            stream: 1,
            fence: 3,
            account_id: "a".into(),
            resource: "hris_employees".into(),
            scan: 3,
            baseline_done,
            held,
            last_success_started_at: Some(at("2026-11-23T10:00:00Z")),
            last_full_scan_at: Some(at("2026-11-23T00:00:00Z")),
            started_at: at("2026-11-23T10:10:00Z"),
            known_before: 0,
            first_baseline: false,
            reshaped: false,
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
        // A clock that was a year ahead wrote these: not trusted, full scan.
        let mut future = scan(true, false);
        future.last_full_scan_at = Some(at("2027-11-23T00:00:00Z"));
        assert_eq!(
            incremental_since(&r, &future, now),
            None,
            "future full scan"
        );
        let mut future = scan(true, false);
        future.last_success_started_at = Some(at("2027-11-23T00:00:00Z"));
        assert_eq!(incremental_since(&r, &future, now), None, "future success");
    }
}

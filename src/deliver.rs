//! The outbox worker: sends due deliveries, records every attempt, and
//! schedules retries.
//!
//! Retries after a failure: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each
//! ±10 % jitter, or a receiver's longer `Retry-After`; after the eighth
//! attempt the delivery is `failed`. 2xx is success; anything else,
//! redirects included (they are not followed), is a failure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::config::{Config, Webhook};
use crate::net;
use crate::redact::printable;
use crate::signing;
use crate::store::{AttemptOutcome, AttemptRecord, DueDelivery, NextStep, Store, StoreError};

/// Delays before attempts 2..=8.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `Retry-After` a receiver gets honoured: the schedule's
/// longest step. A longer one (an epoch mistaken for seconds, say) would
/// hold that record's later events for as long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

/// Requests in flight across all webhooks beyond each webhook's first.
/// Every webhook may always have one request in flight, so a healthy
/// webhook keeps flowing however many others hang; the rest of each
/// webhook's `concurrency` comes from this shared pool, which bounds the
/// sockets (and file descriptors) hung receivers can hold.
pub const SHARED_EXTRA_REQUESTS: usize = 256;

/// How long a delivery whose attempt could not be recorded waits before it
/// is sent again.
const UNRECORDED_RETRY: Duration = Duration::from_secs(60);

/// How much of a receiver's response body the attempt log keeps.
const RESPONSE_BODY_LIMIT: usize = 1024;

/// The delay before the next attempt after `attempts_made` failed attempts,
/// or `None` when the schedule is exhausted. `jitter` is in [-1, 1] and
/// scales to ±10 %.
pub fn retry_delay(
    attempts_made: u32,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let idx = attempts_made.checked_sub(1)? as usize;
    let base = *RETRY_SCHEDULE.get(idx)?;
    let jittered = base.mul_f64(1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    Some(match retry_after.map(|ra| ra.min(MAX_RETRY_AFTER)) {
        Some(ra) if ra > jittered => ra,
        _ => jittered,
    })
}

/// What one HTTP attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub record: AttemptRecord,
    pub success: bool,
    pub retry_after: Option<Duration>,
}

/// Sends webhook requests. One shared client (keep-alive pool), redirects
/// off.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub fn new() -> Self {
        Sender {
            http: net::client(net::Redirects::None),
        }
    }

    /// One signed POST of `payload` to `webhook`.
    pub async fn send(
        &self,
        webhook: &Webhook,
        event_id: &str,
        payload: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> AttemptResult {
        let keys: Vec<Vec<u8>> = webhook.secrets.iter().map(|s| s.key_bytes()).collect();
        let timestamp = now.timestamp();
        let body = payload.as_bytes();
        let request = self
            .http
            .post(webhook.url.clone())
            .timeout(webhook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signing::standard_signature(&keys, event_id, timestamp, body),
            )
            .header(
                webhook.signature_header.as_str(),
                signing::hex_signature(&keys[0], body),
            )
            .body(payload.to_string());
        let started = Instant::now();
        let mut record = AttemptRecord {
            number: attempt,
            started_at: now,
            status_code: None,
            duration_ms: 0,
            response_body: None,
            error_kind: None,
            error: None,
        };
        let mut retry_after = None;
        let mut success = false;
        match request.send().await {
            Ok(mut resp) => {
                let status = resp.status();
                record.status_code = Some(status.as_u16());
                if status.as_u16() == 429 || status.as_u16() == 503 {
                    retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| net::parse_retry_after(v, now));
                }
                let mut kept = Vec::new();
                // Read at most 1 KiB, still within the timeout; a receiver
                // trickling its body does not hold the attempt open, and what
                // arrived before the timeout is kept.
                let _ = tokio::time::timeout(webhook.timeout, async {
                    while kept.len() < RESPONSE_BODY_LIMIT {
                        match resp.chunk().await {
                            Ok(Some(c)) => kept.extend_from_slice(&c),
                            _ => break,
                        }
                    }
                })
                .await;
                kept.truncate(RESPONSE_BODY_LIMIT);
                if !kept.is_empty() {
                    record.response_body = Some(String::from_utf8_lossy(&kept).into_owned());
                }
                if status.is_success() {
                    success = true;
                } else {
                    record.error_kind = Some(
                        if status.is_redirection() {
                            "redirect"
                        } else {
                            "status"
                        }
                        .into(),
                    );
                    record.error = Some(format!("HTTP {}", status.as_u16()));
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                record.error_kind = Some(kind.into());
                record.error = Some(net::error_chain(&e.without_url()));
            }
        }
        record.duration_ms = started.elapsed().as_millis() as u64;
        AttemptResult {
            record,
            success,
            retry_after,
        }
    }
}

/// Turns an attempt into the delivery's next state.
pub fn next_step(result: &AttemptResult, now: DateTime<Utc>, jitter: f64) -> NextStep {
    if result.success {
        return NextStep::Delivered;
    }
    match retry_delay(result.record.number, jitter, result.retry_after) {
        // The delay is at most the longest step plus jitter, so this never
        // overflows; should it, the retry is due at once rather than never.
        Some(d) => NextStep::RetryAt(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now),
        ),
        None => NextStep::Failed,
    }
}

/// Counts from a delivery pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassSummary {
    pub attempted: u64,
    pub delivered: u64,
    pub retrying: u64,
    pub failed: u64,
}

impl PassSummary {
    fn count(&mut self, step: Option<NextStep>) {
        match step {
            Some(NextStep::Delivered) => self.delivered += 1,
            Some(NextStep::RetryAt(_)) => self.retrying += 1,
            Some(NextStep::Failed) => self.failed += 1,
            None => {}
        }
    }
}

/// Runs delivery attempts with per-webhook concurrency limits. Shared by
/// `sync` (one pass) and the daemon (a loop).
///
/// Due deliveries are fetched a batch per webhook and handed out as permits
/// free up; attempts finishing together are recorded in one transaction
/// (group commit), so the store is not the bottleneck of a fast receiver.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    sender: Sender,
    clock: Arc<dyn Clock>,
    /// Per webhook: due deliveries fetched but not yet started.
    queues: Arc<Mutex<HashMap<String, VecDeque<DueDelivery>>>>,
    /// Per webhook: its configured concurrency and the requests in flight.
    limits: Arc<Mutex<HashMap<String, Limit>>>,
    /// Permits for each webhook's requests beyond its first.
    shared: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Deliveries whose last attempt could not be recorded (a full or
    /// read-only store), with when they may be sent again.
    unrecorded: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    /// Attempts waiting to be recorded, with who waits for the answer.
    to_record: Arc<Mutex<Vec<(AttemptOutcome, Recorded)>>>,
    /// Held by the one task writing a batch of attempts.
    recording: Arc<tokio::sync::Mutex<()>>,
    /// Woken when an attempt finishes or new events are committed.
    pub wake: Arc<Notify>,
    /// The paused webhooks as last read, and when (real time): read again
    /// after `PAUSED_FRESH`, so a fast receiver does not cost a query per
    /// finished attempt, while a `webhook resume` from another process is
    /// seen within a second.
    paused: Arc<Mutex<Option<PausedSet>>>,
}

/// The paused webhooks' ids and when they were read.
type PausedSet = (std::time::Instant, HashSet<String>);

/// How long the cached set of paused webhooks is trusted.
const PAUSED_FRESH: Duration = Duration::from_secs(1);

/// Where the outcome of recording one attempt goes: whether its webhook
/// was paused by the batch, or why the batch could not be written.
type Recorded = tokio::sync::oneshot::Sender<Result<bool, String>>;

/// A webhook's configured concurrency and the semaphore enforcing it.
type Limit = (usize, Arc<Semaphore>);

/// Due deliveries fetched per webhook at a time (at least; more for a high
/// concurrency).
const DUE_BATCH: usize = 256;

/// Takes a delivery out of the in-flight set when dropped, so even a task
/// that panics leaves the delivery to be attempted again.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deliverer {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Deliverer {
            store,
            sender: Sender::new(),
            clock,
            queues: Arc::default(),
            limits: Arc::default(),
            shared: Arc::new(Semaphore::new(SHARED_EXTRA_REQUESTS)),
            in_flight: Arc::default(),
            unrecorded: Arc::default(),
            to_record: Arc::default(),
            recording: Arc::default(),
            wake: Arc::new(Notify::new()),
            paused: Arc::default(),
        }
    }

    /// The paused webhooks: cached for up to `PAUSED_FRESH`.
    async fn paused_webhooks(&self) -> Result<HashSet<String>, StoreError> {
        if let Some((read_at, set)) = locked(&self.paused).as_ref()
            && read_at.elapsed() < PAUSED_FRESH
        {
            return Ok(set.clone());
        }
        let set: HashSet<String> = self
            .store
            .paused_webhooks()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        *locked(&self.paused) = Some((std::time::Instant::now(), set.clone()));
        Ok(set)
    }

    /// Forgets the cached paused set (a webhook was resumed or paused
    /// here), so the next dispatch reads the store.
    pub fn forget_paused(&self) {
        *locked(&self.paused) = None;
    }

    /// The webhook's semaphore; a new one when its concurrency changed
    /// (requests still holding the old one finish undisturbed).
    fn semaphore(&self, webhook: &Webhook) -> Arc<Semaphore> {
        let mut limits = locked(&self.limits);
        let entry = limits.entry(webhook.id.clone()).or_insert_with(|| {
            (
                webhook.concurrency,
                Arc::new(Semaphore::new(webhook.concurrency)),
            )
        });
        if entry.0 != webhook.concurrency {
            *entry = (
                webhook.concurrency,
                Arc::new(Semaphore::new(webhook.concurrency)),
            );
        }
        entry.1.clone()
    }

    /// Permits for one more request to `webhook`: its own, plus a shared one
    /// unless it is the webhook's only request in flight.
    fn permits(
        &self,
        webhook: &Webhook,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        Option<tokio::sync::OwnedSemaphorePermit>,
    )> {
        let own = self.semaphore(webhook);
        let first = own.available_permits() == webhook.concurrency;
        let permit = own.try_acquire_owned().ok()?;
        if first {
            return Some((permit, None));
        }
        let extra = self.shared.clone().try_acquire_owned().ok()?;
        Some((permit, Some(extra)))
    }

    /// One attempt at a delivery, recorded in the store.
    pub async fn attempt(
        &self,
        webhook: &Webhook,
        due: &DueDelivery,
    ) -> Result<NextStep, StoreError> {
        let now = self.clock.now();
        let number = due.attempts_made + 1;
        let result = self
            .sender
            .send(webhook, &due.event_id, &due.payload, number, now)
            .await;
        let jitter = rand::random_range(-1.0..=1.0);
        let step = next_step(&result, self.clock.now(), jitter);
        let paused = self
            .record(AttemptOutcome {
                delivery_id: due.id.clone(),
                webhook_id: webhook.id.clone(),
                attempt: result.record.clone(),
                next: step,
            })
            .await?;
        if paused {
            tracing::warn!(webhook = %webhook.id, url = %webhook.shown_url(),
                "every attempt to this webhook has failed for 5 days: paused; its events stay queued. \
                 Fix the receiver, then run `synthd webhook resume {}` or change the webhook in the config and reload",
                webhook.id);
            locked(&self.queues).remove(&webhook.id);
            self.forget_paused();
        }
        crate::metrics::METRICS.attempt_done(
            result.record.status_code,
            result.record.duration_ms,
            step,
        );
        let status = result.record.status_code;
        let duration_ms = result.record.duration_ms;
        let url = webhook.shown_url();
        let error = result
            .record
            .error
            .as_deref()
            .map(printable)
            .unwrap_or_default();
        match step {
            NextStep::Delivered => tracing::info!(event_id = %due.event_id, webhook = %webhook.id,
                status, attempt = number, duration_ms, "delivered"),
            NextStep::RetryAt(at) => {
                tracing::warn!(event_id = %due.event_id, webhook = %webhook.id, url = %url,
                status, attempt = number, duration_ms, error = %error,
                next_attempt_at = %at.to_rfc3339(), "delivery failed; will retry")
            }
            NextStep::Failed => {
                tracing::error!(event_id = %due.event_id, webhook = %webhook.id, url = %url,
                status, attempt = number, duration_ms, error = %error,
                "delivery failed for the last time; replay it once the receiver is fixed")
            }
        }
        Ok(step)
    }

    /// Records one attempt together with whatever others finished
    /// meanwhile: one transaction for the lot (group commit). Returns
    /// whether this attempt's webhook was paused by the batch.
    async fn record(&self, outcome: AttemptOutcome) -> Result<bool, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        locked(&self.to_record).push((outcome, tx));
        {
            let _writer = self.recording.lock().await;
            let batch = std::mem::take(&mut *locked(&self.to_record));
            if !batch.is_empty() {
                let (outcomes, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let result = self.store.record_attempts(&outcomes).await;
                let mut told = HashSet::new();
                for (o, waiter) in outcomes.iter().zip(waiters) {
                    let answer = match &result {
                        // Only the first attempt of a webhook in the batch
                        // reports its pausing, so it is logged once.
                        Ok(paused) => {
                            Ok(paused.contains(&o.webhook_id) && told.insert(o.webhook_id.clone()))
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = waiter.send(answer);
                }
            }
        }
        match rx.await {
            Ok(Ok(paused)) => Ok(paused),
            Ok(Err(e)) => Err(StoreError::Refused(e)),
            Err(_) => Err(StoreError::Internal("an attempt's record was lost".into())),
        }
    }

    /// Starts attempts for every due delivery not already in flight, up to
    /// the per-webhook limits. Returns the spawned tasks.
    pub async fn dispatch_due(
        &self,
        config: &Arc<Config>,
        skip: &HashSet<String>,
    ) -> Result<Vec<(String, tokio::task::JoinHandle<Option<NextStep>>)>, StoreError> {
        let now = self.clock.now();
        locked(&self.unrecorded).retain(|_, until| *until > now);
        let paused = self.paused_webhooks().await?;
        let mut tasks = Vec::new();
        for webhook in config
            .webhooks
            .iter()
            .filter(|w| w.enabled && !paused.contains(&w.id))
        {
            let mut refilled = false;
            loop {
                let next = locked(&self.queues)
                    .get_mut(&webhook.id)
                    .and_then(VecDeque::pop_front);
                let Some(d) = next else {
                    if refilled {
                        break;
                    }
                    refilled = true;
                    // Only what is idle now: a delivery whose attempt is
                    // still in flight (or finished but not yet recorded)
                    // must not come back from the query and go out twice.
                    let busy = locked(&self.in_flight).clone();
                    // A shared store claims what is fetched: take only a
                    // little more than can be sent at once, so the other
                    // processes find work too.
                    let limit = if self.store.shared() {
                        2 * webhook.concurrency
                    } else {
                        DUE_BATCH.max(8 * webhook.concurrency)
                    };
                    let fresh: VecDeque<DueDelivery> = self
                        .store
                        .due_deliveries(&webhook.id, now, limit)
                        .await?
                        .into_iter()
                        .filter(|d| {
                            !busy.contains(&d.id)
                                && !skip.contains(&d.id)
                                && !locked(&self.unrecorded).contains_key(&d.id)
                        })
                        .collect();
                    if fresh.is_empty() {
                        break;
                    }
                    locked(&self.queues).insert(webhook.id.clone(), fresh);
                    continue;
                };
                if skip.contains(&d.id) || locked(&self.in_flight).contains(&d.id) {
                    continue;
                }
                let Some(permits) = self.permits(webhook) else {
                    // No room now: keep it at the front for the next round.
                    locked(&self.queues)
                        .entry(webhook.id.clone())
                        .or_default()
                        .push_front(d);
                    break;
                };
                locked(&self.in_flight).insert(d.id.clone());
                tasks.push((
                    d.id.clone(),
                    self.spawn_attempt(webhook.clone(), d, permits),
                ));
            }
        }
        Ok(tasks)
    }

    fn spawn_attempt(
        &self,
        webhook: Webhook,
        d: DueDelivery,
        permits: (
            tokio::sync::OwnedSemaphorePermit,
            Option<tokio::sync::OwnedSemaphorePermit>,
        ),
    ) -> tokio::task::JoinHandle<Option<NextStep>> {
        let guard = InFlight {
            set: self.in_flight.clone(),
            id: d.id.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _in_flight = guard;
            let _permits = permits;
            let step = this.attempt(&webhook, &d).await;
            if step.is_err() {
                // The store still says this delivery is due; without a
                // pause it would be sent again at once, in a loop.
                let now = this.clock.now();
                let until = now
                    .checked_add_signed(
                        chrono::Duration::seconds(UNRECORDED_RETRY.as_secs() as i64),
                    )
                    .unwrap_or(now);
                locked(&this.unrecorded).insert(d.id.clone(), until);
            }
            drop(_in_flight);
            this.wake.notify_one();
            match step {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(event_id = %d.event_id, webhook = %webhook.id, error = %e,
                        "could not record a delivery attempt; it will be sent again in a minute");
                    None
                }
            }
        })
    }

    /// Gives back the deliveries fetched (claimed, with a shared store) but
    /// not started, so other processes take them at once. For shutdown.
    pub async fn release_queued(&self) {
        let ids: Vec<String> = std::mem::take(&mut *locked(&self.queues))
            .into_values()
            .flatten()
            .map(|d| d.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.store.release_deliveries(&ids).await {
            tracing::warn!(error = %e, deliveries = ids.len(),
                "could not give back queued deliveries; other processes take them when the lease runs out");
        }
    }

    /// One attempt at every delivery that is due now (for `sync`): repeats
    /// until nothing new is due, so a record's later event goes out in the
    /// same pass once its earlier one is delivered.
    pub async fn deliver_pass(&self, config: &Arc<Config>) -> Result<PassSummary, StoreError> {
        self.deliver_during(config, tokio::spawn(async {})).await.1
    }

    /// A [`deliver_pass`](Self::deliver_pass) that starts while `work` (the
    /// polls of `sync`) still runs: events go out as their pages commit
    /// (each commit wakes this loop) instead of after the last poll, and
    /// the pass ends once `work` has ended and nothing more is due. Each
    /// delivery is still attempted at most once. `work` is a task of its
    /// own, so it goes on while this loop awaits the store (a poll holding
    /// a transaction must never wait for this loop to poll it) and always
    /// runs to its end, even when the store fails the delivery side.
    pub async fn deliver_during<T>(
        &self,
        config: &Arc<Config>,
        work: tokio::task::JoinHandle<T>,
    ) -> (
        Result<T, tokio::task::JoinError>,
        Result<PassSummary, StoreError>,
    ) {
        use futures_util::{FutureExt, StreamExt};
        // A pass starts from what the store says now (a webhook resumed
        // since the last pass goes out in this one).
        self.forget_paused();
        let mut summary = PassSummary::default();
        let mut attempted: HashSet<String> = HashSet::new();
        let mut failed = None;
        let mut output = None;
        let work = work.fuse();
        tokio::pin!(work);
        // Dispatch again as each attempt ends, not per batch: a receiver that
        // takes its whole timeout must not hold up the other webhooks.
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            if failed.is_none() {
                match self.dispatch_due(config, &attempted).await {
                    Ok(tasks) => {
                        for (id, task) in tasks {
                            attempted.insert(id);
                            summary.attempted += 1;
                            running.push(task);
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if running.is_empty()
                && let Some(output) = output.take()
            {
                return (output, failed.map_or(Ok(summary), Err));
            }
            tokio::select! {
                biased;
                Some(result) = running.next(), if !running.is_empty() => {
                    summary.count(result.ok().flatten());
                    // Whatever else finished meanwhile is counted before the
                    // next dispatch, so a fast receiver costs one dispatch
                    // per batch of finished attempts, not one per attempt.
                    while let Some(Some(result)) = running.next().now_or_never() {
                        summary.count(result.ok().flatten());
                    }
                }
                out = &mut work, if output.is_none() => output = Some(out),
                // A page committed events (or an attempt ended).
                () = self.wake.notified(), if output.is_none() => {}
            }
        }
    }
}

/// Minimum gap between two test sends to one webhook, across processes.
pub const TEST_SEND_GAP: Duration = Duration::from_secs(10);

/// Why a test send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    #[error("a test was sent to webhook {webhook:?} less than 10s ago; try again in {wait_secs}s")]
    TooSoon { webhook: String, wait_secs: u64 },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Sends a signed `webhook.test` event to `webhook` now (one attempt, no
/// retries), logs it in the delivery log, and returns the attempt.
pub async fn test_send(
    store: &Store,
    sender: &Sender,
    webhook: &Webhook,
    now: DateTime<Utc>,
) -> Result<AttemptRecord, TestSendError> {
    let claim = store
        .claim_test_send(&webhook.id, now, TEST_SEND_GAP)
        .await?;
    if let crate::store::TestClaim::TooSoon(wait) = claim {
        return Err(TestSendError::TooSoon {
            webhook: webhook.id.clone(),
            wait_secs: wait.as_secs_f64().ceil() as u64,
        });
    }
    let event = crate::events::Event::new(crate::events::EventKind::Test, now);
    let mut logged = crate::ingest::new_event(&event, std::slice::from_ref(webhook));
    let delivery = logged
        .deliveries
        .pop()
        .unwrap_or_else(|| crate::store::DeliveryRow {
            // A test goes to the webhook whatever its filters say.
            id: crate::store::new_delivery_id(),
            webhook_id: webhook.id.clone(),
            order_key: event.order_key(),
            payload: event.body(webhook),
        });
    let result = sender
        .send(webhook, &event.id, &delivery.payload, 1, now)
        .await;
    store
        .record_test_send(&crate::store::TestSend {
            event: logged.event,
            delivery,
            attempt: result.record.clone(),
            delivered: result.success,
        })
        .await?;
    Ok(result.record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_without_jitter_is_the_spec_schedule() {
        let got: Vec<u64> = (1..=7)
            .map(|n| retry_delay(n, 0.0, None).unwrap().as_secs())
            .collect();
        assert_eq!(got, vec![5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(retry_delay(8, 0.0, None), None);
        assert_eq!(retry_delay(0, 0.0, None), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        assert_eq!(retry_delay(2, 1.0, None), Some(Duration::from_secs(330)));
        assert_eq!(retry_delay(2, -1.0, None), Some(Duration::from_secs(270)));
        assert_eq!(retry_delay(2, 5.0, None), Some(Duration::from_secs(330)));
    }

    #[tokio::test]
    async fn a_panicking_attempt_leaves_its_delivery_free_to_be_sent_again() {
        let set: Arc<Mutex<HashSet<String>>> = Arc::default();
        set.lock().unwrap().insert("dlv_1".into());
        let guard = InFlight {
            set: set.clone(),
            id: "dlv_1".into(),
        };
        let task = tokio::spawn(async move {
            let _in_flight = guard;
            panic!("a bug inside an attempt");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(set.lock().unwrap().is_empty());
    }

    #[test]
    fn a_huge_retry_after_is_clamped_to_the_longest_step() {
        let huge = Some(crate::net::MAX_EXTERNAL_WAIT);
        assert_eq!(retry_delay(1, 0.0, huge), Some(MAX_RETRY_AFTER));
        let now = chrono::Utc::now();
        let result = AttemptResult {
            record: AttemptRecord {
                number: 1,
                started_at: now,
                status_code: Some(503),
                duration_ms: 1,
                response_body: None,
                error_kind: None,
                error: None,
            },
            success: false,
            retry_after: Some(Duration::MAX),
        };
        match next_step(&result, now, 0.0) {
            NextStep::RetryAt(at) => assert_eq!((at - now).num_seconds(), 36000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn longer_retry_after_wins_shorter_does_not() {
        assert_eq!(
            retry_delay(1, 0.0, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_delay(2, 0.0, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(300))
        );
    }
}

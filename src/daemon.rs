//! The long-running daemon: the poll scheduler, the delivery loop, signal
//! handling (SIGTERM/SIGINT stop, SIGHUP reloads) and systemd notification.
//!
//! Shutdown is a `watch` channel handed to every task. Stopping is always
//! safe: each page commits atomically, and a delivery interrupted mid-flight
//! is simply attempted again (at-least-once, same `webhook-id`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::deliver::Deliverer;
use crate::ingest::{self, AccountFingerprint};
use crate::poll::{self, PollContext};
use crate::store::{Store, StoreError};

/// How long in-flight deliveries get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything the daemon's tasks share.
#[derive(Clone)]
pub struct Engine {
    pub ctx: PollContext,
    pub deliverer: Deliverer,
    /// Asks the scheduler to poll an account now (the console's "poll
    /// now"); the scheduler takes the receiving end.
    pub poll_now: tokio::sync::mpsc::UnboundedSender<String>,
    poll_now_rx: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>>,
}

impl Engine {
    pub fn new(store: Store, config: &Config, clock: Arc<dyn Clock>) -> Self {
        let hasher = crate::detect::Hasher::new(
            config
                .daemon
                .hash_key
                .as_ref()
                .map(|k| k.expose().as_bytes()),
        );
        let deliverer = Deliverer::new(store.clone(), clock.clone());
        let ctx = PollContext {
            store,
            client: crate::provider::ProviderClient::new(),
            hasher,
            clock,
            events_queued: deliverer.wake.clone(),
        };
        let (poll_now, rx) = tokio::sync::mpsc::unbounded_channel();
        Engine {
            deliverer,
            ctx,
            poll_now,
            poll_now_rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Emits account.created / updated / deleted for config changes, and
    /// resumes paused webhooks whose config changed.
    pub async fn reconcile_accounts(&self, config: &Arc<Config>) -> Result<(), StoreError> {
        reconcile(
            &self.ctx.store,
            &self.ctx.hasher,
            config,
            self.ctx.clock.now(),
        )
        .await?;
        self.deliverer.forget_paused();
        self.deliverer.wake.notify_one();
        Ok(())
    }
}

/// Brings the store in line with the config: the hash scheme, the
/// accounts (with their `account.*` events, each recorded once however many
/// processes see the change), the webhooks' fingerprints (resuming paused
/// ones that changed) and the deliveries of webhooks that left.
pub async fn reconcile(
    store: &Store,
    hasher: &crate::detect::Hasher,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if store.ensure_hash_scheme(hasher.scheme()).await? {
        tracing::warn!(
            "daemon.hash_key_file changed, so every stored hash is stale: the next complete scan of each \
             resource re-records hashes silently (changes made since the last poll are not announced)"
        );
    }
    let fingerprints: Vec<AccountFingerprint> = config
        .accounts
        .iter()
        .map(|a| AccountFingerprint {
            id: a.id.clone(),
            provider: a.provider.clone(),
            fingerprint: a.fingerprint(),
        })
        .collect();
    let stored = store.stored_accounts().await?;
    let changes = ingest::account_changes(&stored, &fingerprints, &config.webhooks, now);
    let applied = store.apply_account_changes(&changes, now).await?;
    for c in changes.iter().filter(|c| applied.contains(&c.id)) {
        tracing::info!(event_id = %c.event.event.id, account = %c.id,
            event_type = %c.event.event.event_type, "account event");
    }
    let fingerprints: Vec<(String, String)> = config
        .webhooks
        .iter()
        .map(|w| (w.id.clone(), w.fingerprint()))
        .collect();
    for id in store.reconcile_webhooks(&fingerprints).await? {
        tracing::info!(webhook = %id, "webhook config changed: resuming the paused webhook");
    }
    let ids: Vec<String> = fingerprints.into_iter().map(|(id, _)| id).collect();
    let cancelled = store.cancel_orphans(&ids, now).await?;
    if cancelled > 0 {
        tracing::warn!(
            cancelled,
            "pending deliveries to webhooks no longer in the config were cancelled (they stay in the delivery log)"
        );
    }
    Ok(())
}

/// Where a reload reads the config from; `None` (the demo) disables reload.
pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub notify_systemd: bool,
    /// Log the plan warnings (full-scan polling and the like) at start.
    pub plan_warnings: bool,
}

/// Runs until `stop` resolves or SIGTERM/SIGINT arrives.
pub async fn run(
    engine: Engine,
    config: Config,
    options: RunOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    let config = Arc::new(config);
    engine.reconcile_accounts(&config).await?;
    if options.plan_warnings {
        log_startup(&config);
    }

    let (config_tx, config_rx) = watch::channel(config.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(scheduler(
        engine.clone(),
        config_rx.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(delivery_loop(
        engine.clone(),
        config_rx.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(addr) = config.daemon.listen {
        let (engine, config_rx, shutdown) =
            (engine.clone(), config_rx.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(addr, engine, config_rx, shutdown).await {
                tracing::error!(listen = %addr, error = %e, "cannot serve the console, /healthz and /metrics; polling and delivery continue");
            }
        });
    }
    tasks.spawn(retention_loop(
        engine.clone(),
        config_rx.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(lease) = engine.ctx.store.lease() {
        engine.ctx.store.heartbeat(engine.ctx.clock.now()).await?;
        tasks.spawn(heartbeat_loop(engine.clone(), lease, shutdown_rx.clone()));
    }

    if options.notify_systemd {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    tracing::info!(
        accounts = config.accounts.len(),
        webhooks = config.webhooks.len(),
        "synthd started"
    );

    let mut term = signal(tokio::signal::unix::SignalKind::terminate());
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let Some(path) = &options.config_path else { continue };
                if options.notify_systemd {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                }
                match config::load(path) {
                    Ok(new) => {
                        let new = Arc::new(keep_restart_keys(&config_tx.borrow(), new));
                        match engine.reconcile_accounts(&new).await {
                            Ok(()) => {
                                log_startup(&new);
                                tracing::info!(accounts = new.accounts.len(), webhooks = new.webhooks.len(), "config reloaded");
                                let _ = config_tx.send(new);
                            }
                            Err(e) => tracing::error!(error = %e, "config reload failed; keeping the running config"),
                        }
                    }
                    Err(e) => tracing::error!(error = %e, more_errors = e.others.len(),
                        "config reload failed; keeping the running config"),
                }
                if options.notify_systemd {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
    }

    tracing::info!("stopping: no new polls; waiting for in-flight deliveries");
    if options.notify_systemd {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight work abandoned at shutdown; it resumes on the next start");
    }
    // A shared store: give back what this process holds, so the others
    // take it at once instead of after the lease.
    engine.deliverer.release_queued().await;
    if let Err(e) = engine.ctx.store.leave().await {
        tracing::warn!(error = %e, "could not deregister from the store; this process's claims expire after the lease");
    }
    tracing::info!("synthd stopped");
    Ok(())
}

/// Daemon keys that a reload cannot change (they shape open files, the
/// hash function, a bound socket or the scheduler's pool): the running
/// values stay, and the operator is told which keys wait for a restart.
fn keep_restart_keys(running: &Config, mut new: Config) -> Config {
    let (old, fresh) = (&running.daemon, &new.daemon);
    let changed: Vec<&str> = [
        ("daemon.state_dir", old.state_dir != fresh.state_dir),
        ("daemon.hash_key_file", old.hash_key != fresh.hash_key),
        ("daemon.listen", old.listen != fresh.listen),
        (
            "daemon.max_concurrent_polls",
            old.max_concurrent_polls != fresh.max_concurrent_polls,
        ),
        ("daemon.log_format", old.log_format != fresh.log_format),
        ("store", running.store != new.store),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(k, _)| k)
    .collect();
    if !changed.is_empty() {
        tracing::warn!(keys = %changed.join(", "),
            "these keys changed but only take effect after a restart (systemctl restart synthd); the running values stay until then");
        let retention = new.daemon.retention;
        new.daemon = running.daemon.clone();
        new.daemon.retention = retention;
        new.store = running.store.clone();
    }
    new
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    tokio::signal::unix::signal(kind).expect("signal handlers can be installed")
}

/// Warnings an operator should see at start and reload (also printed by
/// `check`).
pub fn plan_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.accounts.is_empty() {
        out.push(
            "no accounts are configured: nothing will be polled; add an [[accounts]] entry".into(),
        );
    }
    if config.webhooks.is_empty() {
        out.push("no webhooks are configured: changes are detected but no event is queued; add a [[webhooks]] entry".into());
    }
    let now = Utc::now();
    for a in &config.accounts {
        let interval = a.schedule.nominal_interval(now);
        if interval >= Duration::from_secs(15 * 60) {
            continue;
        }
        let provider = config.provider(&a.provider);
        for r in &a.resources {
            if provider.resources[r].updated_since.is_none() {
                out.push(format!(
                    "account {:?} polls {r} {} without updated_since: every poll is a full scan of the resource; \
                     configure updated_since or poll every 15m or more",
                    a.id, a.schedule
                ));
            }
        }
    }
    for w in &config.webhooks {
        if !w.enabled {
            out.push(format!(
                "webhook {:?} is disabled: no events are queued for it",
                w.id
            ));
        }
    }
    out
}

fn log_startup(config: &Config) {
    for w in plan_warnings(config) {
        tracing::warn!("{w}");
    }
}

/// Marks an account as being polled; dropping it (at the end of the poll,
/// or while unwinding from a panic) unmarks it and tells the scheduler when
/// that poll started, so the account is scheduled again.
struct Running {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
    started: Option<DateTime<Utc>>,
    /// Look again at this time instead of after an interval: another
    /// process holds the scan, and if it dies its claim lapses then.
    retry_at: Option<DateTime<Utc>>,
    done: tokio::sync::mpsc::UnboundedSender<Finished>,
}

/// A poll that ended: the account, when that poll (or the one another
/// process made instead) started, and when to look again if not on the
/// schedule.
type Finished = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let _ = self
            .done
            .send((self.id.clone(), self.started, self.retry_at));
    }
}

/// The accounts waiting for their next poll, earliest first: a decision
/// costs O(log n) however many accounts there are, and no task exists for
/// an account until it is due and a poll slot is free.
struct Queue {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, String)>>,
    /// Over how long never-polled accounts' first polls are spread.
    window: Duration,
}

impl Queue {
    /// Every enabled account that is not being polled now, at its next due
    /// time: overdue ones at once, never-polled ones spread over a short
    /// start-up window.
    fn build(
        config: &Config,
        last_start: &HashMap<String, DateTime<Utc>>,
        running: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> Queue {
        let waiting = config
            .accounts
            .iter()
            .filter(|a| a.enabled && !running.contains(&a.id));
        // The more accounts have never been polled, the wider their first
        // polls spread: 5 ms each (a lone new account starts at once).
        let new = waiting
            .clone()
            .filter(|a| !last_start.contains_key(&a.id))
            .count();
        let mut q = Queue {
            heap: Default::default(),
            window: Duration::from_millis(5 * new as u64),
        };
        for a in waiting {
            q.push(a, last_start.get(&a.id).copied(), now);
        }
        q
    }

    fn push(
        &mut self,
        account: &crate::config::Account,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        let due = match last {
            Some(_) => account.schedule.next_due(&account.id, last, now),
            None => account.schedule.first_due(&account.id, now, self.window),
        };
        self.heap.push(std::cmp::Reverse((due, account.id.clone())));
    }
}

/// The least time between two returns of free memory to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Starts polls when they are due: at most `max_concurrent_polls` at once,
/// never two of the same account.
async fn scheduler(
    engine: Engine,
    mut config_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = engine.ctx.store.clone();
    let mut last_start: HashMap<String, DateTime<Utc>> = match store.last_poll_starts().await {
        Ok(v) => {
            let now = engine.ctx.clock.now();
            let future = v.iter().filter(|(_, t)| *t > now).count();
            if future > 0 {
                tracing::warn!(
                    accounts = future,
                    "stored poll times lie in the future (the clock was wrong when they were written); \
                     treating them as now, so those accounts are polled on their normal schedule from now on"
                );
            }
            v.into_iter().collect()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read poll state; polling every account now");
            HashMap::new()
        }
    };
    let limit = config_rx.borrow().daemon.max_concurrent_polls;
    let permits = Arc::new(Semaphore::new(limit));
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut polls = JoinSet::new();
    let mut config = config_rx.borrow().clone();
    let mut index: HashMap<String, usize> = account_index(&config);
    let mut queue = Queue::build(
        &config,
        &last_start,
        &running.lock().unwrap_or_else(|p| p.into_inner()),
        engine.ctx.clock.now(),
    );
    let mut poll_now = engine
        .poll_now_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let mut forced: HashSet<String> = HashSet::new();

    // Memory freed by finished polls goes back to the system once polling
    // goes quiet, at most every TRIM_EVERY (the trim walks the heap).
    let mut polled_since_trim = false;
    let mut last_trim = std::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while polls.try_join_next().is_some() {}
        if polls.is_empty() && polled_since_trim && last_trim.elapsed() >= TRIM_EVERY {
            crate::memory::trim();
            polled_since_trim = false;
            last_trim = std::time::Instant::now();
        }
        let now = engine.ctx.clock.now();
        while let Some(std::cmp::Reverse((due, _))) = queue.heap.peek() {
            if *due > now {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Some(std::cmp::Reverse((_, id))) = queue.heap.pop() else {
                break;
            };
            // Gone from the config, disabled, or being polled (it is queued
            // again when that poll ends).
            let Some(account) = index.get(&id).map(|&i| &config.accounts[i]) else {
                continue;
            };
            if !account.enabled
                || !running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone())
            {
                continue;
            }
            let mut guard = Running {
                set: running.clone(),
                id,
                started: None,
                retry_at: None,
                done: done_tx.clone(),
            };
            polled_since_trim = true;
            let (engine, config, account) = (engine.clone(), config.clone(), account.clone());
            // Due now: unless another process polled it in the last half
            // interval (after our last start plus half an interval).
            let half = chrono::Duration::from_std(account.schedule.nominal_interval(now) / 2)
                .unwrap_or_default();
            // Asked for now (the console): polled whatever the schedule,
            // as `sync` does.
            let mode = poll::PollMode {
                skip_if_started_after: (!forced.remove(&account.id)).then(|| {
                    last_start
                        .get(&account.id)
                        .map_or(now - half, |t| *t + half)
                }),
            };
            polls.spawn(async move {
                let _permit = permit;
                guard.started = Some(engine.ctx.clock.now());
                // Cleared however the poll ends, a panic included, so an
                // account is never left marked running.
                let mut running = guard;
                let poll = poll::poll_account(&engine.ctx, &config, &account, None, mode);
                // The delivery loop is woken when the poll may have queued
                // events; a quiet poll (the usual one) costs it nothing.
                let mut wake = true;
                match std::panic::AssertUnwindSafe(poll).catch_unwind().await {
                    Ok(outcomes) => {
                        wake = !outcomes.iter().all(|o| match &o.result {
                            Ok(s) => !s.emitted || s.created + s.updated + s.deleted == 0,
                            Err(e) => e.is_skip(),
                        });
                        // Polled by another process meanwhile (a shared
                        // store): its time is this account's last start.
                        let elsewhere = outcomes.iter().filter_map(|o| match &o.result {
                            Err(poll::PollError::PolledElsewhere { at }) => Some(*at),
                            _ => None,
                        });
                        if outcomes.iter().all(|o| matches!(o.result, Err(poll::PollError::PolledElsewhere { .. }))) {
                            running.started = elsewhere.min();
                        }
                        // Another process is scanning a resource: look
                        // again when its claim lapses unless renewed (at
                        // most a lease from now), so a dead holder's work
                        // is taken over within its lease (a live one's
                        // finished scan then counts as this account's poll).
                        let lapses = outcomes.iter().filter_map(|o| match &o.result {
                            Err(poll::PollError::Busy { until, .. }) => Some(*until),
                            _ => None,
                        }).min();
                        if let Some(lapses) = lapses {
                            let now = engine.ctx.clock.now();
                            let lease = chrono::Duration::from_std(
                                engine.ctx.store.lease().unwrap_or(Duration::from_secs(60)),
                            ).unwrap_or_default();
                            running.started = None;
                            running.retry_at = Some(
                                (lapses + chrono::Duration::milliseconds(50)).clamp(now, now + lease),
                            );
                        }
                    }
                    Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(account = %account.id, error = %what,
                        "internal error while polling (a bug; please report it); the account is polled again on schedule");
                    }
                }
                drop(running);
                if wake {
                    engine.deliverer.wake.notify_one();
                }
            });
        }
        // Sleep until the next account is due, or a poll ends (freeing a
        // slot and queueing its account again), or the config changes.
        let wait = queue
            .heap
            .peek()
            .map(|std::cmp::Reverse((due, _))| {
                (*due - engine.ctx.clock.now()).to_std().unwrap_or_default()
            })
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        // A trim still owed wakes the loop when it is allowed.
        let wait = if polled_since_trim {
            wait.min(TRIM_EVERY.saturating_sub(last_trim.elapsed()))
        } else {
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some((id, started, retry_at)) = done_rx.recv() => {
                let now = engine.ctx.clock.now();
                if let Some(at) = started {
                    last_start.insert(id.clone(), at);
                }
                if let Some(account) = index.get(&id).map(|&i| &config.accounts[i]).filter(|a| a.enabled) {
                    match retry_at {
                        Some(at) => queue.heap.push(std::cmp::Reverse((at, id.clone()))),
                        None => queue.push(account, last_start.get(&id).copied(), now),
                    }
                }
            }
            _ = config_rx.changed() => {
                config = config_rx.borrow().clone();
                index = account_index(&config);
                queue = Queue::build(
                    &config,
                    &last_start,
                    &running.lock().unwrap_or_else(|p| p.into_inner()),
                    engine.ctx.clock.now(),
                );
            }
            Some(id) = async { match poll_now.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                // Forgetting when it last started makes it due at once;
                // rebuilding the queue drops its scheduled entry, so the
                // account is not polled twice.
                if index.contains_key(&id) {
                    last_start.remove(&id);
                    forced.insert(id.clone());
                    queue = Queue::build(
                        &config,
                        &last_start,
                        &running.lock().unwrap_or_else(|p| p.into_inner()),
                        engine.ctx.clock.now(),
                    );
                }
            }
            _ = shutdown.changed() => {}
        }
    }
    // Polls in progress are abandoned: every committed page is consistent,
    // and an unfinished scan deletes nothing.
    polls.abort_all();
}

fn account_index(config: &Config) -> HashMap<String, usize> {
    config
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.clone(), i))
        .collect()
}

/// Sends due deliveries until shutdown; wakes on new events, finished
/// attempts, or the next retry time.
async fn delivery_loop(
    engine: Engine,
    config_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let deliverer = engine.deliverer.clone();
    let mut in_flight = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while in_flight.try_join_next().is_some() {}
        let config = config_rx.borrow().clone();
        match deliverer.dispatch_due(&config, &HashSet::new()).await {
            Ok(tasks) => {
                for (_, t) in tasks {
                    in_flight.spawn(async move {
                        let _ = t.await;
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read due deliveries; retrying shortly"),
        }
        let next = engine.ctx.store.next_due_at().await.ok().flatten();
        let now = engine.ctx.clock.now();
        // A due delivery may be waiting on a permit or on an earlier event of
        // the same record; those wake us when they finish, so a short floor
        // avoids spinning.
        let wait = next
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(30))
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = deliverer.wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// Keeps this process registered in a shared store and its claims alive,
/// four times per lease (at most every 30 s). A process that stops
/// beating (killed, paused, cut off) loses its claims when they lapse.
async fn heartbeat_loop(engine: Engine, lease: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (lease / 4).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match engine.ctx.store.heartbeat(engine.ctx.clock.now()).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the shared store answers heartbeats again");
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e,
                        "cannot renew this process's claims in the shared store; scans and deliveries it holds pass to other processes when the lease runs out");
                }
                failing = true;
            }
        }
    }
}

/// How often the delivery log is pruned, and how many rows one transaction
/// deletes.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
const RETENTION_BATCH: usize = 500;

/// Prunes delivered and failed deliveries past their retention, in small
/// batches with a yield between them so polls are never held up.
async fn retention_loop(
    engine: Engine,
    config_rx: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let retention = {
            let r = config_rx.borrow().daemon.retention;
            crate::store::RetentionPolicy {
                delivered: r.delivered,
                failed: r.failed,
            }
        };
        let mut total = crate::store::Pruned::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = engine.ctx.clock.now();
            match engine
                .ctx
                .store
                .prune_batch(retention, now, RETENTION_BATCH)
                .await
            {
                Ok(p) if p.deliveries == 0 && p.events == 0 => break,
                Ok(p) => {
                    total.deliveries += p.deliveries;
                    total.events += p.events;
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "pruning the delivery log failed; will try again later");
                    break;
                }
            }
        }
        if total.deliveries > 0 || total.events > 0 {
            tracing::info!(
                deliveries = total.deliveries,
                events = total.events,
                "pruned the delivery log"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_poll_never_leaves_its_account_marked_running() {
        let set: Arc<Mutex<HashSet<String>>> = Arc::default();
        set.lock().unwrap().insert("acme".into());
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let at = Utc::now();
        let guard = Running {
            set: set.clone(),
            id: "acme".into(),
            started: Some(at),
            retry_at: None,
            done,
        };
        let task = tokio::spawn(async move {
            let _running = guard;
            panic!("a bug inside a poll");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(
            set.lock().unwrap().is_empty(),
            "the account is still marked running"
        );
        // The scheduler hears of it, with when the poll started, and
        // queues the account again.
        assert_eq!(
            finished.recv().await,
            Some(("acme".to_string(), Some(at), None))
        );
    }

    #[test]
    fn a_reload_keeps_the_keys_that_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let text = |listen: &str, polls: u32, retention: &str| {
            format!(
                "[daemon]\nstate_dir = {:?}\nlisten = \"{listen}\"\nmax_concurrent_polls = {polls}\nretention = {{ delivered = \"{retention}\" }}\n",
                dir.path().display().to_string()
            )
        };
        let running = config::from_toml_str(&text("127.0.0.1:9464", 8, "7d"), dir.path()).unwrap();
        let new = config::from_toml_str(&text("127.0.0.1:9999", 2, "1d"), dir.path()).unwrap();
        let kept = keep_restart_keys(&running, new);
        assert_eq!(kept.daemon.listen, running.daemon.listen);
        assert_eq!(kept.daemon.max_concurrent_polls, 8);
        // Retention is read afresh by the retention loop: it reloads.
        assert_eq!(kept.daemon.retention.delivered, Duration::from_secs(86400));
    }
}

//! The store conformance suite: the same cases against every backend, so a
//! behaviour cannot exist in one backend only. SQLite always runs;
//! PostgreSQL runs when a server answers at `$SYNTHD_TEST_POSTGRES` (see
//! `common::postgres`), and is required when `SYNTHD_REQUIRE_POSTGRES=1`.
//!
//! Each case drives the store as the poller and the delivery engine do:
//! through `ingest` for the rows, then the trait's plain operations.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use synthd::config::Webhook;
use synthd::ingest::AccountFingerprint;
use synthd::store::{
    AttemptOutcome, AttemptRecord, DeliveryStatus, LogQuery, NextStep, ReplaySelection,
    RetentionPolicy, ScanClaim, ScanRequest, ScanStart, Store, TestClaim,
};

/// A webhook subscribed to everything.
fn hooks() -> Vec<Webhook> {
    let dir = std::env::temp_dir();
    let text = format!(
        "[daemon]\nstate_dir = {:?}\n[[webhooks]]\nid = \"w\"\nurl = \"http://127.0.0.1:1/h\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n\
         [[webhooks]]\nid = \"v\"\nurl = \"http://127.0.0.1:1/v\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n",
        dir.display().to_string()
    );
    synthd::config::from_toml_str(&text, &dir).unwrap().webhooks
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .to_utc()
}

/// Begins a scan of account "a", resource "r", with `shape`.
async fn started(store: &Store, shape: &str, name: &str) -> ScanStart {
    let claim = store
        .begin_scan(&ScanRequest {
            account_id: "a".into(),
            resource: "r".into(),
            shape: shape.into(),
            now: t0(),
            skip_if_started_after: None,
        })
        .await
        .unwrap();
    match claim {
        ScanClaim::Started(scan) => scan,
        _ => panic!("{name}: the scan did not start"),
    }
}

fn records(ids: std::ops::Range<u32>, version: u8) -> Vec<(String, [u8; 32])> {
    ids.map(|i| (format!("r{i}"), [version; 32])).collect()
}

/// What keeps a backend's state alive for the length of a test.
#[allow(dead_code)]
enum Holder {
    Dir(tempfile::TempDir),
    Db(PgDb),
}

/// Every backend available here, each on a fresh, empty state.
async fn backends() -> Vec<(&'static str, Store, Holder)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    out.push((
        "sqlite",
        Store::open_sqlite(dir.path()).unwrap(),
        Holder::Dir(dir),
    ));
    if let Some(db) = PgDb::create("store").await {
        let store = db.store(Duration::from_secs(60)).await;
        out.push(("postgres", store, Holder::Db(db)));
    }
    out
}

/// Event types of every pending delivery to webhook `w`, oldest first.
async fn pending_types(store: &Store) -> Vec<String> {
    let mut rows = store
        .delivery_log(&LogQuery {
            webhook: Some("w".into()),
            status: Some(DeliveryStatus::Pending),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.reverse();
    rows.into_iter().map(|r| r.delivery.event_type).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_is_silent_then_changes_become_events_and_counts_follow() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        let (changes, end) = commit_scan(&store, "a", "r", &records(0..5, 1), &w, t0()).await;
        assert_eq!((changes.created, end.deleted), (5, 0), "{name}");
        assert!(
            pending_types(&store).await.is_empty(),
            "{name}: the baseline is silent"
        );
        let mut next = records(1..5, 1);
        next[0].1 = [2; 32];
        next.push(("r9".into(), [1; 32]));
        let (changes, end) = commit_scan(&store, "a", "r", &next, &w, t0()).await;
        assert_eq!(
            (changes.created, changes.updated, end.deleted),
            (1, 1, 1),
            "{name}"
        );
        assert_eq!(
            pending_types(&store).await,
            ["r.updated", "r.created", "r.deleted"],
            "{name}"
        );
        let status = store.poll_status().await.unwrap();
        assert_eq!(
            (status.len(), status[0].records),
            (1, 5),
            "{name}: the running count"
        );
        assert!(status[0].baseline_done, "{name}");
        // Each event went to both webhooks.
        assert_eq!(store.delivery_counts().await.unwrap().pending, 6, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hashes_and_missing_ids_answer_exactly() {
    for (name, store, _dir) in backends().await {
        commit_scan(&store, "a", "r", &records(0..3, 7), &[], t0()).await;
        let scan = started(&store, "shape", name).await;
        assert_eq!(scan.known_before, 3, "{name}");
        // A repeated id (two records of one page) is answered each time.
        let got = store
            .stored_hashes(
                &scan,
                vec!["r1".into(), "nope".into(), "r0".into(), "r1".into()],
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![Some([7; 32]), None, Some([7; 32]), Some([7; 32])],
            "{name}"
        );
        let mut seen = synthd::detect::SeenIds::with_capacity(4);
        seen.see("r1", false);
        let mut missing = store.missing_ids(&scan, Arc::new(seen)).await.unwrap();
        missing.sort();
        assert_eq!(missing, ["r0", "r2"], "{name}");
        // Another account's records are not this stream's.
        commit_scan(&store, "b", "r", &records(0..2, 1), &[], t0()).await;
        assert_eq!(
            store.stored_hashes(&scan, vec!["r2".into()]).await.unwrap(),
            vec![Some([7; 32])],
            "{name}"
        );
    }
}

/// Ids that lie together in key order and ids scattered through many
/// others (the SQLite store reads the first as one range) answer the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hashes_of_close_and_scattered_ids() {
    for (name, store, _dir) in backends().await {
        let mut all = records(0..200, 3);
        all[150].1 = [4; 32];
        commit_scan(&store, "a", "r", &all, &[], t0()).await;
        let scan = started(&store, "shape", name).await;
        for ids in [
            // Together: r150 … r159, one missing, one repeated, unsorted.
            vec!["r152", "r150", "r15a", "r159", "r150"],
            // Scattered: the range r0 … r99 holds nearly every record.
            vec!["r99", "r0", "nope", "r150"],
        ] {
            let ids: Vec<String> = ids.into_iter().map(String::from).collect();
            let want: Vec<Option<[u8; 32]>> = ids
                .iter()
                .map(|id| all.iter().find(|(r, _)| r == id).map(|(_, h)| *h))
                .collect();
            assert_eq!(
                store.stored_hashes(&scan, ids.clone()).await.unwrap(),
                want,
                "{name}: {ids:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_is_held_until_a_second_consecutive_complete_scan() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        commit_scan(&store, "a", "r", &records(0..40, 1), &w, t0()).await;
        // 30 of 40 vanish: held.
        let (_, end) = commit_scan(&store, "a", "r", &records(0..10, 1), &w, t0()).await;
        assert_eq!((end.deleted, end.held), (0, 30), "{name}");
        // A failed scan in between resets the hold.
        let s = started(&store, "shape", name).await;
        store.fail_scan(&s, "boom", t0()).await.unwrap();
        let (_, end) = commit_scan(&store, "a", "r", &records(0..10, 1), &w, t0()).await;
        assert_eq!((end.deleted, end.held), (0, 30), "{name}");
        // The next consecutive complete scan confirms.
        let (_, end) = commit_scan(&store, "a", "r", &records(0..10, 1), &w, t0()).await;
        assert_eq!((end.deleted, end.held), (30, 0), "{name}");
        assert_eq!(pending_types(&store).await.len(), 30, "{name}");
        // Every id swapped for a new one: the ids known before the scan are
        // the base, not the new ones, so this is a mass deletion.
        commit_scan(&store, "b", "r", &records(0..20, 1), &w, t0()).await;
        let (changes, end) = commit_scan(&store, "b", "r", &records(100..120, 1), &w, t0()).await;
        assert_eq!(
            (changes.created, end.deleted, end.held),
            (20, 0, 20),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hash_scheme_or_shape_rebaselines_silently() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        assert!(!store.ensure_hash_scheme("sha256").await.unwrap(), "{name}");
        commit_scan(&store, "a", "r", &records(0..5, 1), &w, t0()).await;
        assert!(!store.ensure_hash_scheme("sha256").await.unwrap(), "{name}");
        assert!(
            store.ensure_hash_scheme("hmac-sha256:abcd").await.unwrap(),
            "{name}"
        );
        // Every hash differs under the new key: no update storm.
        let (changes, _) = commit_scan(&store, "a", "r", &records(0..5, 7), &w, t0()).await;
        assert_eq!(changes.updated, 5, "{name}");
        assert!(pending_types(&store).await.is_empty(), "{name}");
        // After the re-baseline, changes are announced again.
        commit_scan(&store, "a", "r", &records(0..5, 8), &w, t0()).await;
        assert_eq!(pending_types(&store).await.len(), 5, "{name}");

        // A new shape: the next scan reports the re-baseline and is silent.
        let scan = started(&store, "other", name).await;
        assert!(
            scan.reshaped && !scan.baseline_done && !scan.first_baseline,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_changes_apply_once_against_the_fingerprint_they_expect() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        let fp = |id: &str, f: &str| AccountFingerprint {
            id: id.into(),
            provider: "p".into(),
            fingerprint: f.into(),
        };
        record_accounts(&store, &[fp("a", "1"), fp("b", "1")], &w, t0()).await;
        assert_eq!(
            pending_types(&store).await,
            ["account.created", "account.created"],
            "{name}"
        );
        // Two processes computed the same change from the same stored state:
        // only the first applies it (one account.updated, not two).
        let stored = store.stored_accounts().await.unwrap();
        let changes =
            synthd::ingest::account_changes(&stored, &[fp("a", "2"), fp("b", "1")], &w, t0());
        assert_eq!(
            store.apply_account_changes(&changes, t0()).await.unwrap(),
            ["a"],
            "{name}"
        );
        assert!(
            store
                .apply_account_changes(&changes, t0())
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        // Removing an account removes its hashes.
        commit_scan(&store, "b", "r", &records(0..3, 1), &w, t0()).await;
        record_accounts(&store, &[fp("a", "2")], &w, t0()).await;
        let types = pending_types(&store).await;
        assert_eq!(
            types.iter().filter(|t| *t == "account.deleted").count(),
            1,
            "{name}: {types:?}"
        );
        assert!(
            store
                .poll_status()
                .await
                .unwrap()
                .iter()
                .all(|p| p.account_id != "b"),
            "{name}"
        );
    }
}

fn attempt(number: u32, at: DateTime<Utc>, status: u16) -> AttemptRecord {
    AttemptRecord {
        number,
        started_at: at,
        status_code: Some(status),
        duration_ms: 3,
        response_body: Some("nope".into()),
        error_kind: (status >= 300).then(|| "status".into()),
        error: (status >= 300).then(|| format!("HTTP {status}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_deliveries_keep_per_record_order_and_attempts_move_them_on() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        commit_scan(&store, "a", "r", &records(0..2, 1), &w, t0()).await;
        let mut v2 = records(0..2, 2);
        commit_scan(&store, "a", "r", &v2, &w, t0()).await;
        v2[0].1 = [3; 32];
        commit_scan(&store, "a", "r", &v2, &w, t0()).await;
        // r0 has two pending updates: only the first is due.
        let due = store.due_deliveries("w", t0(), 10).await.unwrap();
        assert_eq!(due.len(), 2, "{name}: one per record");
        let first = due
            .iter()
            .find(|d| d.payload.contains("\"r0\""))
            .unwrap()
            .clone();
        // A failure schedules a retry; the later event of r0 still waits.
        let retry_at = t0() + chrono::Duration::seconds(5);
        let paused = store
            .record_attempts(&[AttemptOutcome {
                delivery_id: first.id.clone(),
                webhook_id: "w".into(),
                attempt: attempt(1, t0(), 503),
                next: NextStep::RetryAt(retry_at),
            }])
            .await
            .unwrap();
        assert!(paused.is_empty(), "{name}");
        let due = store.due_deliveries("w", t0(), 10).await.unwrap();
        assert!(
            due.iter().all(|d| !d.payload.contains("\"r0\"")),
            "{name}: r0 waits for its retry"
        );
        let due = store.due_deliveries("w", retry_at, 10).await.unwrap();
        let again = due
            .iter()
            .find(|d| d.id == first.id)
            .expect("due at the retry time");
        assert_eq!(again.attempts_made, 1, "{name}");
        assert_eq!(store.next_due_at().await.unwrap(), Some(t0()), "{name}");
        // Delivered: the next event of r0 becomes due.
        store
            .record_attempts(&[AttemptOutcome {
                delivery_id: first.id.clone(),
                webhook_id: "w".into(),
                attempt: attempt(2, retry_at, 200),
                next: NextStep::Delivered,
            }])
            .await
            .unwrap();
        let due = store.due_deliveries("w", retry_at, 10).await.unwrap();
        assert_eq!(
            due.iter().filter(|d| d.payload.contains("\"r0\"")).count(),
            1,
            "{name}"
        );
        let (view, payload, attempts) = store.delivery(&first.id).await.unwrap().unwrap();
        assert_eq!(view.status, DeliveryStatus::Delivered, "{name}");
        assert_eq!(payload, first.payload, "{name}");
        assert_eq!(
            attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
            [Some(503), Some(200)],
            "{name}"
        );
        assert_eq!(attempts[0].response_body.as_deref(), Some("nope"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_days_of_failures_pause_a_webhook_until_resumed() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        record_accounts(
            &store,
            &[AccountFingerprint {
                id: "a".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            }],
            &w,
            t0(),
        )
        .await;
        let d = store.due_deliveries("w", t0(), 1).await.unwrap().remove(0);
        let fail = |n: u32, at: DateTime<Utc>| AttemptOutcome {
            delivery_id: d.id.clone(),
            webhook_id: "w".into(),
            attempt: attempt(n, at, 500),
            next: NextStep::RetryAt(at + chrono::Duration::hours(1)),
        };
        assert!(
            store
                .record_attempts(&[fail(1, t0())])
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        let later = t0() + chrono::Duration::days(5) + chrono::Duration::seconds(1);
        assert_eq!(
            store.record_attempts(&[fail(2, later)]).await.unwrap(),
            ["w"],
            "{name}"
        );
        assert_eq!(store.paused_webhooks().await.unwrap().len(), 1, "{name}");
        assert!(store.resume_webhook("w").await.unwrap(), "{name}");
        assert!(!store.resume_webhook("w").await.unwrap(), "{name}");
        assert!(store.paused_webhooks().await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_idempotent_while_pending_and_orphans_are_cancelled() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        record_accounts(
            &store,
            &[AccountFingerprint {
                id: "a".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            }],
            &w,
            t0(),
        )
        .await;
        let d = store.due_deliveries("w", t0(), 1).await.unwrap().remove(0);
        let all = ["w".to_string(), "v".to_string()];
        let sel = ReplaySelection {
            event_id: Some(d.event_id.clone()),
            ..Default::default()
        };
        let r = store.replay(&sel, &all, t0()).await.unwrap();
        assert_eq!(
            (r.queued, r.already_pending),
            (0, 2),
            "{name}: both still pending"
        );
        store
            .record_attempts(&[AttemptOutcome {
                delivery_id: d.id.clone(),
                webhook_id: "w".into(),
                attempt: attempt(1, t0(), 200),
                next: NextStep::Delivered,
            }])
            .await
            .unwrap();
        let r = store.replay(&sel, &all, t0()).await.unwrap();
        assert_eq!((r.queued, r.already_pending), (1, 1), "{name}");
        let r = store.replay(&sel, &all, t0()).await.unwrap();
        assert_eq!(
            (r.queued, r.already_pending),
            (0, 2),
            "{name}: replayed once while pending"
        );
        // Only enabled webhooks get replays.
        let r = store.replay(&sel, &["v".to_string()], t0()).await.unwrap();
        assert_eq!(r.skipped, 1, "{name}");
        // Webhook v leaves the config: its pending delivery is cancelled.
        assert_eq!(
            store
                .cancel_orphans(&["w".to_string()], t0())
                .await
                .unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store
                .cancel_orphans(&["w".to_string()], t0())
                .await
                .unwrap(),
            0,
            "{name}"
        );
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.delivered, counts.cancelled),
            (1, 1, 1),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sends_are_limited_per_webhook() {
    for (name, store, _dir) in backends().await {
        let gap = Duration::from_secs(10);
        assert_eq!(
            store.claim_test_send("w", t0(), gap).await.unwrap(),
            TestClaim::Granted,
            "{name}"
        );
        assert_eq!(
            store.claim_test_send("v", t0(), gap).await.unwrap(),
            TestClaim::Granted,
            "{name}: per webhook"
        );
        let soon = t0() + chrono::Duration::seconds(4);
        assert_eq!(
            store.claim_test_send("w", soon, gap).await.unwrap(),
            TestClaim::TooSoon(Duration::from_secs(6)),
            "{name}"
        );
        let later = t0() + chrono::Duration::seconds(10);
        assert_eq!(
            store.claim_test_send("w", later, gap).await.unwrap(),
            TestClaim::Granted,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_finished_deliveries_and_keeps_what_is_still_needed() {
    for (name, store, _dir) in backends().await {
        let w = hooks();
        record_accounts(
            &store,
            &[AccountFingerprint {
                id: "a".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            }],
            &w,
            t0(),
        )
        .await;
        let due = store.due_deliveries("w", t0(), 1).await.unwrap().remove(0);
        let other = store.due_deliveries("v", t0(), 1).await.unwrap().remove(0);
        store
            .record_attempts(&[
                AttemptOutcome {
                    delivery_id: due.id.clone(),
                    webhook_id: "w".into(),
                    attempt: attempt(1, t0(), 200),
                    next: NextStep::Delivered,
                },
                AttemptOutcome {
                    delivery_id: other.id.clone(),
                    webhook_id: "v".into(),
                    attempt: attempt(8, t0(), 500),
                    next: NextStep::Failed,
                },
            ])
            .await
            .unwrap();
        let policy = RetentionPolicy {
            delivered: Duration::from_secs(7 * 86400),
            failed: Duration::from_secs(30 * 86400),
        };
        let soon = t0() + chrono::Duration::days(8);
        let pruned = store.prune_batch(policy, soon, 100).await.unwrap();
        assert_eq!(
            (pruned.deliveries, pruned.events),
            (1, 0),
            "{name}: the failed one keeps its event"
        );
        assert!(store.delivery(&due.id).await.unwrap().is_none(), "{name}");
        // The failed delivery is still replayable.
        let r = store
            .replay(
                &ReplaySelection {
                    event_id: Some(other.event_id.clone()),
                    ..Default::default()
                },
                &["v".to_string()],
                soon,
            )
            .await
            .unwrap();
        assert_eq!(r.queued, 1, "{name}");
        let much_later = t0() + chrono::Duration::days(40);
        let pruned = store.prune_batch(policy, much_later, 100).await.unwrap();
        assert_eq!(
            pruned.deliveries, 1,
            "{name}: the failed one after 30 days; the pending replay stays"
        );
        assert_eq!(store.delivery_counts().await.unwrap().pending, 1, "{name}");
    }
}

// ---------------------------------------------------------------------------
// Sharing one PostgreSQL store between processes (two stores on one
// database stand for two synthd processes)
// ---------------------------------------------------------------------------

fn request(now: DateTime<Utc>, skip_after: Option<DateTime<Utc>>) -> ScanRequest {
    ScanRequest {
        account_id: "a".into(),
        resource: "r".into(),
        shape: "shape".into(),
        now,
        skip_if_started_after: skip_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_claimed_by_one_process_and_a_stale_holder_cannot_commit() {
    let Some(db) = PgDb::create("claims").await else {
        return;
    };
    let lease = Duration::from_secs(30);
    let (a, b) = (db.store(lease).await, db.store(lease).await);
    let now = Utc::now();
    let ScanClaim::Started(scan_a) = a.begin_scan(&request(now, None)).await.unwrap() else {
        panic!("a could not claim")
    };
    // B sees A's claim.
    assert!(matches!(
        b.begin_scan(&request(now, None)).await.unwrap(),
        ScanClaim::Busy { .. }
    ));
    // A's commit renews and passes its fence.
    a.commit_page(&scan_a, Default::default()).await.unwrap();
    // Past the lease (A paused, partitioned or dead), B takes over with a
    // newer fencing token...
    let later = now + chrono::Duration::seconds(31);
    let ScanClaim::Started(scan_b) = b.begin_scan(&request(later, None)).await.unwrap() else {
        panic!("b could not take over an expired claim")
    };
    assert!(scan_b.fence > scan_a.fence);
    // ...and A's stale page is refused, as is its end of scan.
    let err = a
        .commit_page(
            &scan_a,
            synthd::store::PageRows {
                upserts: vec![("x".into(), [1; 32])],
                created: 1,
                events: vec![],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, synthd::store::StoreError::LostClaim { .. }),
        "{err}"
    );
    let (rows, _) = synthd::ingest::scan_end(&scan_a, vec![], true, false, &[], later);
    assert!(a.finish_scan(&scan_a, rows).await.is_err());
    assert_eq!(
        b.stored_hashes(&scan_b, vec!["x".into()]).await.unwrap(),
        vec![None]
    );
    // B finishes; a process whose schedule says it last polled before B's
    // scan finds the pair already polled.
    let (rows, _) = synthd::ingest::scan_end(&scan_b, vec![], true, false, &[], later);
    b.finish_scan(&scan_b, rows).await.unwrap();
    match a.begin_scan(&request(later, Some(now))).await.unwrap() {
        ScanClaim::Done { last_started_at } => {
            assert_eq!(last_started_at.timestamp_millis(), later.timestamp_millis())
        }
        other => panic!("{other:?}"),
    }
    // `sync` (no schedule) scans anyway.
    assert!(matches!(
        a.begin_scan(&request(later, None)).await.unwrap(),
        ScanClaim::Started(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_claimed_once_and_a_dead_claimers_work_returns_without_an_attempt() {
    let Some(db) = PgDb::create("outbox").await else {
        return;
    };
    let lease = Duration::from_secs(30);
    let (a, b) = (db.store(lease).await, db.store(lease).await);
    let w = hooks();
    let fp = |id: &str| AccountFingerprint {
        id: id.into(),
        provider: "p".into(),
        fingerprint: "1".into(),
    };
    record_accounts(&a, &[fp("x"), fp("y")], &w, t0()).await;
    // Both see the same account change: only one records it.
    let stored = b.stored_accounts().await.unwrap();
    assert_eq!(stored.len(), 2);
    let now = Utc::now();
    let got_a = a.due_deliveries("w", now, 10).await.unwrap();
    assert_eq!(got_a.len(), 2);
    assert!(
        b.due_deliveries("w", now, 10).await.unwrap().is_empty(),
        "claimed by a"
    );
    // A dies. After its lease, B gets them, attempts unchanged.
    let later = now + chrono::Duration::seconds(31);
    let got_b = b.due_deliveries("w", later, 10).await.unwrap();
    assert_eq!(got_b.len(), 2);
    assert!(got_b.iter().all(|d| d.attempts_made == 0));
    // A, back from the dead, records an attempt: it no longer counts.
    a.record_attempts(&[AttemptOutcome {
        delivery_id: got_a[0].id.clone(),
        webhook_id: "w".into(),
        attempt: attempt(1, later, 200),
        next: NextStep::Delivered,
    }])
    .await
    .unwrap();
    let (view, _, attempts) = b.delivery(&got_a[0].id).await.unwrap().unwrap();
    assert_eq!((view.status, attempts.len()), (DeliveryStatus::Pending, 0));
    // B's attempt does.
    b.record_attempts(&[AttemptOutcome {
        delivery_id: got_b[0].id.clone(),
        webhook_id: "w".into(),
        attempt: attempt(1, later, 200),
        next: NextStep::Delivered,
    }])
    .await
    .unwrap();
    let (view, _, _) = a.delivery(&got_b[0].id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Delivered);
    // A's stale attempt at that delivery, recorded after B's (the claim is
    // released by then): B's delivered attempt stands.
    a.record_attempts(&[AttemptOutcome {
        delivery_id: got_b[0].id.clone(),
        webhook_id: "w".into(),
        attempt: attempt(1, later, 500),
        next: NextStep::RetryAt(later + chrono::Duration::seconds(5)),
    }])
    .await
    .unwrap();
    let (view, _, attempts) = b.delivery(&got_b[0].id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Delivered);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
    // A process that stops gives its claims back at once.
    b.leave().await.unwrap();
    assert_eq!(a.due_deliveries("w", later, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_register_and_a_newer_schema_is_refused() {
    let Some(db) = PgDb::create("instances").await else {
        return;
    };
    let a = db.store(Duration::from_secs(30)).await;
    a.heartbeat(Utc::now()).await.unwrap();
    let seen = a.instances().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].pid, std::process::id());
    a.leave().await.unwrap();
    assert!(a.instances().await.unwrap().is_empty());

    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("UPDATE synthd_schema SET version = 99")
        .await
        .unwrap();
    let err = synthd::store::Store::connect_postgres(&db.url, 2, Duration::from_secs(30))
        .await
        .err()
        .expect("a newer schema");
    assert!(
        matches!(
            err,
            synthd::store::StoreError::NewerSchema { found: 99, .. }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter"), "{err}");
}

//! The delivery engine against the shared verifying loopback receiver, with
//! an injected clock: the README's retry schedule, Retry-After, per-record
//! order, pausing, replay and its filters, per-webhook test sends, secret
//! rotation, retention (and the daemon's retention loop), timeouts and
//! redirects; and the delivery commands of the binary.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Receiver, Reply};
use synthd::clock::{Clock, ManualClock};
use synthd::config::{self, Config};
use synthd::deliver::{self, Deliverer, Sender, TestSendError};
use synthd::ingest::AccountFingerprint;
use synthd::store::{DeliveryStatus, DeliveryView, LogQuery, ReplaySelection, Store};

const SECRET_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_OLD: &str = "whsec_dGhpcyBpcyB0aGUgb2xkIHNlY3JldCBrZXkgISE=";

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
    Redirect,
}

impl Mode {
    fn reply(self) -> Reply {
        match self {
            Mode::Ok => Reply::status(200).body("thanks"),
            Mode::Status(code) => Reply::status(code).body("nope"),
            Mode::RetryAfter(code, secs) => Reply::status(code)
                .header("retry-after", &secs.to_string())
                .body("slow down"),
            Mode::Hang => Reply::status(200).delay(Duration::from_secs(30)),
            Mode::Redirect => Reply::status(301).header("location", "/elsewhere"),
        }
    }
}

/// The shared verifying receiver (tests/common), driven by [`Mode`].
trait Modes {
    fn set(&self, mode: Mode);
    /// Requests for this record id fail with 500 whatever the mode.
    fn fail_record(&self, id: Option<&str>);
}

impl Modes for Receiver {
    fn set(&self, mode: Mode) {
        self.reply(mode.reply());
    }

    fn fail_record(&self, id: Option<&str>) {
        match id {
            None => self.unscript(),
            Some(id) => {
                let id = id.to_string();
                self.script(move |r| {
                    (r.json()["data"]["record_id"] == id.as_str())
                        .then(|| Reply::status(500).body("record blocked"))
                });
            }
        }
    }
}

/// A receiver for `secrets`, stamped by `clock` (`None`: the wall clock),
/// and the webhook URL pointing at it.
async fn start_receiver(secrets: &[&str], clock: Option<&ManualClock>) -> (Receiver, String) {
    let rx = Receiver::start(secrets, clock.cloned()).await;
    rx.set(Mode::Ok);
    let url = format!("{}/hook?token=tok-value-31337", rx.base);
    (rx, url)
}

/// A one-account, one-webhook config whose provider is at `provider`;
/// `daemon` adds lines to the `[daemon]` table, `extra` tables at the end.
fn config_text(
    state: &std::path::Path,
    provider: &str,
    url: &str,
    secrets: &str,
    daemon: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[daemon]
state_dir = "{state}"
{daemon}
[providers.p]
base_url = "{provider}/v1"
[providers.p.resources.hris_employees]
path = "/employees"
[[accounts]]
id = "acme"
provider = "p"
[[webhooks]]
id = "hr"
url = "{url}"
events = ["*"]
{secrets}
timeout = "1s"
{extra}
"#,
        state = state.display()
    )
}

/// The same, validated, for library-level tests that never poll.
fn make_config(dir: &std::path::Path, url: &str, secrets: &str, extra: &str) -> Config {
    make_config_with(dir, url, secrets, "", extra)
}

fn make_config_with(
    dir: &std::path::Path,
    url: &str,
    secrets: &str,
    daemon: &str,
    extra: &str,
) -> Config {
    config::from_toml_str(
        &config_text(dir, "http://127.0.0.1:9", url, secrets, daemon, extra),
        dir,
    )
    .unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .to_utc()
}

/// (record id, receiver path) pairs.
type Sent = BTreeSet<(String, String)>;

/// A store, a deliverer on a manual clock, and the verifying receiver.
struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    config: Arc<Config>,
    deliverer: Deliverer,
    receiver: Receiver,
    accounts: Mutex<Vec<AccountFingerprint>>,
}

/// One webhook `hr` (secret [`SECRET_NEW`]) at a verifying receiver, a
/// store, and a manual clock at [`t0`] driving the deliverer.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let (receiver, url) = start_receiver(&[SECRET_NEW], Some(&clock)).await;
    let secrets = format!("secret = \"{SECRET_NEW}\"");
    let config = Arc::new(make_config(dir.path(), &url, &secrets, ""));
    let store = Store::open_sqlite(dir.path()).unwrap();
    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    Rig {
        _dir: dir,
        store,
        clock,
        config,
        deliverer,
        receiver,
        accounts: Mutex::default(),
    }
}

impl Rig {
    /// Queues an `account.created` event for a new account id.
    async fn account_event(&self, id: &str) {
        let known = {
            let mut known = self.accounts.lock().unwrap();
            known.push(AccountFingerprint {
                id: id.into(),
                provider: "p".into(),
                fingerprint: "x".into(),
            });
            known.clone()
        };
        common::record_accounts(&self.store, &known, &self.config.webhooks, self.clock.now()).await;
    }

    /// Commits one scan of `records` (id, hash byte) for acme/hris_employees;
    /// the first is the silent baseline, as in a real poll.
    async fn scan(&self, records: &[(&str, u8)]) {
        let records: Vec<(String, [u8; 32])> = records
            .iter()
            .map(|(id, h)| (id.to_string(), [*h; 32]))
            .collect();
        common::commit_scan(
            &self.store,
            "acme",
            "hris_employees",
            &records,
            &self.config.webhooks,
            self.clock.now(),
        )
        .await;
    }

    /// The rig's config with `daemon` lines and `extra` tables added.
    fn config_with(&self, daemon: &str, extra: &str) -> Arc<Config> {
        Arc::new(make_config_with(
            self._dir.path(),
            self.config.webhooks[0].url.as_str(),
            &format!("secret = \"{SECRET_NEW}\""),
            daemon,
            extra,
        ))
    }

    /// A second webhook, `audit`, at the same receiver (path `/audit`).
    fn audit_webhook(&self) -> String {
        format!(
            "[[webhooks]]\nid = \"audit\"\nurl = \"{}/audit\"\nevents = [\"*\"]\nsecret = \"{SECRET_NEW}\"\ntimeout = \"1s\"\n",
            self.receiver.base
        )
    }

    /// The rig's database file.
    fn db(&self) -> std::path::PathBuf {
        self._dir.path().join("synthd.db")
    }

    /// How long the rig's config keeps finished deliveries.
    fn retention(&self) -> synthd::store::RetentionPolicy {
        let r = self.config.daemon.retention;
        synthd::store::RetentionPolicy {
            delivered: r.delivered,
            failed: r.failed,
        }
    }

    /// How many deliveries are in `status`.
    async fn count(&self, status: &str) -> usize {
        self.deliveries(status).await.len()
    }

    /// The ids of the enabled webhooks (what a replay may queue for).
    fn enabled(&self) -> Vec<String> {
        self.config
            .webhooks
            .iter()
            .filter(|w| w.enabled)
            .map(|w| w.id.clone())
            .collect()
    }

    /// Deliveries in `status`, newest first.
    async fn deliveries(&self, status: &str) -> Vec<DeliveryView> {
        self.store
            .delivery_log(&LogQuery {
                status: Some(DeliveryStatus::parse(status).expect("a delivery state")),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.delivery)
            .collect()
    }

    /// (record id, path) of every request the receiver answered 2xx, from
    /// request number `from` on.
    fn accepted_since(&self, from: usize) -> Sent {
        self.receiver.requests()[from..]
            .iter()
            .filter(|q| q.status < 300)
            .map(|q| {
                (
                    q.json()["data"]["record_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    q.path().to_string(),
                )
            })
            .collect()
    }

    /// Walks every pending delivery through its retries (the clock jumping
    /// to each next attempt) until none is pending.
    async fn retry_until_settled(&self) {
        for _ in 0..20 {
            let Some(next) = self
                .deliveries("pending")
                .await
                .iter()
                .filter_map(|d| d.next_attempt_at)
                .min()
            else {
                return;
            };
            self.clock.set(next.max(self.clock.now()));
            self.deliverer.deliver_pass(&self.config).await.unwrap();
        }
        panic!("deliveries still pending after 20 passes");
    }

    async fn only_delivery(&self) -> DeliveryView {
        let rows = self
            .store
            .delivery_log(&LogQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.into_iter().next().unwrap().delivery
    }
}

/// The README's retry delays, in seconds: 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h and 10 h. Written out here, not read from the code.
const README_RETRY_DELAYS: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

#[tokio::test]
async fn failing_receiver_walks_the_whole_retry_schedule_then_fails() {
    let r = rig().await;
    r.receiver.set(Mode::Status(500));
    r.account_event("acme").await;
    let mut attempt_times = vec![];
    for n in 1..=8u32 {
        let pass = r.deliverer.deliver_pass(&r.config).await.unwrap();
        assert_eq!(pass.attempted, 1, "attempt {n}");
        attempt_times.push(r.clock.now());
        let d = r.only_delivery().await;
        assert_eq!(d.attempts, n);
        if n < 8 {
            assert_eq!(d.status, DeliveryStatus::Pending);
            let next = d.next_attempt_at.expect("retry scheduled");
            let gap_ms = (next - r.clock.now()).num_milliseconds();
            let want_ms = README_RETRY_DELAYS[n as usize - 1] as i64 * 1000;
            assert!(
                gap_ms >= want_ms * 9 / 10 && gap_ms <= want_ms * 11 / 10,
                "attempt {n}: the next attempt is {gap_ms} ms later, the README says {want_ms} ms ±10 %"
            );
            // Not due a moment before its time.
            r.clock.set(next - chrono::Duration::seconds(1));
            assert_eq!(
                r.deliverer.deliver_pass(&r.config).await.unwrap().attempted,
                0
            );
            r.clock.set(next);
        } else {
            assert_eq!(d.status, DeliveryStatus::Failed);
            assert_eq!(d.next_attempt_at, None);
        }
    }
    let reqs = r.receiver.requests();
    assert_eq!(reqs.len(), 8);
    let ids: std::collections::BTreeSet<String> =
        reqs.iter().map(|q| q.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "same webhook-id on every retry");
    for (q, at) in reqs.iter().zip(&attempt_times) {
        // Each attempt is stamped with its own time and signed afresh.
        assert_eq!(q.header("webhook-timestamp"), at.timestamp().to_string());
    }
    let sigs: std::collections::BTreeSet<String> =
        reqs.iter().map(|q| q.header("webhook-signature")).collect();
    assert_eq!(sigs.len(), 8);
    let (_, _, attempts) = r
        .store
        .delivery(&r.only_delivery().await.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 8);
    assert!(attempts.iter().all(|a| a.status_code == Some(500)));
    assert_eq!(attempts[0].response_body.as_deref(), Some("nope"));
}

#[tokio::test]
async fn longer_retry_after_is_honoured_and_shorter_is_not() {
    let r = rig().await;
    r.receiver.set(Mode::RetryAfter(429, 120));
    r.account_event("acme").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let next = r.only_delivery().await.next_attempt_at.unwrap();
    assert_eq!((next - r.clock.now()).num_seconds(), 120);

    r.receiver.set(Mode::RetryAfter(503, 1));
    r.clock.set(next);
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let d = r.only_delivery().await;
    let gap = (d.next_attempt_at.unwrap() - r.clock.now()).num_seconds();
    assert!(
        (270..=330).contains(&gap),
        "second retry follows the 5 min schedule, got {gap}s"
    );
}

#[tokio::test]
async fn a_records_events_arrive_in_order_and_do_not_block_other_records() {
    let r = rig().await;
    r.scan(&[("1", 1), ("2", 2)]).await; // baseline is done by the first complete scan
    r.receiver.fail_record(Some("7"));
    r.scan(&[("1", 1), ("2", 2), ("7", 7)]).await; // 7 created
    r.scan(&[("1", 1), ("2", 2), ("7", 8), ("8", 8)]).await; // 7 updated, 8 created
    r.scan(&[("1", 1), ("2", 2), ("8", 8)]).await; // 7 deleted
    // Only the first event of record 7 may be tried; record 8 goes through.
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let seen: Vec<(String, String)> = r
        .receiver
        .requests()
        .iter()
        .map(|q| {
            let v = q.json();
            (
                v["type"].as_str().unwrap().to_string(),
                v["data"]["record_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("hris_employees.created".to_string(), "7".to_string()),
            ("hris_employees.created".to_string(), "8".to_string())
        ]
    );
    // Receiver recovers: the rest of 7's history arrives in order.
    r.receiver.fail_record(None);
    r.clock.advance(Duration::from_secs(10));
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let types_for_7: Vec<String> = r
        .receiver
        .requests()
        .iter()
        .map(|q| q.json())
        .filter(|v| v["data"]["record_id"] == "7")
        .map(|v| v["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types_for_7,
        vec![
            "hris_employees.created",
            "hris_employees.created",
            "hris_employees.updated",
            "hris_employees.deleted"
        ]
    );
}

#[tokio::test]
async fn five_days_of_failures_pause_the_webhook_until_resumed() {
    let r = rig().await;
    r.receiver.set(Mode::Status(503));
    r.account_event("a1").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    assert!(r.store.paused_webhooks().await.unwrap().is_empty());

    // Four days later, still failing: not yet paused.
    r.clock.advance(Duration::from_secs(4 * 86400));
    r.account_event("a2").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    assert!(r.store.paused_webhooks().await.unwrap().is_empty());

    // Past five days of nothing but failures: paused.
    r.clock.advance(Duration::from_secs(86400 + 60));
    r.account_event("a3").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let paused = r.store.paused_webhooks().await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].0, "hr");

    // While paused, new events are kept pending and nothing is sent.
    let before = r.receiver.requests().len();
    r.account_event("a4").await;
    r.clock.advance(Duration::from_secs(86400));
    assert_eq!(
        r.deliverer.deliver_pass(&r.config).await.unwrap().attempted,
        0
    );
    assert_eq!(r.receiver.requests().len(), before);
    let pending = r
        .store
        .delivery_log(&LogQuery {
            status: Some(DeliveryStatus::Pending),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 4, "no delivery dropped while paused");

    // Resumed: everything queued goes out.
    r.receiver.set(Mode::Ok);
    assert!(r.store.resume_webhook("hr").await.unwrap());
    let pass = r.deliverer.deliver_pass(&r.config).await.unwrap();
    assert_eq!(pass.delivered, 4);
    assert!(r.store.paused_webhooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_config_change_resumes_a_paused_webhook() {
    let r = rig().await;
    r.receiver.set(Mode::Status(500));
    let fp = |c: &Config| vec![(c.webhooks[0].id.clone(), c.webhooks[0].fingerprint())];
    r.store.reconcile_webhooks(&fp(&r.config)).await.unwrap();
    r.account_event("a1").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    r.clock.advance(Duration::from_secs(5 * 86400 + 1));
    r.account_event("a2").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    assert_eq!(r.store.paused_webhooks().await.unwrap().len(), 1);
    // Same config again: stays paused.
    assert!(
        r.store
            .reconcile_webhooks(&fp(&r.config))
            .await
            .unwrap()
            .is_empty()
    );
    // The operator changes the webhook (new timeout): resumed.
    let dir = tempfile::tempdir().unwrap();
    let url = r.config.webhooks[0].url.to_string();
    let changed = make_config(dir.path(), &url, &format!("secret = \"{SECRET_NEW}\""), "").webhooks
        [0]
    .clone();
    let mut changed = changed;
    changed.timeout = Duration::from_secs(5);
    assert_eq!(
        r.store
            .reconcile_webhooks(&[(changed.id.clone(), changed.fingerprint())])
            .await
            .unwrap(),
        vec!["hr".to_string()]
    );
    assert!(r.store.paused_webhooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn replay_requeues_the_same_event_id() {
    let r = rig().await;
    r.account_event("acme").await;
    assert_eq!(
        r.deliverer.deliver_pass(&r.config).await.unwrap().delivered,
        1
    );
    let event_id = r.only_delivery().await.event_id;
    let done = r
        .store
        .replay(
            &ReplaySelection {
                event_id: Some(event_id.clone()),
                ..Default::default()
            },
            &r.enabled(),
            r.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!((done.queued, done.skipped), (1, 0));
    assert_eq!(
        r.deliverer.deliver_pass(&r.config).await.unwrap().delivered,
        1
    );
    let reqs = r.receiver.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("webhook-id"), event_id);
    assert_eq!(reqs[1].header("webhook-id"), event_id);
    assert_eq!(reqs[0].body, reqs[1].body);

    // An event id that does not exist queues nothing.
    let done = r
        .store
        .replay(
            &ReplaySelection {
                event_id: Some("evt_nope".into()),
                ..Default::default()
            },
            &r.enabled(),
            r.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!((done.queued, done.skipped), (0, 0));
}

/// Records `a`, `b`, `c`, `d` created at t0, t0+1h, t0+2h and t0+3h, each
/// delivered to `hr` and `audit`, except `c` to `audit`, which failed for
/// good; then every filter of `replay` against that history.
#[tokio::test]
async fn replay_selects_by_time_window_webhook_and_status() {
    let mut r = rig().await;
    r.config = r.config_with("", &r.audit_webhook());
    let hour = chrono::Duration::hours(1);
    r.clock.set(t0() - hour);
    r.scan(&[("base", 0)]).await; // the silent baseline
    let mut records = vec![("base", 0u8)];
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        r.clock.set(t0() + hour * i as i32);
        records.push((id, i as u8 + 1));
        r.scan(&records).await;
    }
    r.receiver.script(|q| {
        (q.path() == "/audit" && q.json()["data"]["record_id"] == "c")
            .then(|| Reply::status(500).body("c is refused"))
    });
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    r.retry_until_settled().await;
    r.receiver.unscript();
    assert_eq!(r.deliveries("delivered").await.len(), 7);
    let failed = r.deliveries("failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].webhook_id, "audit");

    let both = |ids: &[&str]| -> Sent {
        ids.iter()
            .flat_map(|id| {
                [
                    (id.to_string(), "/hook".to_string()),
                    (id.to_string(), "/audit".to_string()),
                ]
            })
            .collect()
    };
    let only = |ids: &[&str], path: &str| -> Sent {
        ids.iter()
            .map(|id| (id.to_string(), path.to_string()))
            .collect()
    };
    let at = |h: i32, ms: i64| Some(t0() + hour * h + chrono::Duration::milliseconds(ms));
    let cases: Vec<(&str, ReplaySelection, Sent)> = vec![
        (
            "since is inclusive, until exclusive",
            ReplaySelection {
                since: at(1, 0),
                until: at(3, 0),
                ..Default::default()
            },
            both(&["b", "c"]),
        ),
        (
            "the window moved by a millisecond",
            ReplaySelection {
                since: at(1, 1),
                until: at(3, 1),
                ..Default::default()
            },
            both(&["c", "d"]),
        ),
        (
            "since alone, one webhook",
            ReplaySelection {
                since: at(0, 1),
                webhook: Some("audit".into()),
                ..Default::default()
            },
            only(&["b", "c", "d"], "/audit"),
        ),
        (
            "until alone",
            ReplaySelection {
                until: at(1, 0),
                webhook: Some("hr".into()),
                ..Default::default()
            },
            only(&["a"], "/hook"),
        ),
        (
            "failed only",
            ReplaySelection {
                since: at(-5, 0),
                status: Some(DeliveryStatus::Failed),
                ..Default::default()
            },
            only(&["c"], "/audit"),
        ),
        (
            "failed only, on a webhook that has none",
            ReplaySelection {
                since: at(-5, 0),
                status: Some(DeliveryStatus::Failed),
                webhook: Some("hr".into()),
                ..Default::default()
            },
            BTreeSet::new(),
        ),
        (
            "a window after every event",
            ReplaySelection {
                since: at(3, 1),
                ..Default::default()
            },
            BTreeSet::new(),
        ),
    ];
    for (what, sel, want) in cases {
        let done = r
            .store
            .replay(&sel, &r.enabled(), r.clock.now())
            .await
            .unwrap();
        assert_eq!(
            (done.queued, done.skipped),
            (want.len() as u64, 0),
            "{what}"
        );
        let from = r.receiver.count();
        let pass = r.deliverer.deliver_pass(&r.config).await.unwrap();
        assert_eq!(pass.delivered, want.len() as u64, "{what}");
        assert_eq!(r.accepted_since(from), want, "{what}");
    }
    // The replays went out with the original event ids.
    let mut ids_by_record: std::collections::BTreeMap<String, BTreeSet<String>> =
        Default::default();
    for q in r.receiver.requests() {
        ids_by_record
            .entry(q.json()["data"]["record_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(q.header("webhook-id"));
    }
    assert!(ids_by_record.values().all(|ids| ids.len() == 1));
}

#[tokio::test]
async fn test_sends_are_rate_limited_per_webhook() {
    let mut r = rig().await;
    r.config = r.config_with("", &r.audit_webhook());
    let sender = Sender::new();
    let (hr, audit) = (&r.config.webhooks[0], &r.config.webhooks[1]);
    /// A test send `secs` after t0.
    async fn send(
        r: &Rig,
        sender: &Sender,
        webhook: &synthd::config::Webhook,
        secs: i64,
    ) -> Result<synthd::store::AttemptRecord, TestSendError> {
        r.clock.set(t0() + chrono::Duration::seconds(secs));
        deliver::test_send(&r.store, sender, webhook, r.clock.now()).await
    }
    let too_soon = |result: Result<synthd::store::AttemptRecord, TestSendError>| match result {
        Err(TestSendError::TooSoon { wait_secs, .. }) => wait_secs,
        other => panic!("expected TooSoon, got {other:?}"),
    };
    let ok = |result: Result<synthd::store::AttemptRecord, TestSendError>| {
        result.expect("the test send goes out").status_code
    };
    assert_eq!(ok(send(&r, &sender, hr, 0).await), Some(200));
    // Another webhook's test is not held back by the first one's.
    assert_eq!(ok(send(&r, &sender, audit, 1).await), Some(200));
    assert_eq!(too_soon(send(&r, &sender, hr, 3).await), 7);
    assert_eq!(too_soon(send(&r, &sender, audit, 3).await), 8);
    assert_eq!(ok(send(&r, &sender, hr, 10).await), Some(200));
    assert_eq!(too_soon(send(&r, &sender, audit, 10).await), 1);
    assert_eq!(ok(send(&r, &sender, audit, 11).await), Some(200));

    let reqs = r.receiver.requests();
    let paths: Vec<&str> = reqs.iter().map(|q| q.path()).collect();
    assert_eq!(paths, ["/hook", "/audit", "/hook", "/audit"]);
    assert!(reqs.iter().all(|q| q.json()["type"] == "webhook.test"));
    // Logged like any delivery.
    let logged = r.deliveries("delivered").await;
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|d| d.event_type == "webhook.test"));
    assert_eq!(logged.iter().filter(|d| d.webhook_id == "audit").count(), 2);
}

#[tokio::test]
async fn during_rotation_both_secrets_verify_with_standardwebhooks() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver checks every request against both secrets too.
    let (receiver, url) = start_receiver(&[SECRET_NEW, SECRET_OLD], None).await;
    let config = Arc::new(make_config(
        dir.path(),
        &url,
        &format!("secrets = [\"{SECRET_NEW}\", \"{SECRET_OLD}\"]"),
        "",
    ));
    let store = Store::open_sqlite(dir.path()).unwrap();
    // Real clock: standardwebhooks checks the timestamp against now.
    let deliverer = Deliverer::new(store.clone(), Arc::new(synthd::clock::SystemClock));
    common::record_accounts(
        &store,
        &[AccountFingerprint {
            id: "acme".into(),
            provider: "p".into(),
            fingerprint: "x".into(),
        }],
        &config.webhooks,
        Utc::now(),
    )
    .await;
    assert_eq!(deliverer.deliver_pass(&config).await.unwrap().delivered, 1);
    let q = &receiver.requests()[0];
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, q.header(name).parse().unwrap());
    }
    assert_eq!(q.header("webhook-signature").split(' ').count(), 2);
    for secret in [SECRET_NEW, SECRET_OLD] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&q.body, &headers)
            .unwrap_or_else(|e| panic!("{secret} failed: {e:?}"));
    }
    assert!(
        standardwebhooks::Webhook::new("whsec_c29tZSBvdGhlciBzZWNyZXQgdGhhdCBpcyBsb25n")
            .unwrap()
            .verify(&q.body, &headers)
            .is_err()
    );
}

#[tokio::test]
async fn retention_prunes_old_deliveries_and_attempts_only() {
    let r = rig().await;
    r.account_event("delivered-old").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    r.clock.advance(Duration::from_secs(2 * 86400));
    r.account_event("delivered-recent").await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    r.receiver.set(Mode::Status(410));
    // A failed delivery (8 attempts) finishing at about the same time.
    r.account_event("failed").await;
    for _ in 0..8 {
        r.deliverer.deliver_pass(&r.config).await.unwrap();
        r.clock.advance(Duration::from_secs(11 * 3600));
    }
    assert_eq!(
        (r.count("delivered").await, r.count("failed").await),
        (2, 1)
    );
    // 7.5 days after the first delivery: only the oldest delivered one goes.
    r.clock.set(t0() + chrono::Duration::hours(7 * 24 + 12));
    let retention = r.retention();
    let mut total = 0;
    loop {
        let p = r
            .store
            .prune_batch(retention, r.clock.now(), 1)
            .await
            .unwrap();
        if p.deliveries == 0 && p.events == 0 {
            break;
        }
        total += p.deliveries;
    }
    assert_eq!(total, 1);
    assert_eq!(
        (r.count("delivered").await, r.count("failed").await),
        (1, 1)
    );
    // 40 days on, the failed one (30 d retention) goes too, with its attempts.
    r.clock.set(t0() + chrono::Duration::days(40));
    while r
        .store
        .prune_batch(retention, r.clock.now(), 500)
        .await
        .unwrap()
        .deliveries
        > 0
    {}
    assert_eq!(
        (r.count("delivered").await, r.count("failed").await),
        (0, 0)
    );
    assert_eq!(common::stored_attempts(&r.db()), 0);
    assert!(common::stored_event_ids(&r.db()).is_empty());
}

/// Event ids of the retention scenario's three records.
struct Kept {
    done: String,
    gone: String,
    late: String,
}

/// With `retention = { delivered = "1h", failed = "30d" }`: record `done`,
/// delivered at t0; record `gone`, failed for good about a day later; record
/// `late`, created at t0 + 30 h and still pending after four failed
/// attempts. Leaves the clock at t0 + 32 h, when `done` is past its
/// retention, the events of all three are more than an hour old, and `late`
/// is not yet due again.
async fn retention_scenario(r: &mut Rig) -> Kept {
    r.config = r.config_with("retention = { delivered = \"1h\", failed = \"30d\" }", "");
    r.clock.set(t0() - chrono::Duration::hours(1));
    r.scan(&[("base", 0)]).await;
    r.clock.set(t0());
    r.scan(&[("base", 0), ("done", 1), ("gone", 2)]).await;
    r.receiver.script(|q| {
        let record = q.json()["data"]["record_id"].clone();
        (record == "gone" || record == "late").then(|| Reply::status(500).body("not now"))
    });
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    r.retry_until_settled().await;
    let late_at = t0() + chrono::Duration::hours(30);
    r.clock.set(late_at);
    r.scan(&[("base", 0), ("done", 1), ("gone", 2), ("late", 3)])
        .await;
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    for _ in 0..3 {
        let next = r.deliveries("pending").await[0].next_attempt_at.unwrap();
        r.clock.set(next);
        r.deliverer.deliver_pass(&r.config).await.unwrap();
    }
    r.clock.set(late_at + chrono::Duration::hours(2));

    let mut events = Vec::new();
    for status in ["delivered", "failed", "pending"] {
        let rows = r.deliveries(status).await;
        assert_eq!(rows.len(), 1, "{status}: {rows:?}");
        let row = &rows[0];
        if status == "pending" {
            assert_eq!(row.attempts, 4);
            assert!(row.next_attempt_at.unwrap() > r.clock.now());
        }
        events.push(row.event_id.clone());
    }
    let kept = Kept {
        done: events[0].clone(),
        gone: events[1].clone(),
        late: events[2].clone(),
    };
    let stored = common::stored_event_ids(&r.db());
    assert!(stored.contains(&kept.done) && stored.contains(&kept.gone));
    kept
}

/// What retention must have done to the scenario: `done` and its event are
/// gone; `gone` is still replayable and `late` still goes out when due, both
/// with their event ids.
async fn assert_pruned_as_it_should(r: &Rig, kept: &Kept) {
    async fn listed(r: &Rig, status: &str) -> Vec<String> {
        r.deliveries(status)
            .await
            .into_iter()
            .map(|d| d.event_id)
            .collect()
    }
    assert!(
        !listed(r, "delivered").await.contains(&kept.done),
        "done kept"
    );
    let stored = common::stored_event_ids(&r.db());
    assert!(!stored.contains(&kept.done), "the event of done kept");
    assert!(
        stored.contains(&kept.gone),
        "the event of a failed delivery pruned"
    );
    assert!(
        stored.contains(&kept.late),
        "the event of a pending delivery pruned"
    );
    assert_eq!(listed(r, "failed").await, vec![kept.gone.clone()]);
    assert_eq!(listed(r, "pending").await, vec![kept.late.clone()]);

    r.receiver.unscript();
    let from = r.receiver.count();
    let queued = r
        .store
        .replay(
            &ReplaySelection {
                event_id: Some(kept.gone.clone()),
                ..Default::default()
            },
            &r.enabled(),
            r.clock.now(),
        )
        .await
        .unwrap()
        .queued;
    assert_eq!(queued, 1, "the failed delivery can no longer be replayed");
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let next = r.deliveries("pending").await[0].next_attempt_at.unwrap();
    r.clock.set(next);
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let sent: Vec<(String, u16)> = r.receiver.requests()[from..]
        .iter()
        .map(|q| (q.header("webhook-id"), q.status))
        .collect();
    assert_eq!(
        sent,
        [(kept.gone.clone(), 200), (kept.late.clone(), 200)],
        "the failed one replayed, the pending one sent, with their ids"
    );
}

#[tokio::test]
async fn retention_keeps_the_events_of_failed_and_pending_deliveries() {
    let mut r = rig().await;
    let kept = retention_scenario(&mut r).await;
    let mut pruned = synthd::store::Pruned::default();
    loop {
        let p = r
            .store
            .prune_batch(r.retention(), r.clock.now(), 1)
            .await
            .unwrap();
        if p == synthd::store::Pruned::default() {
            break;
        }
        pruned.deliveries += p.deliveries;
        pruned.events += p.events;
    }
    assert_eq!((pruned.deliveries, pruned.events), (1, 1));
    assert_pruned_as_it_should(&r, &kept).await;
}

/// The daemon's own retention loop, on the injected clock: started at
/// t0 + 32 h, its first pass prunes exactly what `prune_batch` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_retention_loop_prunes_on_the_injected_clock() {
    let mut r = rig().await;
    let kept = retention_scenario(&mut r).await;
    let engine = synthd::daemon::Engine::new(r.store.clone(), &r.config, Arc::new(r.clock.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(synthd::daemon::run(
        engine,
        (*r.config).clone(),
        synthd::daemon::RunOptions {
            config_path: None,
            notify_systemd: false,
            plan_warnings: false,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    common::wait_until_async(
        "the retention loop to prune the delivered delivery",
        Duration::from_secs(10),
        || async {
            !r.deliveries("delivered")
                .await
                .iter()
                .any(|d| d.event_id == kept.done)
        },
    )
    .await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert_pruned_as_it_should(&r, &kept).await;
}

#[tokio::test]
async fn a_hung_receiver_times_out_and_a_redirect_is_a_failure_not_followed() {
    let r = rig().await;
    r.receiver.set(Mode::Hang);
    r.account_event("acme").await;
    let started = std::time::Instant::now();
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeout = 1s must cut the attempt"
    );
    let d = r.only_delivery().await;
    let (_, _, attempts) = r.store.delivery(&d.id).await.unwrap().unwrap();
    assert_eq!(attempts[0].error_kind.as_deref(), Some("timeout"));
    assert!(
        !attempts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("tok-value-31337")
    );
    assert_eq!(d.status, DeliveryStatus::Pending);

    r.receiver.set(Mode::Redirect);
    r.clock.advance(Duration::from_secs(60));
    r.deliverer.deliver_pass(&r.config).await.unwrap();
    let (row, _, attempts) = r.store.delivery(&d.id).await.unwrap().unwrap();
    assert_eq!(attempts[1].status_code, Some(301));
    assert_eq!(attempts[1].error_kind.as_deref(), Some("redirect"));
    assert_eq!(row.status, DeliveryStatus::Pending);
    let followed = r
        .receiver
        .all_requests()
        .iter()
        .filter(|q| q.path() == "/elsewhere")
        .count();
    assert_eq!(followed, 0, "redirects are not followed");
    assert_eq!(r.receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_dead_webhooks_backlog_never_holds_up_a_healthy_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let (dead, dead_url) = start_receiver(&[SECRET_NEW], Some(&clock)).await;
    let (healthy, healthy_url) = start_receiver(&[SECRET_NEW], Some(&clock)).await;
    dead.set(Mode::Hang);
    let extra = format!(
        "[[webhooks]]\nid = \"healthy\"\nurl = \"{healthy_url}\"\nevents = [\"*\"]\naccounts = [\"acme\"]\nsecret = \"{SECRET_NEW}\"\n"
    );
    let config = Arc::new(make_config(
        dir.path(),
        &dead_url,
        &format!("secret = \"{SECRET_NEW}\""),
        &extra,
    ));
    let store = Store::open_sqlite(dir.path()).unwrap();
    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    // 600 events only the dead webhook wants, queued before the healthy one's.
    let mut accounts: Vec<AccountFingerprint> = (0..600)
        .map(|i| AccountFingerprint {
            id: format!("a{i}"),
            provider: "p".into(),
            fingerprint: "x".into(),
        })
        .collect();
    common::record_accounts(&store, &accounts, &config.webhooks, clock.now()).await;
    accounts.push(AccountFingerprint {
        id: "acme".into(),
        provider: "p".into(),
        fingerprint: "x".into(),
    });
    common::record_accounts(&store, &accounts, &config.webhooks, clock.now()).await;

    let tasks = deliverer
        .dispatch_due(&config, &std::collections::HashSet::new())
        .await
        .unwrap();
    // The dead webhook gets its 4 concurrent slots; the healthy one is
    // dispatched in the same round.
    assert_eq!(tasks.len(), synthd::config::DEFAULT_WEBHOOK_CONCURRENCY + 1);
    let started = std::time::Instant::now();
    while healthy.requests().is_empty() {
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "healthy webhook waited on the dead one"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(healthy.requests()[0].json()["data"]["account_id"], "acme");
    for (_, t) in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        dead.requests().len(),
        synthd::config::DEFAULT_WEBHOOK_CONCURRENCY
    );
}

fn synthd(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("synthd"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

// Multi-threaded: the test blocks on child processes while the in-process
// receiver must keep answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_commands_work_on_a_real_run_and_never_show_the_token() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!([{"id": 1, "n": "Quillon-Marsh"}])),
        )
        .mount(&provider)
        .await;
    let (receiver, url) = start_receiver(&[SECRET_NEW], None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("synthd.toml");
    std::fs::write(
        &cfg,
        config_text(
            &dir.path().join("state"),
            &provider.uri(),
            &url,
            &format!("secret = \"{SECRET_NEW}\""),
            "",
            "",
        ),
    )
    .unwrap();
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let (code, out, err) = synthd(&cfg, args);
        outputs.push_str(&out);
        outputs.push_str(&err);
        (code, out, err)
    };

    receiver.set(Mode::Status(500));
    let (code, out, _) = run(&["sync"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("deliveries: 1 attempted, 0 delivered, 1 to retry, 0 failed"),
        "{out}"
    );

    let (code, out, _) = run(&["deliveries"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("account.created") && out.contains("pending") && out.contains("500"),
        "{out}"
    );
    let (_, json, _) = run(&["deliveries", "--json", "--status", "pending"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 1);
    let delivery_id = rows[0]["id"].as_str().unwrap().to_string();
    let event_id = rows[0]["event_id"].as_str().unwrap().to_string();

    let (code, out, _) = run(&["deliveries", "show", &delivery_id]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("\"id\":\"{event_id}\"")),
        "the exact payload is shown: {out}"
    );
    assert!(
        out.contains("#1") && out.contains("HTTP 500") && out.contains("response: nope"),
        "{out}"
    );
    assert!(out.contains("?token=***"), "{out}");
    let (code, _, err) = run(&["deliveries", "show", "dlv_nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no delivery"), "{err}");

    // Replaying an event whose delivery is still pending queues nothing,
    // however often it is asked (the library test covers a replay that
    // queues a second row).
    for _ in 0..2 {
        let (code, out, _) = run(&["replay", &event_id]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("queued 0 deliveries"), "{out}");
        assert!(out.contains("already pending"), "{out}");
    }
    let (_, json, _) = run(&["deliveries", "--json", "--event", &event_id]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&json)
            .unwrap()
            .len(),
        1
    );
    let (code, out, _) = run(&[
        "replay",
        "--since",
        "2000-01-01T00:00:00Z",
        "--status",
        "failed",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("queued 0 deliveries") || out.contains("nothing matched"),
        "{out}"
    );

    // Test sends: one now, the next refused even from another process.
    receiver.set(Mode::Ok);
    let (code, out, _) = run(&["webhook", "test", "hr"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HTTP 200 in"), "{out}");
    let (code, _, err) = run(&["webhook", "test", "hr"]);
    assert_eq!(code, 1);
    assert!(err.contains("less than 10s ago"), "{err}");
    let (code, _, err) = run(&["webhook", "test", "nope"]);
    assert_eq!(code, 2, "{err}");
    let tests = receiver
        .requests()
        .iter()
        .filter(|q| q.json()["type"] == "webhook.test")
        .count();
    assert_eq!(tests, 1);

    let (code, out, _) = run(&["webhook", "resume", "hr"]);
    assert_eq!(code, 0);
    assert!(out.contains("was not paused"), "{out}");
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("acme/hris_employees: 1 records"), "{out}");

    for secret in ["tok-value-31337", SECRET_NEW, "Quillon-Marsh"] {
        assert!(!outputs.contains(secret), "{secret} shown in CLI output");
    }
}

/// `deliveries` and `replay` through the binary, with every filter: four
/// events committed by four `sync`s (so each has its own creation time),
/// delivered to two webhooks; then windows that include some events and
/// exclude others on both sides, `--webhook`, `--status`, `--limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_the_delivery_log_filter_through_the_binary() {
    use serde_json::{Value, json};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let provider = MockServer::start().await;
    let rx = Receiver::start(&[common::SECRET], None).await;
    let env = common::TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.p]
base_url = "{provider}/v1"
[providers.p.resources.hris_employees]
path = "/employees"
[[accounts]]
id = "acme"
provider = "p"
[[webhooks]]
id = "hr"
url = "{rx}/hook"
events = ["*"]
secret = "{secret}"
[[webhooks]]
id = "audit"
url = "{rx}/audit"
events = ["*"]
secret = "{secret}"
"#,
        provider = provider.uri(),
        rx = rx.base,
        secret = common::SECRET,
    ));
    let serve = |n: u32| {
        let provider = &provider;
        async move {
            provider.reset().await;
            let records: Vec<Value> = (1..=n).map(|i| json!({"id": i})).collect();
            Mock::given(method("GET"))
                .and(path("/v1/employees"))
                .respond_with(ResponseTemplate::new(200).set_body_json(records))
                .mount(provider)
                .await;
        }
    };
    // Record 4 is refused by audit throughout: that delivery stays pending.
    rx.script(|q| {
        (q.path() == "/audit" && q.json()["data"]["record_id"] == "4").then(|| Reply::status(500))
    });
    // E0 account.created (the baseline), E1..E3 records 2..4 created.
    for n in 1..=4 {
        serve(n).await;
        env.sync(&[]).await.0.assert_code(0);
    }
    /// `deliveries --json` with `args`.
    async fn list(env: &common::TestEnv, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["deliveries", "--json"];
        all.extend_from_slice(args);
        let out = env.synthd(&all).await;
        out.assert_code(0);
        out.json().as_array().unwrap().clone()
    }
    let all = list(&env, &["--limit", "100"]).await;
    assert_eq!(all.len(), 8, "{all:?}");
    // Events oldest first, with their creation times.
    let mut events: Vec<(chrono::DateTime<Utc>, String, String)> = all
        .iter()
        .map(|d| {
            (
                d["created_at"].as_str().unwrap().parse().unwrap(),
                d["event_id"].as_str().unwrap().to_string(),
                d["event_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort();
    events.dedup();
    assert_eq!(events.len(), 4, "{events:?}");
    let types: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        types,
        [
            "account.created",
            "hris_employees.created",
            "hris_employees.created",
            "hris_employees.created"
        ]
    );
    let id = |i: usize| events[i].1.clone();
    // A time strictly between events i and i + 1.
    let between = |i: usize| {
        let (a, b) = (events[i].0, events[i + 1].0);
        assert!(b - a >= chrono::Duration::milliseconds(2), "{a} {b}");
        (a + (b - a) / 2).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let before_all = (events[0].0 - chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    // The log's own filters.
    let newest: Vec<Value> = list(&env, &["--limit", "3"]).await;
    assert_eq!(newest, all[..3].to_vec(), "--limit keeps the newest");
    let audit = list(&env, &["--webhook", "audit"]).await;
    assert_eq!(audit.len(), 4);
    assert!(audit.iter().all(|d| d["webhook_id"] == "audit"));
    let pending = list(&env, &["--status", "pending"]).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (&pending[0]["event_id"], &pending[0]["webhook_id"]),
        (&json!(id(3)), &json!("audit"))
    );
    let of_e1 = list(&env, &["--event", &id(1)]).await;
    assert_eq!(of_e1.len(), 2);

    // Each replay, then a sync that sends it: the receiver must accept
    // exactly the selected (event, webhook) pairs.
    /// A replay's arguments, what it says, and the (event index, path)
    /// pairs the receiver then accepts.
    struct Case {
        args: Vec<String>,
        says: &'static str,
        sent: Vec<(usize, &'static str)>,
    }
    let cases = vec![
        Case {
            args: vec!["--since".into(), between(0), "--until".into(), between(2)],
            says: "queued 4 deliveries",
            sent: vec![(1, "/hook"), (1, "/audit"), (2, "/hook"), (2, "/audit")],
        },
        Case {
            args: vec![
                "--since".into(),
                between(0),
                "--webhook".into(),
                "audit".into(),
            ],
            // E3 to audit is still pending: not queued twice.
            says: "queued 2 deliveries",
            sent: vec![(1, "/audit"), (2, "/audit")],
        },
        Case {
            args: vec![
                "--since".into(),
                between(2),
                "--webhook".into(),
                "hr".into(),
            ],
            says: "queued 1 deliveries",
            sent: vec![(3, "/hook")],
        },
        Case {
            args: vec![
                "--since".into(),
                before_all.clone(),
                "--status".into(),
                "delivered".into(),
                "--until".into(),
                between(0),
            ],
            says: "queued 2 deliveries",
            sent: vec![(0, "/hook"), (0, "/audit")],
        },
        Case {
            args: vec![
                "--since".into(),
                before_all.clone(),
                "--status".into(),
                "pending".into(),
            ],
            says: "1: a delivery of that event to that webhook is already pending",
            sent: vec![],
        },
        Case {
            args: vec!["--since".into(), between(2), "--until".into(), between(2)],
            says: "nothing matched",
            sent: vec![],
        },
    ];
    for Case { args, says, sent } in cases {
        rx.clear();
        let mut argv = vec!["replay"];
        argv.extend(args.iter().map(String::as_str));
        let out = env.synthd(&argv).await;
        out.assert_code(0);
        assert!(out.stdout.contains(says), "{args:?}: {}", out.stdout);
        env.sync(&[]).await.0.assert_code(0);
        let got: BTreeSet<(String, String)> = rx
            .requests()
            .iter()
            .filter(|q| q.status == 200)
            .map(|q| (q.header("webhook-id"), q.path().to_string()))
            .collect();
        let want: BTreeSet<(String, String)> =
            sent.iter().map(|(i, p)| (id(*i), p.to_string())).collect();
        assert_eq!(got, want, "{args:?}");
    }
    let out = env
        .synthd(&["replay", "--since", &before_all, "--webhook", "nope"])
        .await;
    out.assert_code(2);
    assert!(out.stderr.contains("no webhook \"nope\""), "{}", out.stderr);

    // A test send to each webhook: the second is not held back by the first.
    for hook in ["hr", "audit"] {
        let out = env.synthd(&["webhook", "test", hook]).await;
        out.assert_code(0);
        assert!(out.stdout.contains("HTTP 200 in"), "{hook}: {}", out.stdout);
    }
    let out = env.synthd(&["webhook", "test", "audit"]).await;
    out.assert_code(1);
    assert!(out.stderr.contains("less than 10s ago"), "{}", out.stderr);
    env.assert_no_leaks(&[]);
}

/// The shared receiver is not a rubber stamp: it turns away what a real
/// receiver would (a timestamp that is not the one signed or not now, a
/// signature by another secret, no hex signature, a webhook-id that is
/// not the event id) and accepts the genuine request.
#[tokio::test]
async fn the_shared_receiver_rejects_what_a_real_receiver_would() {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let clock = ManualClock::new(t0());
    let rx = Receiver::start(&[SECRET_NEW], Some(clock.clone())).await;
    let body = r#"{"id":"evt_1","type":"webhook.test","data":{}}"#;
    let ts = t0().timestamp();
    let sign = |secret: &str, id: &str, ts: i64| {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign(id, ts, body.as_bytes())
            .unwrap()
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET_NEW.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let client = reqwest::Client::new();
    let post = |id: &str, header_ts: i64, signature: String, hex: Option<&str>| {
        let mut req = client
            .post(format!("{}/hook", rx.base))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", header_ts.to_string())
            .header("webhook-signature", signature)
            .body(body);
        if let Some(hex) = hex {
            req = req.header("x-synthd-signature", hex);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let cases = [
        (
            "signed for one time, stamped another",
            post("evt_1", ts + 1, sign(SECRET_NEW, "evt_1", ts), Some(&hex)).await,
        ),
        (
            "signed and stamped, but not now",
            post(
                "evt_1",
                ts + 1,
                sign(SECRET_NEW, "evt_1", ts + 1),
                Some(&hex),
            )
            .await,
        ),
        (
            "another secret",
            post("evt_1", ts, sign(SECRET_OLD, "evt_1", ts), Some(&hex)).await,
        ),
        (
            "no hex signature",
            post("evt_1", ts, sign(SECRET_NEW, "evt_1", ts), None).await,
        ),
        (
            "webhook-id is not the event id",
            post("evt_2", ts, sign(SECRET_NEW, "evt_2", ts), Some(&hex)).await,
        ),
    ];
    for (what, status) in &cases {
        assert_eq!(*status, 401, "{what}");
    }
    assert_eq!(rx.rejected().len(), cases.len());
    assert_eq!(
        post("evt_1", ts, sign(SECRET_NEW, "evt_1", ts), Some(&hex)).await,
        200,
        "the genuine request"
    );
}

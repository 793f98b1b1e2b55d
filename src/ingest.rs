//! The rules that turn what a scan saw into the rows the store writes, as
//! pure functions: which hashes change, which events exist, which webhooks
//! get them and the exact body each receives. Every backend writes these
//! rows as they are, so a rule exists once.
//!
//! - A page: each record's digest against its stored hash
//!   ([`detect::classify`]): created and updated records are upserted, an
//!   unchanged one writes nothing; outside a silent baseline each change is
//!   an event with one delivery per subscribed webhook.
//! - The end of a complete scan: the stored ids it did not see are deleted,
//!   unless the mass-deletion guard ([`detect::deletion_decision`]) holds
//!   them for the next consecutive complete scan.
//! - The config against the stored accounts: `account.created`, `.updated`
//!   and `.deleted`.

use chrono::{DateTime, Utc};

use crate::config::Webhook;
use crate::detect::{self, Change, DeleteDecision, Hash, RecordDigest};
use crate::events::{self, Action, Event, EventKind};
use crate::store::{
    AccountChange, DeliveryRow, EventRow, NewEvent, PageRows, ScanEndRows, ScanStart,
    StoredAccount, new_delivery_id,
};

/// The event and one delivery per webhook that wants it, each with the
/// exact body that webhook receives.
pub fn new_event(event: &Event, webhooks: &[Webhook]) -> NewEvent {
    let (resource, record_id) = match &event.kind {
        EventKind::Record {
            resource,
            record_id,
            ..
        } => (Some(resource.clone()), Some(record_id.clone())),
        _ => (None, None),
    };
    let order_key = event.order_key();
    NewEvent {
        event: EventRow {
            id: event.id.clone(),
            event_type: event.event_type(),
            account_id: event.account_id().to_string(),
            resource,
            record_id,
            created_at: event.timestamp,
        },
        deliveries: events::routes(webhooks, event)
            .map(|w| DeliveryRow {
                id: new_delivery_id(),
                webhook_id: w.id.clone(),
                order_key: order_key.clone(),
                payload: event.body(w),
            })
            .collect(),
    }
}

fn record_event(scan: &ScanStart, action: Action, record_id: &str, now: DateTime<Utc>) -> Event {
    Event::new(
        EventKind::Record {
            account_id: scan.account_id.clone(),
            resource: scan.resource.clone(),
            action,
            record_id: record_id.to_string(),
        },
        now,
    )
}

/// What a page changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageChanges {
    pub records: u64,
    pub created: u64,
    pub updated: u64,
}

/// The rows one page writes. `stored[i]` is the stored hash of
/// `digests[i].id`. `emit` is false during a silent baseline.
pub fn page(
    scan: &ScanStart,
    digests: &[RecordDigest],
    stored: &[Option<Hash>],
    emit: bool,
    webhooks: &[Webhook],
    now: DateTime<Utc>,
) -> (PageRows, PageChanges) {
    debug_assert_eq!(digests.len(), stored.len());
    let mut rows = PageRows::default();
    let mut changes = PageChanges {
        records: digests.len() as u64,
        ..Default::default()
    };
    for (d, stored) in digests.iter().zip(stored) {
        let action = match detect::classify(stored.as_ref(), &d.hash) {
            Change::Unchanged => continue,
            Change::Reformatted => {
                rows.upserts.push((d.id.clone(), d.hash));
                continue;
            }
            Change::Created => {
                changes.created += 1;
                Action::Created
            }
            Change::Updated => {
                changes.updated += 1;
                Action::Updated
            }
        };
        rows.upserts.push((d.id.clone(), d.hash));
        if emit {
            rows.events
                .push(new_event(&record_event(scan, action, &d.id, now), webhooks));
        }
    }
    rows.created = changes.created;
    (rows, changes)
}

/// What the end of a scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanEnd {
    pub deleted: u64,
    /// Deletions held back by the mass-deletion guard.
    pub held: u64,
}

/// The rows that end a successful scan. `missing` are the stored ids a
/// complete (`full`) scan did not see; an incomplete or incremental scan
/// deletes nothing. A silent baseline deletes without events and is never
/// held.
pub fn scan_end(
    scan: &ScanStart,
    missing: Vec<String>,
    full: bool,
    emit: bool,
    webhooks: &[Webhook],
    now: DateTime<Utc>,
) -> (ScanEndRows, ScanEnd) {
    let mut rows = ScanEndRows {
        full,
        deletes: Vec::new(),
        held: false,
        events: Vec::new(),
        finished_at: now,
    };
    let mut end = ScanEnd::default();
    if !full {
        return (rows, end);
    }
    let decision = if emit {
        detect::deletion_decision(scan.known_before, missing.len() as u64, scan.held)
    } else {
        DeleteDecision::Apply
    };
    match decision {
        DeleteDecision::Hold => {
            rows.held = true;
            end.held = missing.len() as u64;
        }
        DeleteDecision::Apply => {
            end.deleted = missing.len() as u64;
            if emit {
                rows.events = missing
                    .iter()
                    .map(|id| new_event(&record_event(scan, Action::Deleted, id, now), webhooks))
                    .collect();
            }
            rows.deletes = missing;
        }
    }
    (rows, end)
}

/// What the config says about an account, reduced to what triggers
/// `account.updated`: provider, base URL, resources, schedule and
/// credentials, hashed together.
#[derive(Debug, Clone)]
pub struct AccountFingerprint {
    pub id: String,
    pub provider: String,
    pub fingerprint: String,
}

/// The config against the stored accounts: one change (with its event) per
/// account that is new, changed or gone.
pub fn account_changes(
    stored: &[StoredAccount],
    accounts: &[AccountFingerprint],
    webhooks: &[Webhook],
    now: DateTime<Utc>,
) -> Vec<AccountChange> {
    let event = |id: &str, provider: &str, action| {
        new_event(
            &Event::new(
                EventKind::Account {
                    account_id: id.to_string(),
                    provider: provider.to_string(),
                    action,
                },
                now,
            ),
            webhooks,
        )
    };
    let mut out = Vec::new();
    for a in accounts {
        let old = stored.iter().find(|s| s.id == a.id);
        let action = match old {
            None => Action::Created,
            Some(s) if s.fingerprint != a.fingerprint => Action::Updated,
            Some(_) => continue,
        };
        out.push(AccountChange {
            id: a.id.clone(),
            expected: old.map(|s| s.fingerprint.clone()),
            new: Some(StoredAccount {
                id: a.id.clone(),
                provider: a.provider.clone(),
                fingerprint: a.fingerprint.clone(),
            }),
            event: event(&a.id, &a.provider, action),
        });
    }
    for s in stored {
        if accounts.iter().any(|a| a.id == s.id) {
            continue;
        }
        out.push(AccountChange {
            id: s.id.clone(),
            expected: Some(s.fingerprint.clone()),
            new: None,
            event: event(&s.id, &s.provider, Action::Deleted),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EventFilter, Secret};
    use std::time::Duration;

    fn webhook(id: &str, events: Vec<EventFilter>) -> Webhook {
        Webhook {
            id: id.into(),
            name: id.into(),
            url: "http://127.0.0.1/h".parse().unwrap(),
            events,
            secrets: vec![Secret::new("whsec_x")],
            accounts: None,
            enabled: true,
            timeout: Duration::from_secs(10),
            signature_header: "x-synthd-signature".into(),
            concurrency: 4,
        }
    }

    fn scan(known_before: u64, held: bool) -> ScanStart {
        ScanStart {
            stream: 1,
            account_id: "acme".into(),
            resource: "hris_employees".into(),
            scan: 2,
            fence: 1,
            baseline_done: true,
            held,
            last_success_started_at: None,
            last_full_scan_at: None,
            started_at: Utc::now(),
            known_before,
            first_baseline: false,
            reshaped: false,
        }
    }

    fn digest(id: &str, h: u8) -> RecordDigest {
        RecordDigest {
            id: id.into(),
            numeric: false,
            hash: [h; 32],
        }
    }

    #[test]
    fn a_page_writes_only_changes_and_routes_their_events() {
        let hooks = vec![
            webhook("all", vec![EventFilter::All]),
            webhook("other", vec![EventFilter::Prefix("ats_jobs".into())]),
        ];
        // "d": the same canonical part under new raw bytes (reformatted).
        let mut reformatted = [4; 32];
        reformatted[detect::CANONICAL_BYTES..].fill(5);
        let digests = [
            digest("a", 1),
            digest("b", 2),
            digest("c", 3),
            digest("d", 4),
        ];
        let stored = [Some([1; 32]), Some([9; 32]), None, Some(reformatted)];
        let (rows, changes) = page(&scan(3, false), &digests, &stored, true, &hooks, Utc::now());
        assert_eq!(
            changes,
            PageChanges {
                records: 4,
                created: 1,
                updated: 1
            }
        );
        assert_eq!(rows.created, 1);
        let upserted: Vec<&str> = rows.upserts.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            upserted,
            ["b", "c", "d"],
            "an unchanged record writes nothing; a reformatted one only its new hash"
        );
        assert_eq!(rows.upserts[2].1, [4; 32]);
        let types: Vec<&str> = rows
            .events
            .iter()
            .map(|e| e.event.event_type.as_str())
            .collect();
        assert_eq!(types, ["hris_employees.updated", "hris_employees.created"]);
        for e in &rows.events {
            assert_eq!(e.deliveries.len(), 1);
            assert_eq!(e.deliveries[0].webhook_id, "all");
            assert_eq!(
                e.deliveries[0].order_key,
                format!(
                    "acme/hris_employees/{}",
                    e.event.record_id.as_ref().unwrap()
                )
            );
            assert!(e.deliveries[0].payload.contains(&e.event.id));
        }
        // A silent baseline writes the hashes and no events.
        let (rows, _) = page(
            &scan(0, false),
            &digests,
            &[None, None, None, None],
            false,
            &hooks,
            Utc::now(),
        );
        assert_eq!(
            (rows.upserts.len(), rows.events.len(), rows.created),
            (4, 0, 4)
        );
    }

    #[test]
    fn the_end_of_a_scan_deletes_the_missing_unless_the_guard_holds() {
        let hooks = vec![webhook("all", vec![EventFilter::All])];
        let missing = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let (rows, end) = scan_end(
            &scan(100, false),
            missing(3),
            true,
            true,
            &hooks,
            Utc::now(),
        );
        assert_eq!((end.deleted, end.held, rows.held), (3, 0, false));
        assert_eq!(rows.deletes.len(), 3);
        assert_eq!(rows.events.len(), 3);
        // More than half of the known (and more than 10): held.
        let (rows, end) = scan_end(
            &scan(20, false),
            missing(11),
            true,
            true,
            &hooks,
            Utc::now(),
        );
        assert_eq!((end.deleted, end.held, rows.held), (0, 11, true));
        assert!(rows.deletes.is_empty() && rows.events.is_empty());
        // Confirmed by the next consecutive complete scan.
        let (rows, end) = scan_end(&scan(20, true), missing(11), true, true, &hooks, Utc::now());
        assert_eq!((end.deleted, rows.deletes.len()), (11, 11));
        // Incomplete: nothing.
        let (rows, end) = scan_end(
            &scan(20, false),
            missing(2),
            false,
            true,
            &hooks,
            Utc::now(),
        );
        assert_eq!(
            (end, rows.deletes.len(), rows.full),
            (ScanEnd::default(), 0, false)
        );
        // A silent baseline deletes without events, never held.
        let (rows, end) = scan_end(
            &scan(20, false),
            missing(15),
            true,
            false,
            &hooks,
            Utc::now(),
        );
        assert_eq!((end.deleted, rows.events.len()), (15, 0));
    }

    #[test]
    fn accounts_are_created_updated_and_deleted_from_the_config() {
        let hooks = vec![webhook("all", vec![EventFilter::All])];
        let stored = vec![
            StoredAccount {
                id: "same".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            },
            StoredAccount {
                id: "changed".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            },
            StoredAccount {
                id: "gone".into(),
                provider: "p".into(),
                fingerprint: "1".into(),
            },
        ];
        let fp = |id: &str, f: &str| AccountFingerprint {
            id: id.into(),
            provider: "p".into(),
            fingerprint: f.into(),
        };
        let changes = account_changes(
            &stored,
            &[fp("same", "1"), fp("changed", "2"), fp("new", "1")],
            &hooks,
            Utc::now(),
        );
        let got: Vec<(&str, &str, Option<&str>)> = changes
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.event.event.event_type.as_str(),
                    c.expected.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("changed", "account.updated", Some("1")),
                ("new", "account.created", None),
                ("gone", "account.deleted", Some("1")),
            ]
        );
        assert!(changes[2].new.is_none());
    }
}

//! Synthetic events: what is recorded when a change is detected, the JSON
//! body a webhook receives, and which webhooks get which event.
//!
//! An event carries ids only (account, resource, record id): never a record
//! field value.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::config::Webhook;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// One synthetic event, before it is addressed to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_<ULID>`; the same on every delivery and retry (`webhook-id`).
    pub id: String,
    pub kind: EventKind,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Record {
        account_id: String,
        resource: String,
        action: Action,
        record_id: String,
    },
    Account {
        account_id: String,
        provider: String,
        action: Action,
    },
    /// Sent by `synthd webhook test`.
    Test,
}

pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::generate())
}

impl Event {
    pub fn new(kind: EventKind, timestamp: DateTime<Utc>) -> Self {
        Event {
            id: new_event_id(),
            kind,
            timestamp,
        }
    }

    /// `hris_employees.updated`, `account.created`, `webhook.test`.
    pub fn event_type(&self) -> String {
        match &self.kind {
            EventKind::Record {
                resource, action, ..
            } => format!("{resource}.{}", action.as_str()),
            EventKind::Account { action, .. } => format!("account.{}", action.as_str()),
            EventKind::Test => "webhook.test".into(),
        }
    }

    pub fn account_id(&self) -> &str {
        match &self.kind {
            EventKind::Record { account_id, .. } | EventKind::Account { account_id, .. } => {
                account_id
            }
            EventKind::Test => "",
        }
    }

    /// Deliveries of events with the same key reach a webhook in order, so a
    /// record's `deleted` never overtakes its `created`.
    pub fn order_key(&self) -> String {
        match &self.kind {
            EventKind::Record {
                account_id,
                resource,
                record_id,
                ..
            } => format!("{account_id}/{resource}/{record_id}"),
            EventKind::Account { account_id, .. } => format!("{account_id}/"),
            EventKind::Test => format!("test/{}", self.id),
        }
    }

    /// The exact request body sent to `webhook`.
    pub fn body(&self, webhook: &Webhook) -> String {
        let data = match &self.kind {
            EventKind::Record {
                account_id,
                resource,
                action,
                record_id,
            } => json!({
                "account_id": account_id,
                "resource": resource,
                "action": action.as_str(),
                "record_id": record_id,
            }),
            EventKind::Account {
                account_id,
                provider,
                ..
            } => json!({ "account_id": account_id, "provider": provider }),
            EventKind::Test => json!({}),
        };
        json!({
            "id": self.id,
            "type": self.event_type(),
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true),
            "data": data,
            "webhook": { "id": webhook.id, "name": webhook.name },
        })
        .to_string()
    }
}

/// The webhooks that receive `event`: enabled, subscribed to its type and
/// its account.
pub fn routes<'a>(webhooks: &'a [Webhook], event: &Event) -> impl Iterator<Item = &'a Webhook> {
    let event_type = event.event_type();
    let account = event.account_id().to_string();
    webhooks
        .iter()
        .filter(move |w| w.wants(&event_type, &account))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EventFilter, Secret};
    use std::time::Duration;

    fn webhook(events: Vec<EventFilter>, accounts: Option<Vec<String>>, enabled: bool) -> Webhook {
        Webhook {
            id: "hr-sync".into(),
            name: "HR sync".into(),
            url: "http://127.0.0.1/h".parse().unwrap(),
            events,
            secrets: vec![Secret::new("whsec_x")],
            accounts,
            enabled,
            timeout: Duration::from_secs(10),
            signature_header: "x-synthd-signature".into(),
            concurrency: 4,
        }
    }

    fn record_event() -> Event {
        Event {
            id: "evt_01JD6Y6W1T1ZQ7N3X8H9M2K4PA".into(),
            kind: EventKind::Record {
                account_id: "acme".into(),
                resource: "hris_employees".into(),
                action: Action::Updated,
                record_id: "42".into(),
            },
            timestamp: DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
                .unwrap()
                .to_utc(),
        }
    }

    #[test]
    fn body_matches_the_spec_example() {
        let body = record_event().body(&webhook(vec![EventFilter::All], None, true));
        assert_eq!(
            body,
            r#"{"data":{"account_id":"acme","action":"updated","record_id":"42","resource":"hris_employees"},"id":"evt_01JD6Y6W1T1ZQ7N3X8H9M2K4PA","timestamp":"2026-11-23T10:00:00Z","type":"hris_employees.updated","webhook":{"id":"hr-sync","name":"HR sync"}}"#
        );
    }

    #[test]
    fn routing_respects_filters_accounts_and_enabled() {
        let e = record_event();
        let hooks = vec![
            webhook(
                vec![EventFilter::Prefix("hris_employees".into())],
                None,
                true,
            ),
            webhook(vec![EventFilter::Prefix("ats_jobs".into())], None, true),
            webhook(vec![EventFilter::All], Some(vec!["other".into()]), true),
            webhook(vec![EventFilter::All], Some(vec!["acme".into()]), true),
            webhook(vec![EventFilter::All], None, false),
        ];
        let hit: Vec<usize> = hooks
            .iter()
            .enumerate()
            .filter(|(_, w)| routes(&hooks, &e).any(|r| std::ptr::eq(r, *w)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hit, vec![0, 3]);
    }
}

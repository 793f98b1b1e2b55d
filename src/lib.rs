//! synthd gives webhooks to REST APIs that have none.
//!
//! It polls each linked account's provider API on a schedule, reduces every
//! record to a SHA-256 hash of its canonical JSON (the record itself is never
//! stored), compares the hashes with the previous scan, and turns each
//! difference into a signed *synthetic event* (`hris_employees.created`,
//! `…updated`, `…deleted`) delivered to subscribed URLs with retries.
//!
//! The modules follow the data flow:
//!
//! - [`config`]: the TOML file, validated into typed structs with resolved
//!   secrets;
//! - [`schedule`]: when each account is due;
//! - [`provider`]: fetching a resource page by page (auth, pagination,
//!   retries, rate limits, hostile responses);
//! - [`detect`]: canonical hashing and the created/updated/deleted rules;
//! - [`poll`]: one poll of one account, tying provider, detect and store;
//! - [`store`]: SQLite — hashes, poll state, and the outbox of events and
//!   deliveries, each page committed in one transaction;
//! - [`events`]: event bodies and which webhooks receive them;
//! - [`deliver`]: the outbox worker, with [`signing`] beside it;
//! - [`daemon`] and [`cli`]: wiring, signals, exit codes; [`http`] serves
//!   the [`console`], `/healthz` and `/metrics` ([`metrics`]); [`views`] is
//!   the query layer the console and the CLI share; [`demo`] runs the
//!   whole pipeline against embedded loopback servers.
//!
//! See ARCHITECTURE.md for the map, and `../shared/SPEC.md` for the contract.

pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod detect;
pub mod events;
pub mod http;
pub mod ingest;
pub mod json;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod poll;
pub mod provider;
pub mod redact;
pub mod schedule;
pub mod signing;
pub mod store;
pub mod views;

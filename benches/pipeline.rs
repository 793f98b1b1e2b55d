//! Throughput of the hot path against SPEC §6's target: 10,000 accounts ×
//! 3 resources × 1,000 records every hour is 30 M records/h, i.e. about
//! 8,300 records/s sustained, on one VM.
//!
//! `cargo bench --bench pipeline` prints the cost of the single-pass
//! canonical writer + SHA-256 per record, of comparing a page against the
//! stored hashes, and of committing a page, for a typical 1,000-record page
//! (unchanged records, the common case, and all-new records).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use synthd::detect::{self, Hasher, RecordDigest};
use synthd::json::Pointer;
use synthd::store::{ScanClaim, ScanRequest, ScanStart, Store};

const PAGE: usize = 1000;

fn employee(i: usize) -> Value {
    json!({
        "id": i,
        "first_name": "Ada", "last_name": "Lovelace", "display_name": "Ada Lovelace",
        "work_email": format!("ada{i}@example.com"), "personal_email": null,
        "title": "Staff Engineer", "department": {"id": 7, "name": "Platform"},
        "manager_id": 12, "employment_status": "active", "employment_type": "full_time",
        "start_date": "2021-04-01", "termination_date": null,
        "location": {"city": "London", "country": "GB", "remote": false},
        "salary": {"amount": 123456.5, "currency": "GBP"},
        "tags": ["a", "b", "c"], "custom_fields": {"badge": 42, "shirt": "M"},
        "updated_at": "2026-11-23T10:00:00Z", "last_login_at": "2026-11-23T09:59:00Z"
    })
}

fn bench_hash(c: &mut Criterion) {
    let shape = detect::Shape {
        id: Pointer::parse("/id").unwrap(),
        ignore: vec![Pointer::parse("/last_login_at").unwrap()],
    };
    let mut digester = detect::Digester::new(shape, Hasher::new(None));
    let records: Vec<String> = (0..PAGE).map(|i| employee(i).to_string()).collect();
    let mut g = c.benchmark_group("digest");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("1000 HRIS records (canonical JSON + SHA-256)", |b| {
        b.iter(|| {
            for (i, r) in records.iter().enumerate() {
                black_box(digester.digest(r, i).unwrap());
            }
        })
    });
    g.finish();
}

fn digests(offset: usize, version: u8) -> Vec<RecordDigest> {
    (0..PAGE)
        .map(|i| RecordDigest {
            id: (offset + i).to_string(),
            numeric: true,
            hash: [version; 32],
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One page through the store as a poll does: look up the stored hashes,
/// compare (`ingest::page`), commit what changed.
async fn apply(store: &Store, scan: &ScanStart, page: &[RecordDigest]) {
    let ids: Vec<String> = page.iter().map(|d| d.id.clone()).collect();
    let stored = store.stored_hashes(scan, ids).await.unwrap();
    let (rows, _) = synthd::ingest::page(scan, page, &stored, true, &[], chrono::Utc::now());
    store.commit_page(scan, rows).await.unwrap();
}

async fn begin(store: &Store) -> ScanStart {
    match store
        .begin_scan(&ScanRequest {
            account_id: "acct".into(),
            resource: "hris_employees".into(),
            shape: "shape".into(),
            now: chrono::Utc::now(),
            skip_if_started_after: None,
        })
        .await
        .unwrap()
    {
        ScanClaim::Started(s) => s,
        ScanClaim::Busy { .. } | ScanClaim::Done { .. } => unreachable!("SQLite is not shared"),
    }
}

fn bench_store(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).unwrap();
    // A store already tracking 100 pages (100k records) of this resource.
    let scan = rt.block_on(begin(&store));
    for p in 0..100 {
        rt.block_on(apply(&store, &scan, &digests(p * PAGE, 1)));
    }

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function(
        "compare: 1000 stored hashes + ingest::page (unchanged)",
        |b| {
            let page = digests(0, 1);
            let ids: Vec<String> = page.iter().map(|d| d.id.clone()).collect();
            b.iter(|| {
                let stored = rt
                    .block_on(store.stored_hashes(&scan, ids.clone()))
                    .unwrap();
                black_box(synthd::ingest::page(
                    &scan,
                    &page,
                    &stored,
                    true,
                    &[],
                    chrono::Utc::now(),
                ))
            })
        },
    );
    g.bench_function("apply_page: 1000 unchanged records", |b| {
        let page = digests(0, 1);
        b.iter(|| rt.block_on(apply(&store, &scan, &page)))
    });
    let mut next = 1_000_000;
    g.bench_function("apply_page: 1000 new records (commit)", |b| {
        b.iter_batched(
            || {
                next += PAGE;
                digests(next, 2)
            },
            |page| rt.block_on(apply(&store, &scan, &page)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_hash, bench_store);
criterion_main!(benches);

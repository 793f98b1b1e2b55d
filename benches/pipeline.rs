//! Throughput of the hot path against SPEC §6's target: 10,000 accounts ×
//! 3 resources × 1,000 records every hour is 30 M records/h, i.e. about
//! 8,300 records/s sustained, on one VM.
//!
//! `cargo bench --bench pipeline` prints per-record hashing cost and the
//! per-page store cost for a typical 1,000-record page (unchanged records,
//! the common case, and all-new records).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use synthd::detect::{self, Hasher, RecordDigest};
use synthd::json::Pointer;
use synthd::store::Store;

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

fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = chrono::Utc::now();
    // A store already tracking 100 pages (100k records) of this resource.
    let scan = store
        .begin_scan("acct", "hris_employees", "shape", now)
        .unwrap();
    for p in 0..100 {
        store
            .apply_page(&scan, &digests(p * PAGE, 1), &[], false, &[], now)
            .unwrap();
    }
    store.finish_scan(&scan, true, false, &[], now).unwrap();

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("apply_page: 1000 unchanged records", |b| {
        let scan = store
            .begin_scan("acct", "hris_employees", "shape", now)
            .unwrap();
        let page = digests(0, 1);
        b.iter(|| black_box(store.apply_page(&scan, &page, &[], true, &[], now).unwrap()))
    });
    let mut next = 1_000_000;
    g.bench_function("apply_page: 1000 new records", |b| {
        let scan = store
            .begin_scan("acct", "hris_employees", "shape", now)
            .unwrap();
        b.iter_batched(
            || {
                next += PAGE;
                digests(next, 2)
            },
            |page| black_box(store.apply_page(&scan, &page, &[], true, &[], now).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_hash, bench_store);
criterion_main!(benches);

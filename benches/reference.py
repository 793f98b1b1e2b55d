#!/usr/bin/env python3
"""The naive reference for `cargo bench --bench scan`.

It does the job synthd does, the obvious way, with the standard library only
(CPython 3.11, no pip packages):

  for each page (one keep-alive HTTP connection):
      json.loads the body
      for each record: sha256(json.dumps(record, sort_keys=True, separators=(",", ":")))
      compare with the hashes loaded from its own sqlite3 database at start
      upsert new and changed (id, hash) rows, one transaction per page
  at the end: delete the ids not seen in this scan (one transaction)

It prints one JSON line: {"records", "pages", "created", "updated", "deleted"}.
The benchmark times the whole process, as it times synthd.

usage: reference.py --url http://127.0.0.1:PORT/employees --token T --db PATH [--per-page 1000]
"""

import argparse
import hashlib
import http.client
import json
import sqlite3
import sys
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--per-page", type=int, default=1000)
    args = ap.parse_args()

    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": "Bearer " + args.token, "Accept": "application/json"}

    db = sqlite3.connect(args.db)
    db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, hash BLOB NOT NULL)")
    db.commit()
    known = dict(db.execute("SELECT id, hash FROM records"))

    seen = set()
    records = pages = created = updated = 0
    page = 1
    while True:
        conn.request("GET", f"{url.path}?page={page}&per_page={args.per_page}", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit(f"page {page}: HTTP {resp.status}: {body[:200]!r}")
        batch = json.loads(body)["data"]
        pages += 1
        changed = []
        for record in batch:
            rid = str(record["id"])
            canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(canonical.encode()).digest()
            seen.add(rid)
            old = known.get(rid)
            if old is None:
                created += 1
                changed.append((rid, digest))
            elif old != digest:
                updated += 1
                changed.append((rid, digest))
        records += len(batch)
        with db:  # one transaction per page
            db.executemany(
                "INSERT INTO records (id, hash) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET hash = excluded.hash",
                changed,
            )
        if len(batch) < args.per_page:
            break
        page += 1

    gone = [(rid,) for rid in known if rid not in seen]
    with db:
        db.executemany("DELETE FROM records WHERE id = ?", gone)
    db.close()
    conn.close()
    print(json.dumps({
        "records": records,
        "pages": pages,
        "created": created,
        "updated": updated,
        "deleted": len(gone),
    }))


if __name__ == "__main__":
    main()

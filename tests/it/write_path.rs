//! The write path of issue #11 on both backends: the payer's running daily
//! total starts as the sum it replaced (migration 000010) and stays equal
//! to it after every transition the lifecycle allows, and never passes the
//! limit under concurrent writers; SQLite writers of one process take turns
//! (without SQLite's busy handler), PostgreSQL writers do not wait for each
//! other.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use diesel::prelude::*;
use tmcs::states::RequestStatus;
use tmcs::store::daily_totals::{self, DayKey};
use tmcs::store::requests::{self, RequestRow};
use tmcs::store::{schema, Store, StoreError};

use crate::on_both_backends;
use crate::support::{unique, Db, Env};

/// A migrated store on `db` with `busy_timeout_ms` (no HSM, no server).
fn store(db: Db, test: &str, busy_timeout_ms: &str) -> Option<(Env, Store)> {
    let env = Env::with(
        db,
        test,
        &[("TMCS_DATABASE__BUSY_TIMEOUT_MS", busy_timeout_ms)],
    )?;
    let store = Store::open(&tmcs::app::store_settings(&env.cfg)).unwrap();
    store.migrate().unwrap();
    Some((env, store))
}

fn request(subscriber_id: &str, day: &str, amount_minor: i64) -> RequestRow {
    let id = unique("req-");
    RequestRow {
        id: id.clone(),
        subscriber_id: subscriber_id.into(),
        fsp_party: "F".into(),
        merchant_party: "M".into(),
        replay_key: format!("ref:{id}"),
        c_sha256: "00".into(),
        dtbs_sha256: "AA".into(),
        nonce: "n".into(),
        verification_code: "0000".into(),
        tier: "small".into(),
        currency: "EUR".into(),
        amount_minor,
        limit_day: day.into(),
        ims_xml: "<ims/>".into(),
        signed_xml: None,
        signature_b64: None,
        status: RequestStatus::PendingAuthorization,
        error_code: None,
        created_at: 0,
        expires_at: i64::MAX,
        updated_at: 0,
        signed_at: None,
        final_at: None,
        instrument_id: None,
    }
}

/// Counts `row` within `max` and inserts it; false (nothing written) when
/// the day's total has no room.
fn submit(c: &mut tmcs::store::DbConn, row: &RequestRow, max: i64) -> Result<bool, StoreError> {
    let key = DayKey {
        subscriber_id: &row.subscriber_id,
        currency: &row.currency,
        day: &row.limit_day,
    };
    match daily_totals::count_within(c, &key, row.amount_minor, max)? {
        Some(counted) => requests::insert(c, row, counted).map(|()| true),
        None => Ok(false),
    }
}

/// The payer's stored total of `day` in EUR.
fn total_of(c: &mut tmcs::store::DbConn, payer: &str, day: &str) -> Result<i64, StoreError> {
    let key = DayKey {
        subscriber_id: payer,
        currency: "EUR",
        day,
    };
    daily_totals::total(c, &key)
}

type Day = (String, String, String);

/// The sum the running totals replaced, per (payer, currency, day), and the
/// non-zero totals stored.
fn sums_and_totals(store: &Store) -> (BTreeMap<Day, i64>, BTreeMap<Day, i64>) {
    store
        .read(|c| -> Result<_, StoreError> {
            use schema::{daily_totals as d, requests as r};
            let rows: Vec<(String, String, String, i64, String)> = r::table
                .select((
                    r::subscriber_id,
                    r::currency,
                    r::limit_day,
                    r::amount_minor,
                    r::status,
                ))
                .load(c)?;
            let mut sums = BTreeMap::new();
            for (s, cur, day, amount, status) in rows {
                if status.parse::<RequestStatus>().unwrap().counts() {
                    *sums.entry((s, cur, day)).or_insert(0) += amount;
                }
            }
            let totals: Vec<(String, String, String, i64)> = d::table
                .select((d::subscriber_id, d::currency, d::day, d::total_minor))
                .load(c)?;
            let totals = totals
                .into_iter()
                .filter(|t| t.3 != 0)
                .map(|(s, cur, day, t)| ((s, cur, day), t))
                .collect();
            Ok((sums.into_iter().filter(|(_, v)| *v != 0).collect(), totals))
        })
        .unwrap()
}

#[track_caller]
fn assert_totals_are_sums(store: &Store, when: &str) {
    let (sums, totals) = sums_and_totals(store);
    assert_eq!(totals, sums, "after {when}");
}

/// Requests made before migration 000010 are counted by it: per payer,
/// currency and day, the amounts of those in a counting status.
fn the_migration_counts_the_requests_already_made(db: Db) {
    use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
    const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
    const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgresql");
    let Some(env) = Env::new(db, "the_migration_counts_the_requests_already_made") else {
        return;
    };
    let store = Store::open(&tmcs::app::store_settings(&env.cfg)).unwrap();
    let before_totals = 9;
    store
        .read(|c| -> Result<(), StoreError> {
            for _ in 0..before_totals {
                match c {
                    tmcs::store::DbConn::Sqlite(c) => c.run_next_migration(SQLITE),
                    tmcs::store::DbConn::Pg(c) => c.run_next_migration(POSTGRES),
                }
                .map_err(|e| StoreError::Migration(e.to_string()))?;
            }
            Ok(())
        })
        .unwrap();
    let (a, b) = (unique("payer-a-"), unique("payer-b-"));
    let made = [
        (&a, "2026-12-01", 100, RequestStatus::PendingAuthorization),
        (&a, "2026-12-01", 200, RequestStatus::Signed),
        (&a, "2026-12-01", 400, RequestStatus::Declined),
        (&a, "2026-12-01", 800, RequestStatus::Expired),
        (&a, "2026-12-01", 1_600, RequestStatus::Settled),
        (&a, "2026-12-01", 3_200, RequestStatus::Failed),
        (&a, "2026-12-02", 10, RequestStatus::Relayed),
        (&a, "2026-12-02", 20, RequestStatus::Signing),
        (&b, "2026-12-01", 5, RequestStatus::RolledBack),
    ];
    store
        .write(|c| -> Result<(), StoreError> {
            for (payer, day, amount, status) in made {
                let mut row = request(payer, day, amount);
                row.status = status;
                diesel::insert_into(schema::requests::table)
                    .values(row)
                    .execute(c)?;
            }
            Ok(())
        })
        .unwrap();
    let applied = store.migrate().unwrap();
    assert!(
        applied
            .first()
            .is_some_and(|m| m.contains("20261202000010")),
        "{applied:?}"
    );
    let total = |payer: &str, day| store.read(|c| total_of(c, payer, day)).unwrap();
    assert_eq!(
        (
            total(&a, "2026-12-01"),
            total(&a, "2026-12-02"),
            total(&b, "2026-12-01")
        ),
        (1_900, 30, 0)
    );
    assert_totals_are_sums(&store, "the migration");
}
on_both_backends!(
    the_migration_counts_the_requests_already_made,
    the_migration_counts_the_requests_already_made
);

/// The shortest way from `pending_authorization` to `to`.
fn path_to(to: RequestStatus) -> Vec<RequestStatus> {
    let mut paths = vec![vec![RequestStatus::PendingAuthorization]];
    let mut i = 0;
    while let Some(p) = paths.get(i).cloned() {
        let last = *p.last().unwrap();
        if last == to {
            return p;
        }
        for (from, next) in RequestStatus::TRANSITIONS {
            if *from == last && !paths.iter().any(|q| q.last() == Some(next)) {
                let mut longer = p.clone();
                longer.push(*next);
                paths.push(longer);
            }
        }
        i += 1;
    }
    panic!("{to} is unreachable");
}

/// Every transition of the lifecycle, each on a request of its own made on
/// an earlier day than today's payments: after each step the running totals
/// equal the sums of the counting requests, per payer and per day (a
/// request leaving the counting statuses frees its own day only, one
/// coming back — a failed delivery retried — counts again).
fn daily_totals_follow_every_transition(db: Db) {
    let Some((_env, store)) = store(db, "daily_totals_follow_every_transition", "10000") else {
        return;
    };
    let payer = unique("payer-");
    let today = store
        .write(|c| submit(c, &request(&payer, "2026-12-03", 700), 10_000))
        .unwrap();
    assert!(today);
    for (n, (from, to)) in RequestStatus::TRANSITIONS.iter().enumerate() {
        let row = request(&payer, "2026-12-02", 100 + n as i64);
        assert!(store.write(|c| submit(c, &row, 1_000_000)).unwrap());
        assert_totals_are_sums(&store, &format!("inserting {}", row.id));
        let mut at = RequestStatus::PendingAuthorization;
        for next in path_to(*from).into_iter().skip(1).chain([*to]) {
            let moved = store
                .write(|c| requests::transition(c, &row.id, at, next, 1))
                .unwrap();
            assert!(moved, "{at} → {next}");
            assert_totals_are_sums(&store, &format!("{at} → {next}"));
            at = next;
        }
        // A transition that finds the row elsewhere changes nothing.
        let moved = store
            .write(|c| requests::transition(c, &row.id, *from, *to, 1))
            .unwrap();
        assert!(!moved);
        assert_totals_are_sums(&store, &format!("a repeated {from} → {to}"));
    }
    assert_eq!(
        store.read(|c| total_of(c, &payer, "2026-12-03")).unwrap(),
        700,
        "other days' requests never move today's total"
    );
    // A refused write rolls its count back with it.
    let row = request(&payer, "2026-12-03", 50);
    let r: Result<(), StoreError> = store.write(|c| {
        assert!(submit(c, &row, 10_000)?);
        Err(StoreError::Corrupt("abandoned".into()))
    });
    assert!(r.is_err());
    assert_totals_are_sums(&store, "a rolled-back submission");
    // Reached exactly, then no room for one more unit; nothing written.
    let before = sums_and_totals(&store);
    assert!(store
        .write(|c| submit(c, &request(&payer, "2026-12-03", 300), 1_000))
        .unwrap());
    assert!(!store
        .write(|c| submit(c, &request(&payer, "2026-12-03", 1), 1_000))
        .unwrap());
    let after = sums_and_totals(&store);
    assert_eq!(after.0.len(), before.0.len());
    assert_totals_are_sums(&store, "a refusal");
}
on_both_backends!(
    daily_totals_follow_every_transition,
    daily_totals_follow_every_transition
);

/// Sixteen writers count 100 each against a limit of 1,000 on a day the
/// payer has no total yet, at once and without the payer's row lock that a
/// real submission holds: exactly ten get in, and the total is their sum.
fn concurrent_counts_never_pass_the_limit(db: Db) {
    let Some((_env, store)) = store(db, "concurrent_counts_never_pass_the_limit", "10000") else {
        return;
    };
    let payer = unique("payer-");
    let start = Arc::new(Barrier::new(16));
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (store, start, payer) = (store.clone(), start.clone(), payer.clone());
                s.spawn(move || {
                    let row = request(&payer, "2026-12-02", 100);
                    start.wait();
                    store.write(|c| submit(c, &row, 1_000)).unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(admitted, 10);
    assert_totals_are_sums(&store, "concurrent counts");
}
on_both_backends!(
    concurrent_counts_never_pass_the_limit,
    concurrent_counts_never_pass_the_limit
);

/// With `busy_timeout` 0 any two SQLite writers that met in SQLite would
/// fail at once with "database is locked": 8 threads × 50 writes all
/// commit, because the process's writers take turns before `BEGIN`.
fn writers_never_meet_the_busy_handler(db: Db) {
    let Some((_env, store)) = store(db, "writers_never_meet_the_busy_handler", "0") else {
        return;
    };
    let payer = unique("payer-");
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (store, payer) = (store.clone(), payer.clone());
            s.spawn(move || {
                for _ in 0..50 {
                    let row = request(&payer, "2026-12-02", 1);
                    assert!(store.write(|c| submit(c, &row, i64::MAX)).unwrap());
                }
            });
        }
    });
    let total = store.read(|c| total_of(c, &payer, "2026-12-02")).unwrap();
    assert_eq!(total, 400);
}
on_both_backends!(
    writers_never_meet_the_busy_handler,
    writers_never_meet_the_busy_handler
);

/// While one write transaction is open, a second writer of the same store
/// waits for it on SQLite and runs beside it on PostgreSQL. A read inside a
/// write works on both; a write inside a write is refused on SQLite (it
/// would wait for itself); a panic inside a write rolls it back.
fn writers_take_turns_on_sqlite_only(db: Db) {
    let Some((_env, store)) = store(db, "writers_take_turns_on_sqlite_only", "10000") else {
        return;
    };
    let (inside_tx, inside) = mpsc::channel::<&str>();
    let (release_tx, release) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (first, first_tx) = (store.clone(), inside_tx.clone());
        s.spawn(move || {
            first
                .write(|_| -> Result<(), StoreError> {
                    first_tx.send("first").unwrap();
                    release.recv_timeout(Duration::from_secs(20)).unwrap();
                    Ok(())
                })
                .unwrap()
        });
        assert_eq!(inside.recv_timeout(Duration::from_secs(10)), Ok("first"));
        let second = store.clone();
        s.spawn(move || {
            second
                .write(|_| -> Result<(), StoreError> {
                    inside_tx.send("second").unwrap();
                    Ok(())
                })
                .unwrap()
        });
        match db {
            Db::Sqlite => {
                assert!(
                    inside.recv_timeout(Duration::from_millis(300)).is_err(),
                    "a second SQLite writer ran beside the first"
                );
                release_tx.send(()).unwrap();
                assert_eq!(inside.recv_timeout(Duration::from_secs(10)), Ok("second"));
            }
            Db::Postgres => {
                assert_eq!(inside.recv_timeout(Duration::from_secs(10)), Ok("second"));
                release_tx.send(()).unwrap();
            }
        }
    });
    let read_inside = store
        .write(|_| store.read(|c| total_of(c, "x", "d")))
        .unwrap();
    assert_eq!(read_inside, 0);
    if db == Db::Sqlite {
        let nested = store.write(|_| store.write(|_| Ok::<(), StoreError>(())));
        assert!(matches!(nested, Err(StoreError::NestedWrite)), "{nested:?}");
        // The store works on after the refusal.
        store.write(|_| Ok::<(), StoreError>(())).unwrap();
    }
    // A writer that panics inside its transaction leaves nothing open.
    let payer = unique("payer-");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.write(|c| -> Result<(), StoreError> {
            submit(c, &request(&payer, "2026-12-02", 5), 100)?;
            panic!("inside a write");
        })
    }));
    assert!(panicked.is_err());
    assert!(store
        .write(|c| submit(c, &request(&payer, "2026-12-02", 7), 100))
        .unwrap());
    assert_totals_are_sums(&store, "a panic inside a write");
}
on_both_backends!(
    writers_take_turns_on_sqlite_only,
    writers_take_turns_on_sqlite_only
);

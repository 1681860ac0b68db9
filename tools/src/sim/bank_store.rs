//! The bank simulator's SQLite file (diesel): balances per account and
//! currency, instructions per idempotency key with the pain.002 answered,
//! reservations, and two counters. Every change is one immediate transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;

use super::pain::{Instruction, Status};

mod schema {
    diesel::table! {
        accounts (account, currency) {
            account -> Text,
            currency -> Text,
            minor_units -> BigInt,
        }
    }
    diesel::table! {
        instructions (idempotency_key) {
            idempotency_key -> Text,
            msg_id -> Text,
            status -> Text,
            reason -> Nullable<Text>,
            debtor -> Text,
            creditor -> Text,
            currency -> Text,
            minor_units -> BigInt,
            pain002 -> Text,
            count -> BigInt,
        }
    }
    diesel::table! {
        reservations (reservation_id) {
            reservation_id -> Text,
            account -> Text,
            currency -> Text,
            minor_units -> BigInt,
        }
    }
    diesel::table! {
        counters (name) {
            name -> Text,
            value -> BigInt,
        }
    }
    diesel::allow_tables_to_appear_in_same_query!(accounts, instructions, reservations, counters);
}

use schema::{accounts, counters, instructions, reservations};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    minor_units BIGINT NOT NULL,
    PRIMARY KEY (account, currency)
);
CREATE TABLE IF NOT EXISTS instructions (
    idempotency_key TEXT PRIMARY KEY NOT NULL,
    msg_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    debtor TEXT NOT NULL,
    creditor TEXT NOT NULL,
    currency TEXT NOT NULL,
    minor_units BIGINT NOT NULL,
    pain002 TEXT NOT NULL,
    count BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY NOT NULL,
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    minor_units BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
";

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("database: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("database: {0}")]
    Other(String),
}

/// A counter of `/stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    /// A pain.001 (or its headers) refused with 400/415.
    Invalid,
    /// An instruction answered by a fault mode (500, timeout).
    Injected,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Invalid => "invalid",
            Counter::Injected => "injected",
        }
    }
}

/// An instruction's stored answer.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub pain002: String,
}

/// What to do with a new instruction.
#[derive(Debug, Clone)]
pub(crate) enum Decide {
    /// Settle when the debtor's available balance covers it, else RJCT AM04.
    Funds,
    /// RJCT with this reason (mode `reject`).
    Reject(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = reservations)]
pub(crate) struct Reservation {
    pub reservation_id: String,
    pub account: String,
    pub currency: String,
    pub minor_units: i64,
}

pub(crate) enum Reserved {
    /// Held now or before with the same values.
    Held(Reservation),
    /// The available balance is short.
    Short,
    /// The id is held with other values.
    Conflict,
}

/// Account → currency → minor units.
pub(crate) type PerAccount = BTreeMap<String, BTreeMap<String, i64>>;

#[derive(Debug, Serialize)]
pub(crate) struct KeyView {
    pub count: i64,
    pub status: String,
}

/// `GET /stats`.
#[derive(Debug, Serialize)]
pub(crate) struct BankStats {
    pub instructions: i64,
    pub keys: i64,
    pub duplicates: i64,
    pub settled: i64,
    pub rejected: i64,
    pub invalid: i64,
    pub injected: i64,
    pub reservations: i64,
    pub held: PerAccount,
    pub by_key: BTreeMap<String, KeyView>,
}

/// `GET /balances`.
#[derive(Debug, Serialize)]
pub(crate) struct Balances {
    pub opening_balance: i64,
    pub accounts: PerAccount,
    pub held: PerAccount,
}

pub(crate) struct BankStore {
    conn: Mutex<SqliteConnection>,
    opening: i64,
}

/// The balance of (`account`, `ccy`); an account not seen before is
/// created with `opening`.
fn balance(c: &mut SqliteConnection, account: &str, ccy: &str, opening: i64) -> QueryResult<i64> {
    let found: Option<i64> = accounts::table
        .find((account, ccy))
        .select(accounts::minor_units)
        .first(c)
        .optional()?;
    match found {
        Some(b) => Ok(b),
        None => {
            diesel::insert_into(accounts::table)
                .values((
                    accounts::account.eq(account),
                    accounts::currency.eq(ccy),
                    accounts::minor_units.eq(opening),
                ))
                .execute(c)?;
            Ok(opening)
        }
    }
}

fn set_balance(c: &mut SqliteConnection, account: &str, ccy: &str, v: i64) -> QueryResult<()> {
    diesel::insert_into(accounts::table)
        .values((
            accounts::account.eq(account),
            accounts::currency.eq(ccy),
            accounts::minor_units.eq(v),
        ))
        .on_conflict((accounts::account, accounts::currency))
        .do_update()
        .set(accounts::minor_units.eq(v))
        .execute(c)?;
    Ok(())
}

/// What reservations hold on (`account`, `ccy`).
fn held(c: &mut SqliteConnection, account: &str, ccy: &str) -> QueryResult<i64> {
    let amounts: Vec<i64> = reservations::table
        .filter(reservations::account.eq(account))
        .filter(reservations::currency.eq(ccy))
        .select(reservations::minor_units)
        .load(c)?;
    Ok(amounts.iter().fold(0i64, |a, b| a.saturating_add(*b)))
}

/// A stored instruction, counted once more.
fn replay_in(c: &mut SqliteConnection, key: &str) -> QueryResult<Option<Stored>> {
    let found: Option<String> = instructions::table
        .find(key)
        .select(instructions::pain002)
        .first(c)
        .optional()?;
    if found.is_some() {
        diesel::update(instructions::table.find(key))
            .set(instructions::count.eq(instructions::count + 1))
            .execute(c)?;
    }
    Ok(found.map(|pain002| Stored { pain002 }))
}

fn held_per_account(c: &mut SqliteConnection) -> QueryResult<PerAccount> {
    let rows: Vec<Reservation> = reservations::table
        .select(Reservation::as_select())
        .load(c)?;
    let mut out = PerAccount::new();
    for r in rows {
        let v = out
            .entry(r.account)
            .or_default()
            .entry(r.currency)
            .or_insert(0);
        *v = v.saturating_add(r.minor_units);
    }
    Ok(out)
}

impl BankStore {
    pub(crate) fn open(path: &Path, opening: i64) -> Result<BankStore, StoreError> {
        let url = path
            .to_str()
            .ok_or_else(|| StoreError::Other(format!("{}: not UTF-8", path.display())))?;
        let mut conn = SqliteConnection::establish(url)
            .map_err(|e| StoreError::Other(format!("{}: {e}", path.display())))?;
        conn.batch_execute(SCHEMA)?;
        Ok(BankStore {
            conn: Mutex::new(conn),
            opening,
        })
    }

    fn conn(&self) -> MutexGuard<'_, SqliteConnection> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The stored answer to `key`, counted once more; `None` when new.
    pub(crate) fn replay(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut c = self.conn();
        c.immediate_transaction(|c| replay_in(c, key).map_err(StoreError::from))
    }

    /// One transaction: the key seen meanwhile → its stored answer; else the
    /// decision, the balances moved on `ACSC`, the answer `render`ed and stored.
    pub(crate) fn settle(
        &self,
        key: &str,
        ins: &Instruction,
        decide: &Decide,
        render: impl FnOnce(&Status) -> Result<String, String>,
    ) -> Result<(Stored, Option<Status>), StoreError> {
        let opening = self.opening;
        let mut c = self.conn();
        c.immediate_transaction(|c| {
            if let Some(s) = replay_in(c, key)? {
                return Ok((s, None));
            }
            let ccy = ins.currency.code();
            let status = match decide {
                Decide::Reject(r) => Status::Rjct(r.clone()),
                Decide::Funds => {
                    let bal = balance(c, &ins.debtor, ccy, opening)?;
                    let available = bal.saturating_sub(held(c, &ins.debtor, ccy)?);
                    if available >= ins.minor {
                        set_balance(c, &ins.debtor, ccy, bal - ins.minor)?;
                        // Read after the debit: a payment to oneself nets to nothing.
                        let to = balance(c, &ins.creditor, ccy, opening)?;
                        let credited = to
                            .checked_add(ins.minor)
                            .ok_or_else(|| StoreError::Other("balance overflow".into()))?;
                        set_balance(c, &ins.creditor, ccy, credited)?;
                        Status::Acsc
                    } else {
                        Status::Rjct("AM04".into())
                    }
                }
            };
            let pain002 = render(&status).map_err(StoreError::Other)?;
            diesel::insert_into(instructions::table)
                .values((
                    instructions::idempotency_key.eq(key),
                    instructions::msg_id.eq(&ins.msg_id),
                    instructions::status.eq(status.code()),
                    instructions::reason.eq(status.reason()),
                    instructions::debtor.eq(&ins.debtor),
                    instructions::creditor.eq(&ins.creditor),
                    instructions::currency.eq(ccy),
                    instructions::minor_units.eq(ins.minor),
                    instructions::pain002.eq(&pain002),
                    instructions::count.eq(1i64),
                ))
                .execute(c)?;
            Ok((Stored { pain002 }, Some(status)))
        })
    }

    pub(crate) fn bump(&self, counter: Counter) -> Result<(), StoreError> {
        let mut c = self.conn();
        diesel::insert_into(counters::table)
            .values((counters::name.eq(counter.name()), counters::value.eq(1i64)))
            .on_conflict(counters::name)
            .do_update()
            .set(counters::value.eq(counters::value + 1))
            .execute(&mut *c)?;
        Ok(())
    }

    pub(crate) fn stats(&self) -> Result<BankStats, StoreError> {
        let mut c = self.conn();
        c.transaction(|c| {
            let rows: Vec<(String, String, i64)> = instructions::table
                .select((
                    instructions::idempotency_key,
                    instructions::status,
                    instructions::count,
                ))
                .load(c)?;
            let counts: Vec<(String, i64)> = counters::table
                .select((counters::name, counters::value))
                .load(c)?;
            let counter = |n: Counter| {
                counts
                    .iter()
                    .find(|(name, _)| name == n.name())
                    .map_or(0, |(_, v)| *v)
            };
            let reservations: i64 = reservations::table.count().get_result(c)?;
            let instructions = rows.iter().map(|r| r.2).sum::<i64>();
            let keys = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            Ok(BankStats {
                instructions,
                keys,
                duplicates: instructions - keys,
                settled: i64::try_from(rows.iter().filter(|r| r.1 == "ACSC").count())
                    .unwrap_or(i64::MAX),
                rejected: i64::try_from(rows.iter().filter(|r| r.1 == "RJCT").count())
                    .unwrap_or(i64::MAX),
                invalid: counter(Counter::Invalid),
                injected: counter(Counter::Injected),
                reservations,
                held: held_per_account(c)?,
                by_key: rows
                    .into_iter()
                    .map(|(k, status, count)| (k, KeyView { count, status }))
                    .collect(),
            })
        })
    }

    pub(crate) fn balances(&self) -> Result<Balances, StoreError> {
        let mut c = self.conn();
        c.transaction(|c| {
            let rows: Vec<(String, String, i64)> = accounts::table
                .select((accounts::account, accounts::currency, accounts::minor_units))
                .load(c)?;
            let mut accounts = PerAccount::new();
            for (a, ccy, v) in rows {
                accounts.entry(a).or_default().insert(ccy, v);
            }
            Ok(Balances {
                opening_balance: self.opening,
                accounts,
                held: held_per_account(c)?,
            })
        })
    }

    pub(crate) fn set(&self, account: &str, ccy: &str, minor: i64) -> Result<(), StoreError> {
        let mut c = self.conn();
        set_balance(&mut c, account, ccy, minor)?;
        Ok(())
    }

    /// Holds `r.minor_units` on the account, once per reservation id.
    pub(crate) fn reserve(&self, r: &Reservation) -> Result<Reserved, StoreError> {
        let opening = self.opening;
        let mut c = self.conn();
        c.immediate_transaction(|c| {
            let found: Option<Reservation> = reservations::table
                .find(&r.reservation_id)
                .select(Reservation::as_select())
                .first(c)
                .optional()?;
            if let Some(f) = found {
                return Ok(if &f == r {
                    Reserved::Held(f)
                } else {
                    Reserved::Conflict
                });
            }
            let bal = balance(c, &r.account, &r.currency, opening)?;
            let available = bal.saturating_sub(held(c, &r.account, &r.currency)?);
            if available < r.minor_units {
                return Ok(Reserved::Short);
            }
            diesel::insert_into(reservations::table)
                .values((
                    reservations::reservation_id.eq(&r.reservation_id),
                    reservations::account.eq(&r.account),
                    reservations::currency.eq(&r.currency),
                    reservations::minor_units.eq(r.minor_units),
                ))
                .execute(c)?;
            Ok(Reserved::Held(r.clone()))
        })
    }

    /// Ends a reservation; whether there was one.
    pub(crate) fn release(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let n = diesel::delete(reservations::table.find(id)).execute(&mut *c)?;
        Ok(n > 0)
    }
}

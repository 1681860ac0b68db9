//! Storage: diesel over SQLite (embedded default) or PostgreSQL, one schema,
//! one migration set per backend, embedded in the binary.
//!
//! * [`Store::read`] runs a closure on a pooled connection;
//! * [`Store::write`] runs it in one transaction. On SQLite, writers take
//!   turns inside the process: one writer connection behind a lock handed
//!   over in arrival order, whose transaction begins `IMMEDIATE` (the
//!   database write lock from the first statement), so they queue instead
//!   of meeting in SQLite's busy handler, and WAL checkpoints run in a
//!   thread of their own; on PostgreSQL each writer has its own pooled
//!   connection;
//! * repositories (`keys`, `certs`, `clients`, `audit_rows`, `tree_rows`) are plain
//!   functions over `&mut DbConn`, so domain code composes them in one
//!   transaction.

pub mod audit_rows;
pub mod certs;
pub mod clients;
mod conn;
pub mod daily_totals;
pub mod deliveries;
pub mod evidence;
pub mod instruments;
pub mod keys;
pub mod parties;
pub mod replay;
pub mod report_rows;
pub mod requests;
pub mod revocation;
pub mod schema;
pub mod subscribers;
pub mod tree_rows;
pub mod wrapped;

use std::cell::Cell;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use diesel::connection::Connection;
use diesel::prelude::*;
use diesel::r2d2::Pool;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use conn::Manager;
pub use conn::{Backend, DbConn};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgresql");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("unsupported database url (want sqlite:// or postgres://)")]
    BadUrl,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A state change the lifecycle does not allow (a bug, never a write).
    #[error("illegal state change: {0}")]
    IllegalTransition(String),
    /// `Store::write` called inside a write transaction (a bug: on SQLite
    /// it would wait for itself).
    #[error("a write transaction was started inside another one")]
    NestedWrite,
}

impl StoreError {
    /// An outage that may pass: no pooled connection, a lost connection, a
    /// serialisation failure or a lock timeout.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(E::DatabaseError(
                K::ClosedConnection | K::SerializationFailure | K::UnableToSendCommand,
                _,
            )) => true,
            // SQLite: the write lock stayed busy past busy_timeout.
            StoreError::Db(E::DatabaseError(_, info)) => {
                let m = info.message();
                m.contains("database is locked") || m.contains("database is busy")
            }
            StoreError::Db(E::BrokenTransactionManager) => true,
            _ => false,
        }
    }

    /// True for a unique-constraint violation (someone else inserted first).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Db(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

pub type DbResult<T> = Result<T, StoreError>;

/// A row read with its lock held for the rest of the write transaction
/// (`SELECT … FOR UPDATE` on PostgreSQL; on SQLite every [`Store::write`]
/// holds the database write lock from its first statement). Only the
/// repositories' `lock_*` functions make one, and only a locked row may be
/// written back whole: no read-modify-write from an unlocked read.
#[derive(Debug, Clone)]
pub struct Locked<T>(T);

impl<T> Locked<T> {
    pub(crate) fn new(row: T) -> Locked<T> {
        Locked(row)
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Locked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Locked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Runs a row query with `FOR UPDATE` on PostgreSQL, plainly on SQLite
/// (whose write transactions are already serialised by the write lock).
macro_rules! first_for_update {
    ($conn:expr, $query:expr) => {
        match $conn {
            $crate::store::DbConn::Pg(c) => {
                diesel::RunQueryDsl::first($query.for_update(), c).optional()
            }
            $crate::store::DbConn::Sqlite(c) => diesel::RunQueryDsl::first($query, c).optional(),
        }
    };
}
pub(crate) use first_for_update;

/// The PostgreSQL advisory lock (session-scoped) held while migrating.
const MIGRATION_LOCK: i64 = 7_316_827_300;

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub busy_timeout_ms: u64,
}

/// A pool of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<Manager>,
    backend: Backend,
    /// SQLite only: the connection every write goes through.
    writer: Option<Arc<Writer>>,
}

/// SQLite's one writer connection in this process. Its lock is taken before
/// `BEGIN IMMEDIATE` and handed to the longest waiter when released, so
/// writers queue in arrival order instead of sleeping in SQLite's busy
/// handler (whose growing sleeps made the tail latencies). Another process
/// writing the same file still meets `busy_timeout`.
struct Writer {
    manager: Manager,
    /// `None` after the connection broke; the next write opens a new one.
    conn: parking_lot::Mutex<Option<DbConn>>,
    /// Stops the checkpoint thread when the last clone of the store goes.
    _checkpoints: mpsc::Sender<()>,
}

/// How often the WAL is copied back into the database file, outside any
/// write transaction (`PRAGMA wal_checkpoint(PASSIVE)`).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer checkpoints itself only past this many WAL pages (SQLite's
/// default is 1,000, which at a thousand submissions a second put a
/// checkpoint, and its fsyncs, inside every hundredth write transaction).
/// It still has to now and then: the WAL starts over only when a writer
/// begins with every frame copied back, which under a steady write load is
/// rarely so between the checkpoint thread's passes; by then the thread has
/// copied nearly all of them.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// The size the WAL file is cut back to after it was reset (bytes).
const WAL_SIZE_LIMIT: u64 = 64 << 20;

thread_local! {
    /// Set while this thread runs a SQLite write transaction.
    static IN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_WRITE`] when the write ends, however it ends.
struct InWrite;

impl InWrite {
    fn enter() -> Option<InWrite> {
        (!IN_WRITE.with(|w| w.replace(true))).then_some(InWrite)
    }
}

impl Drop for InWrite {
    fn drop(&mut self) {
        IN_WRITE.with(|w| w.set(false));
    }
}

impl Writer {
    /// A connection set up for writing.
    fn connect(manager: &Manager) -> DbResult<DbConn> {
        let mut c = manager
            .establish()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        // The page cache stays SQLite's default (2 MiB) and nothing maps the
        // file (`mmap_size` 0), as measured with `tmcs bench --scenario
        // submit`: a larger writer cache made every commit slower (SQLite
        // walks the cache's hash table when a write transaction ends), and
        // a map cost more than it saved, since under WAL a reader unmaps it
        // (and drops its cache) whenever another connection has committed.
        for pragma in [
            format!("PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}"),
            format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
        ] {
            diesel::sql_query(pragma).execute(&mut c)?;
        }
        Ok(c)
    }

    fn write<T, E>(&self, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + From<diesel::result::Error>,
    {
        let Some(_in_write) = InWrite::enter() else {
            return Err(StoreError::NestedWrite.into());
        };
        let mut slot = self.conn.lock();
        // A transaction left open (a panic inside `f`) or a broken one:
        // start over on a new connection.
        if slot
            .as_mut()
            .is_some_and(diesel::r2d2::R2D2Connection::is_broken)
        {
            *slot = None;
        }
        let c = match &mut *slot {
            Some(c) => c,
            empty => empty.insert(Writer::connect(&self.manager)?),
        };
        let result = immediate_transaction(c, f);
        if diesel::r2d2::R2D2Connection::is_broken(c) {
            *slot = None;
        }
        parking_lot::MutexGuard::unlock_fair(slot);
        result
    }
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`] on a
/// connection of its own until the returned sender is dropped. A passive
/// checkpoint waits for nobody and holds no lock a writer needs, so the
/// copying and its fsyncs happen beside the writes, not inside one.
fn spawn_checkpoints(manager: Manager) -> DbResult<mpsc::Sender<()>> {
    #[derive(diesel::QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
    }
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("tmcs-sqlite-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<DbConn> = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match manager.establish() {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "WAL checkpoint: no connection");
                            continue;
                        }
                    },
                };
                match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").load::<Checkpoint>(c) {
                    Ok(rows) if rows.iter().any(|r| r.busy != 0) => {
                        tracing::debug!("WAL checkpoint: busy");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                        conn = None;
                    }
                }
            }
        })
        .map_err(|e| StoreError::Pool(format!("checkpoint thread: {e}")))?;
    Ok(stop)
}

/// `f` in a transaction that begins `IMMEDIATE` on SQLite (it holds the
/// write lock from the start, so it never has to upgrade a read lock) and
/// plainly on PostgreSQL. Commits when `f` returns `Ok`.
fn immediate_transaction<T, E>(
    c: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Manager = <DbConn as Connection>::TransactionManager;
    let DbConn::Sqlite(lite) = c else {
        return c.transaction(f);
    };
    AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN IMMEDIATE")?;
    match f(c) {
        Ok(value) => {
            Manager::commit_transaction(c)?;
            Ok(value)
        }
        Err(e) => match Manager::rollback_transaction(c) {
            // A broken transaction manager: the original error says more.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    pub fn open(s: &StoreSettings) -> DbResult<Store> {
        let backend = Backend::from_url(&s.url).ok_or(StoreError::BadUrl)?;
        if backend == Backend::Sqlite {
            let path = std::path::Path::new(s.url.trim_start_matches("sqlite://"));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Pool(format!("{}: {e}", dir.display())))?;
            }
            crate::fsutil::create_private(path)
                .map_err(|e| StoreError::Pool(format!("{}: {e}", path.display())))?;
        }
        let manager = Manager {
            url: s.url.clone(),
            backend,
            busy_timeout_ms: s.busy_timeout_ms,
        };
        // Fail fast with the real cause instead of r2d2's generic timeout;
        // on SQLite this is the writer's connection.
        let writer = match backend {
            Backend::Sqlite => Some(Arc::new(Writer {
                conn: parking_lot::Mutex::new(Some(Writer::connect(&manager)?)),
                _checkpoints: spawn_checkpoints(manager.clone())?,
                manager: manager.clone(),
            })),
            Backend::Postgres => {
                manager
                    .establish()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                None
            }
        };
        // Pool connections are made when a caller needs one, never in the
        // background to keep some idle: a pool thread still connecting when
        // a short command (`tmcs audit verify`) returns would run into the
        // exit handlers of the libraries libpq uses (OpenSSL, Kerberos) and
        // crash the process after its work was done.
        let pool = Pool::builder()
            .max_size(s.pool_size)
            .min_idle(Some(0))
            .connection_timeout(s.connect_timeout)
            .test_on_check_out(backend == Backend::Postgres)
            .build(manager)
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Store {
            pool,
            backend,
            writer,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool_state(&self) -> (u32, u32) {
        let st = self.pool.state();
        (st.connections, st.idle_connections)
    }

    fn conn(&self) -> DbResult<diesel::r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// Runs `f` on a pooled connection, outside any explicit transaction.
    pub fn read<T, E>(&self, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut c = self.conn()?;
        f(&mut c)
    }

    /// Runs `f` in one transaction; commits when it returns `Ok`. On SQLite
    /// the writers of this process take turns on one connection (see
    /// [`Writer`]); `f` must not call `write` again (that is
    /// [`StoreError::NestedWrite`]), though it may `read`.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + From<diesel::result::Error>,
    {
        revocation::transaction_ended(false);
        let result = match &self.writer {
            Some(w) => w.write(f),
            None => self.conn().map_err(E::from).and_then(|mut pooled| {
                let c: &mut DbConn = &mut pooled;
                c.transaction(f)
            }),
        };
        revocation::transaction_ended(result.is_ok());
        result
    }

    /// Applies pending migrations; returns the names of those applied.
    ///
    /// On PostgreSQL, several nodes may migrate at once (each running
    /// `tmcs migrate` or `tmcs init` as it starts): a session advisory lock
    /// makes them take turns, and the later ones find nothing pending.
    /// SQLite is one node; its migrations lock the file themselves.
    pub fn migrate(&self) -> DbResult<Vec<String>> {
        let mut c = self.conn()?;
        let applied = match &mut *c {
            DbConn::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
            DbConn::Pg(c) => {
                let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
                diesel::sql_query(lock).execute(c)?;
                let applied = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>());
                let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
                diesel::sql_query(unlock).execute(c)?;
                applied
            }
        };
        applied.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// How many migrations the database has applied (0: never initialised).
    pub fn applied_migrations(&self) -> DbResult<usize> {
        let mut c = self.conn()?;
        let applied = match &mut *c {
            DbConn::Sqlite(c) => c.applied_migrations().map(|v| v.len()),
            DbConn::Pg(c) => c.applied_migrations().map(|v| v.len()),
        };
        applied.map_err(|e| StoreError::Migration(e.to_string()))
    }

    pub fn has_pending_migrations(&self) -> DbResult<bool> {
        let mut c = self.conn()?;
        let pending = match &mut *c {
            DbConn::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            DbConn::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
        };
        pending.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Proves the database answers (for `/readyz`).
    pub fn check(&self) -> DbResult<()> {
        let mut c = self.conn()?;
        diesel::sql_query("SELECT 1").execute(&mut *c)?;
        Ok(())
    }
}

/// Runs raw SQL on whichever backend `conn` is (for backend-specific statements).
pub(crate) fn execute_raw(conn: &mut DbConn, sql: &str) -> DbResult<usize> {
    Ok(diesel::sql_query(sql).execute(conn)?)
}

/// SQLite's query plans, for the tests that keep the hot queries on their
/// indexes.
#[cfg(test)]
pub(crate) mod plan {
    use diesel::query_builder::{QueryFragment, QueryId};
    use diesel::sqlite::Sqlite;
    use diesel::RunQueryDsl;

    use super::{DbConn, Store, StoreSettings};

    /// A migrated SQLite store in a temporary directory (kept alive by the
    /// returned guard).
    pub fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSettings {
            url: format!("sqlite://{}", dir.path().join("plan.db").display()),
            pool_size: 2,
            connect_timeout: std::time::Duration::from_secs(5),
            busy_timeout_ms: 1000,
        })
        .unwrap();
        store.migrate().unwrap();
        (dir, store)
    }

    #[derive(diesel::QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    /// The `detail` lines of `EXPLAIN QUERY PLAN` for `q` as diesel writes
    /// it for SQLite (parameters left unbound: the plan does not depend on
    /// them, the bundled SQLite being built with `SQLITE_ENABLE_QPSG`).
    pub fn explain<Q: QueryFragment<Sqlite> + QueryId>(store: &Store, q: &Q) -> Vec<String> {
        let sql = diesel::debug_query::<Sqlite, _>(q).to_string();
        let sql = sql
            .split(" -- binds:")
            .next()
            .unwrap_or_default()
            .to_string();
        store
            .read(|c| -> Result<Vec<Step>, super::StoreError> {
                let DbConn::Sqlite(c) = c else {
                    unreachable!("a SQLite store")
                };
                Ok(diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).load(c)?)
            })
            .unwrap()
            .into_iter()
            .map(|s| s.detail)
            .collect()
    }
}

//! Storage: diesel over SQLite (embedded default) or PostgreSQL, one schema,
//! one migration set per backend, embedded in the binary.
//!
//! * [`Store::read`] runs a closure on a pooled connection;
//! * [`Store::write`] runs it in a transaction that on SQLite takes the write
//!   lock first, so concurrent writers queue instead of failing;
//! * repositories (`keys`, `certs`, `clients`, `audit_rows`) are plain
//!   functions over `&mut DbConn`, so domain code composes them in one
//!   transaction.

pub mod audit_rows;
pub mod certs;
pub mod clients;
mod conn;
pub mod deliveries;
pub mod instruments;
pub mod keys;
pub mod parties;
pub mod replay;
pub mod requests;
pub mod revocation;
pub mod schema;
pub mod subscribers;
pub mod wrapped;

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
        // Fail fast with the real cause instead of r2d2's generic timeout.
        manager
            .establish()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        // Connections are made when a caller needs one, never in the
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
        Ok(Store { pool, backend })
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

    /// Runs `f` in one transaction; commits when it returns `Ok`.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + From<diesel::result::Error>,
    {
        let mut pooled = self.conn()?;
        let c: &mut DbConn = &mut pooled;
        revocation::transaction_ended(false);
        let result = c.transaction(|c| {
            if matches!(c, DbConn::Sqlite(_)) {
                diesel::update(schema::write_lock::table)
                    .set(schema::write_lock::n.eq(schema::write_lock::n + 1))
                    .execute(c)?;
            }
            f(c)
        });
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

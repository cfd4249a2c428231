//! The quota store on PostgreSQL, for fleets: `sluice store --database postgres://…` is
//! stateless, so any number of them can run behind a load balancer on one cluster (whose
//! replication and failover are the distributed part).
//!
//! Race-freedom comes from row locks: every change to an instance's use or reservations
//! first locks that instance's row (`SELECT … FOR UPDATE`, the row created if missing),
//! so two stores checking the same instance serialise there and the second sees the
//! first's reservation — the PostgreSQL form of SQLite's `BEGIN IMMEDIATE`.

mod schema;
mod statements;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub(crate) use self::statements::Postgres;
use super::model::{StoreError, cause};

/// Connections per store process.
const POOL_SIZE: usize = 16;

pub(crate) fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database {
        what,
        source: cause(
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        ),
    }
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        what: "connecting",
        source: cause(e.to_string()),
    }
}

/// The pool of connections to one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connect (lazily, through a pool) and bring the schema up to date.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Invalid {
            field: "database".into(),
            reason: format!("not a PostgreSQL URL: {e}"),
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pool_err)?;
        let store = PgStore { pool };
        {
            let mut client = store.pool.get().await.map_err(pool_err)?;
            schema::migrate(&mut client).await?;
        }
        Ok(store)
    }

    /// A pooled connection: the engine's reads run on it directly, its writes in a
    /// transaction on it.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

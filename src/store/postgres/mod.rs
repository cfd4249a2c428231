//! The quota store on PostgreSQL, for fleets: `sluice store --database postgres://…` is
//! stateless, so any number of them can run behind a load balancer on one cluster (whose
//! replication and failover are the distributed part).
//!
//! Race-freedom comes from row locks: every change to an instance's use or reservations
//! first locks that instance's row (`SELECT … FOR UPDATE`, the row created if missing),
//! so two stores checking the same instance serialise there and the second sees the
//! first's reservation — the PostgreSQL form of SQLite's `BEGIN IMMEDIATE`.

mod ops;
mod schema;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio_postgres::NoTls;

use super::model::{Deltas, Membership, ReservationId, Scope, StoreError, check};
use super::report::{Ingested, Report};
use super::spec::Spec;
use super::sqlite::expiry;
use super::traffic::{ShownTrafficQuota, StorePeriod};
use super::view::{InstanceQuota, ScopeView, Stats, TrafficUsage, resource_views, traffic_usage};
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, Token};

/// Connections per store process.
const POOL_SIZE: usize = 16;

pub(crate) fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database {
        what,
        reason: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
    }
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        what: "connecting",
        reason: e.to_string(),
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

/// Run `$body` with `$tx`, a transaction on a pooled connection, and commit.
macro_rules! in_tx {
    ($self:ident, $tx:ident, $body:expr) => {{
        let mut client = $self.pool.get().await.map_err(pool_err)?;
        let $tx = client.transaction().await.map_err(pg("begin"))?;
        let out = $body;
        $tx.commit().await.map_err(pg("commit"))?;
        Ok(out)
    }};
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

    pub async fn health(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(pg("health check"))
    }

    pub async fn authenticate(&self, token: Token) -> Result<Option<Role>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(ops::token_get(&client, &token.id)
            .await?
            .filter(|(digest, _)| token.matches(digest))
            .map(|(_, role)| role))
    }

    pub async fn instance_quota(&self, instance: InstanceId) -> Result<InstanceQuota, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let membership = ops::membership(&client, &instance).await?;
        let limits = resource_views(ops::standings(&client, &instance, Timestamp::now()).await?);
        let traffic = ShownTrafficQuota::all(&ops::traffic_quotas(&client, &instance).await?);
        Ok(InstanceQuota {
            instance: instance.as_str().into(),
            membership,
            limits,
            traffic,
        })
    }

    pub async fn put_scope(&self, scope: Scope, spec: Spec) -> Result<(), StoreError> {
        in_tx!(self, tx, {
            ops::clear_scope(&tx, &scope).await?;
            match &scope {
                Scope::Instance(i) => {
                    ops::lock_instance(&tx, i).await?;
                    ops::set_membership(
                        &tx,
                        i,
                        &Membership {
                            project: spec.project.clone(),
                            class: spec.class.clone(),
                        },
                    )
                    .await?
                }
                Scope::Project(p) => ops::set_project_class(&tx, p, spec.class.as_ref()).await?,
                Scope::Class(_) | Scope::Default => {}
            }
            for (resource, limit) in &spec.limits {
                ops::set_limit(&tx, &scope, resource, *limit).await?;
            }
            for q in &spec.traffic {
                ops::set_traffic_quota(&tx, &scope, q).await?;
            }
        })
    }

    pub async fn get_scope(&self, scope: Scope) -> Result<ScopeView, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::scope_view(&client, &scope)
            .await?
            .ok_or_else(|| super::service::not_found(&scope))
    }

    pub async fn list_scopes(&self, kind: &'static str) -> Result<Vec<ScopeView>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let mut out = Vec::new();
        for name in ops::scope_names(&client, kind).await? {
            let Ok(l) = Label::new(&name) else { continue };
            let scope = if kind == "class" {
                Scope::Class(l)
            } else {
                Scope::Project(l)
            };
            out.extend(ops::scope_view(&client, &scope).await?);
        }
        Ok(out)
    }

    pub async fn delete_scope(&self, scope: Scope) -> Result<(), StoreError> {
        in_tx!(self, tx, {
            if ops::scope_view(&tx, &scope).await?.is_none() {
                return Err(super::service::not_found(&scope));
            }
            match &scope {
                Scope::Project(p) => ops::destroy_project(&tx, p).await?,
                Scope::Instance(i) => {
                    ops::clear_scope(&tx, &scope).await?;
                    ops::set_membership(&tx, i, &Membership::default()).await?;
                }
                _ => {
                    ops::clear_scope(&tx, &scope).await?;
                }
            }
        })
    }

    pub async fn destroy_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        in_tx!(self, tx, {
            ops::lock_instance(&tx, &instance).await?;
            ops::destroy_instance(&tx, &instance).await?
        })
    }

    pub async fn reserve(
        &self,
        instance: InstanceId,
        deltas: Deltas,
        expires_in: Duration,
    ) -> Result<(ReservationId, Timestamp), StoreError> {
        let id = ReservationId::random()?;
        in_tx!(self, tx, {
            ops::lock_instance(&tx, &instance).await?;
            let now = Timestamp::now();
            let expires = expiry(now, expires_in)?;
            check(&ops::standings(&tx, &instance, now).await?, &deltas)
                .map_err(StoreError::OverQuota)?;
            ops::put_reservation(&tx, &instance, &deltas, id.as_str(), expires).await?;
            (id, Timestamp::from_millisecond(expires).unwrap_or(now))
        })
    }

    pub async fn limit_check(
        &self,
        instance: InstanceId,
        deltas: Deltas,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        check(
            &ops::standings(&client, &instance, Timestamp::now()).await?,
            &deltas,
        )
        .map_err(StoreError::OverQuota)
    }

    pub async fn commit(&self, id: ReservationId) -> Result<(), StoreError> {
        in_tx!(self, tx, ops::settle(&tx, id.as_str(), true).await?)
    }

    pub async fn rollback(&self, id: ReservationId) -> Result<(), StoreError> {
        in_tx!(self, tx, ops::settle(&tx, id.as_str(), false).await?)
    }

    pub async fn expire(
        &self,
        now: Timestamp,
        keys_before: Timestamp,
    ) -> Result<(usize, usize), StoreError> {
        in_tx!(self, tx, {
            (
                ops::expire(&tx, now).await?,
                ops::prune_applied(&tx, keys_before).await?,
            )
        })
    }

    pub async fn usage_set(
        &self,
        instance: InstanceId,
        counts: BTreeMap<Label, u64>,
    ) -> Result<(), StoreError> {
        in_tx!(self, tx, {
            ops::lock_instance(&tx, &instance).await?;
            for (resource, n) in &counts {
                ops::usage_set(&tx, &instance, resource, *n).await?;
            }
        })
    }

    pub async fn usage_reset(
        &self,
        resource: Label,
        instance: Option<InstanceId>,
    ) -> Result<usize, StoreError> {
        in_tx!(
            self,
            tx,
            ops::usage_reset(&tx, &resource, instance.as_ref()).await?
        )
    }

    pub async fn traffic_reset(
        &self,
        instance: InstanceId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<usize, StoreError> {
        in_tx!(
            self,
            tx,
            ops::traffic_reset(&tx, &instance, start, end).await?
        )
    }

    pub async fn traffic_usage(
        &self,
        instance: InstanceId,
        period: StorePeriod,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<TrafficUsage, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let traffic = ops::traffic_between(&client, &instance, start, end).await?;
        let quotas = ops::traffic_quotas(&client, &instance).await?;
        Ok(traffic_usage(
            instance.as_str(),
            period,
            (start, end),
            traffic,
            quotas,
        ))
    }

    pub async fn top_traffic(
        &self,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::top_traffic(&client, start, end, limit).await
    }

    pub async fn ingest(&self, report: Report, tz: &TimeZone) -> Result<Ingested, StoreError> {
        in_tx!(
            self,
            tx,
            ops::ingest(&tx, &report.agent, &report.batches, tz, Timestamp::now()).await?
        )
    }

    pub async fn traffic_quotas(
        &self,
        instances: Vec<InstanceId>,
    ) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let mut out = BTreeMap::new();
        for i in &instances {
            let qs = ShownTrafficQuota::all(&ops::traffic_quotas(&client, i).await?);
            out.insert(i.as_str().to_owned(), qs);
        }
        Ok(out)
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::stats(&client, Timestamp::now()).await
    }

    pub async fn token_create(&self, role: &Role) -> Result<Token, StoreError> {
        let token = Token::generate()?;
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::token_insert(&client, &token.id, &token.digest(), role, Timestamp::now()).await?;
        Ok(token)
    }

    pub async fn token_list(&self) -> Result<Vec<crate::model::token::TokenInfo>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::token_list(&client).await
    }

    pub async fn token_revoke(&self, id: &crate::model::token::TokenId) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        ops::token_revoke(&client, id, Timestamp::now()).await
    }
}

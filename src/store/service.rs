//! The store as the HTTP API and the embedded agent use it: async, backend-agnostic.
//!
//! Each method is one unit of work of the [`engine`], written once; `run!` says where
//! it runs. On SQLite the work goes to the group-commit [`Writer`] (whose thread drives
//! the engine's future to its end at once); on PostgreSQL it runs on a pooled
//! connection, in a transaction of its own when it writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::backend::Statements;
use super::engine::{self, Settle};
use super::model::{Deltas, ReservationId, Scope, StoreError};
use super::postgres::{PgStore, Postgres, pg};
use super::report::{Ingested, Report};
use super::spec::{KnownResources, Spec};
use super::sqlite::readers::Readers;
use super::sqlite::writer::Writer;
use super::sqlite::{drive, open_connection};
use super::statement::StoredStatement;
use super::traffic::{ShownTrafficQuota, StorePeriod, Topup, TrafficResource};
use super::view::{Fleet, InstanceQuota, PercentileUse, ScopeView, Stats, TrafficUsage};
use crate::model::day_curve;
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::{Percentile, Percentiles};
use crate::model::token::{Role, Token, TokenId, TokenInfo};
use crate::model::units::Bytes;
use crate::model::units::Rate;

/// `--max-report-rate`'s default: above any NIC a hypervisor has today.
pub const DEFAULT_MAX_REPORT_RATE: Rate = Rate::from_bits_per_sec(400_000_000_000);

/// What every backend is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Periods (days, months) are aligned to this zone.
    pub timezone: TimeZone,
    pub resources: KnownResources,
    /// Report keys older than this are forgotten (a retry is never that late), and a
    /// sample older than this is refused.
    pub keep_report_keys: Duration,
    /// The most a link can carry: a sample claiming more bytes than this over the time
    /// since the agent's previous sample of the instance is refused.
    pub max_report_rate: Rate,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timezone: TimeZone::UTC,
            resources: KnownResources::new(&[]),
            keep_report_keys: Duration::from_secs(30 * 86_400),
            max_report_rate: DEFAULT_MAX_REPORT_RATE,
        }
    }
}

/// How long the store keeps 5-minute intervals (at least): a billing month's, whatever
/// its billing day, plus a few days for a late statement.
pub const KEEP_INTERVALS: Duration = Duration::from_secs(35 * 86_400);

#[derive(Clone)]
enum Backend {
    Sqlite { writer: Writer, readers: Readers },
    Postgres(PgStore),
}

/// Threads reading the SQLite store beside its writer: enough that one slow read does
/// not queue the others, few enough to stay out of the writer's way on a small host.
const SQLITE_READERS: usize = 4;

/// Run `$body` (an engine call on `$s: &mut impl Statements`) on `$store`'s backend.
/// A macro, not a function: the body is generic over the backend's statements, which a
/// closure cannot be.
///
/// The second word says where the unit runs:
/// - `Read` only reads: on SQLite a reader thread's read-only connection, never the
///   writer's queue; on PostgreSQL a pooled connection in autocommit.
/// - `Autocommit` writes one statement (or must see the writer's queue, like the health
///   check): on SQLite the writer's transaction; on PostgreSQL autocommit.
/// - `Transaction` writes more than one row or reads what it then writes: the writer's
///   transaction on SQLite (in a savepoint of its own), one of its own on PostgreSQL.
macro_rules! run {
    ($store:expr, Read, |$s:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { readers, .. } => {
                readers.run(move |c| drive(c, async move |$s| $body)).await
            }
            Backend::Postgres(p) => {
                let client = p.client().await?;
                let $s = &mut Postgres::new(&client);
                $body
            }
        }
    };
    ($store:expr, Autocommit, |$s:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { writer, .. } => {
                writer.run(move |c| drive(c, async move |$s| $body)).await
            }
            Backend::Postgres(p) => {
                let client = p.client().await?;
                let $s = &mut Postgres::new(&client);
                $body
            }
        }
    };
    ($store:expr, Transaction, |$s:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { writer, .. } => {
                writer.run(move |c| drive(c, async move |$s| $body)).await
            }
            Backend::Postgres(p) => {
                let mut client = p.client().await?;
                let tx = client.transaction().await.map_err(pg("begin"))?;
                let out = {
                    let $s = &mut Postgres::new(&tx);
                    $body
                }?;
                tx.commit().await.map_err(pg("commit"))?;
                Ok(out)
            }
        }
    };
}

/// A running store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    settings: Arc<Settings>,
}

impl Store {
    /// The embedded store on a SQLite file.
    pub fn open_sqlite(path: &Path, settings: Settings) -> Result<Store, StoreError> {
        // The writer's connection creates and migrates the file the readers then open.
        let writer = Writer::start(open_connection(path)?)?;
        let readers = Readers::start(path, SQLITE_READERS)?;
        Ok(Store {
            backend: Backend::Sqlite { writer, readers },
            settings: Arc::new(settings),
        })
    }

    /// The fleet store on PostgreSQL (a `postgres://` URL).
    pub async fn connect_postgres(url: &str, settings: Settings) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(PgStore::connect(url).await?),
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers.
    pub async fn health(&self) -> Result<(), StoreError> {
        run!(self, Autocommit, |s| s
            .query("health check", "SELECT 1", &[])
            .await
            .map(drop))
    }

    /// The role of a presented token, if it is live and its secret matches.
    pub async fn authenticate(&self, token: Token) -> Result<Option<Role>, StoreError> {
        run!(self, Read, |s| engine::authenticate(s, &token).await)
    }

    pub async fn instance_quota(&self, instance: InstanceId) -> Result<InstanceQuota, StoreError> {
        run!(self, Read, |s| engine::instance_quota(s, &instance).await)
    }

    /// Replace what is set at `scope` with `spec` (and, for an instance or a project, its
    /// membership or class). Limits below current use are allowed: the instance just
    /// cannot grow until it is under again.
    pub async fn put_scope(&self, scope: Scope, spec: Spec) -> Result<(), StoreError> {
        run!(self, Transaction, |s| engine::put_scope(s, &scope, &spec)
            .await)
    }

    /// What is set at exactly `scope`; not found when nothing is.
    pub async fn get_scope(&self, scope: Scope) -> Result<ScopeView, StoreError> {
        run!(self, Read, |s| engine::get_scope(s, &scope).await)
    }

    /// Every class or project (`kind`) with what is set for it.
    pub async fn list_scopes(&self, kind: &'static str) -> Result<Vec<ScopeView>, StoreError> {
        run!(self, Read, |s| engine::list_scopes(s, kind).await)
    }

    /// Remove what `scope` sets (a project also loses its class and its instances leave
    /// it; an instance's overrides only — see [`Store::destroy_instance`]).
    pub async fn delete_scope(&self, scope: Scope) -> Result<(), StoreError> {
        run!(self, Transaction, |s| engine::delete_scope(s, &scope).await)
    }

    pub async fn destroy_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        run!(self, Transaction, |s| engine::destroy_instance(
            s, &instance
        )
        .await)
    }

    /// Check and reserve in one transaction; the id and when it lapses.
    pub async fn reserve(
        &self,
        instance: InstanceId,
        deltas: Deltas,
        expires_in: Duration,
    ) -> Result<(ReservationId, Timestamp), StoreError> {
        let id = ReservationId::random()?;
        run!(self, Transaction, |s| engine::reserve(
            s, &instance, &deltas, &id, expires_in
        )
        .await
        .map(|at| (id, at)))
    }

    /// Would `deltas` fit? Nothing is reserved.
    pub async fn limit_check(
        &self,
        instance: InstanceId,
        deltas: Deltas,
    ) -> Result<(), StoreError> {
        run!(self, Read, |s| engine::limit_check(s, &instance, &deltas)
            .await)
    }

    pub async fn commit(&self, id: ReservationId) -> Result<(), StoreError> {
        self.settle(id, Settle::Commit).await
    }

    pub async fn rollback(&self, id: ReservationId) -> Result<(), StoreError> {
        self.settle(id, Settle::Rollback).await
    }

    async fn settle(&self, id: ReservationId, how: Settle) -> Result<(), StoreError> {
        run!(self, Transaction, |s| engine::settle(s, id.as_str(), how)
            .await)
    }

    /// Drop lapsed reservations and old report keys; (reservations, keys) removed.
    pub async fn expire(&self, now: Timestamp) -> Result<(usize, usize), StoreError> {
        let keep = jiff::SignedDuration::try_from(self.settings.keep_report_keys)
            .unwrap_or(jiff::SignedDuration::MAX);
        let before = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
        run!(self, Transaction, |s| engine::expire(s, now, before).await)
    }

    /// Forget 5-minute intervals older than [`KEEP_INTERVALS`] (or the report keys'
    /// retention, if longer); how many. Run after [`Store::close_periods`], so a month is
    /// read whole before its intervals go.
    pub async fn prune_intervals(&self, now: Timestamp) -> Result<u64, StoreError> {
        let keep =
            jiff::SignedDuration::try_from(self.settings.keep_report_keys.max(KEEP_INTERVALS))
                .unwrap_or(jiff::SignedDuration::MAX);
        let before = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
        run!(self, Transaction, |s| s.prune_intervals(before).await)
    }

    /// Pack every UTC day before `now`'s that still has loose 5-minute rows into one
    /// value per instance and day, a day per transaction (a first run after an upgrade
    /// packs a month without holding the writer for all of it); how many (instance,
    /// day) values were written.
    pub async fn pack_days(&self, now: Timestamp) -> Result<usize, StoreError> {
        let today_ms = day_curve::day_of(now.as_second()).saturating_mul(1000);
        let mut packed = 0;
        loop {
            let day = { run!(self, Read, |s| s.oldest_loose_day(today_ms).await)? };
            let Some(day) = day else {
                return Ok(packed);
            };
            packed += run!(self, Transaction, |s| s.pack_day(day).await)?;
        }
    }

    /// The panel's real counts replace the store's (the cure for usage drift).
    pub async fn usage_set(
        &self,
        instance: InstanceId,
        counts: BTreeMap<Label, u64>,
    ) -> Result<(), StoreError> {
        run!(self, Transaction, |s| engine::usage_set(
            s, &instance, &counts
        )
        .await)
    }

    /// A counted resource's use back to zero (for one instance or all); how many rows.
    pub async fn usage_reset(
        &self,
        resource: Label,
        instance: Option<InstanceId>,
    ) -> Result<usize, StoreError> {
        run!(self, Transaction, |s| engine::usage_reset(
            s,
            &resource,
            instance.as_ref()
        )
        .await)
    }

    /// Forget `instance`'s traffic in the `period` holding now; hours removed.
    pub async fn traffic_reset(
        &self,
        instance: InstanceId,
        period: StorePeriod,
    ) -> Result<usize, StoreError> {
        let (start, end) = self.period_at(period, Timestamp::now())?;
        run!(self, Transaction, |s| s
            .delete_traffic(&instance, start, end)
            .await
            .map(|n| n as usize))
    }

    fn period_at(
        &self,
        period: StorePeriod,
        at: Timestamp,
    ) -> Result<(Timestamp, Timestamp), StoreError> {
        period
            .containing(at, &self.settings.timezone)
            .ok_or_else(|| StoreError::Invalid {
                field: "at".into(),
                reason: "outside the calendar".into(),
            })
    }

    /// `instance`'s traffic in the `period` holding `at`, with its quotas for that period.
    pub async fn traffic_usage(
        &self,
        instance: InstanceId,
        period: StorePeriod,
        at: Timestamp,
    ) -> Result<TrafficUsage, StoreError> {
        let span = self.period_at(period, at)?;
        let tz = self.settings.timezone.clone();
        run!(self, Read, |s| engine::traffic_usage_in(
            s,
            &instance,
            period,
            span,
            (at, Timestamp::now(), &tz)
        )
        .await)
    }

    /// Write the statements of billing months closed by `now` that have none yet; how
    /// many were written.
    pub async fn close_periods(&self, now: Timestamp) -> Result<usize, StoreError> {
        let tz = self.settings.timezone.clone();
        run!(self, Transaction, |s| engine::close_periods(s, now, &tz)
            .await)
    }

    /// The statements of one instance (or every one), oldest first, as stored.
    pub async fn statements(
        &self,
        instance: Option<InstanceId>,
    ) -> Result<Vec<StoredStatement>, StoreError> {
        run!(self, Read, |s| s
            .stored_statements(instance.as_ref().map(InstanceId::as_str))
            .await)
    }

    /// Each of `ids`' `p`th percentile of 5-minute rates in the `period` holding `at`, so
    /// far at `now`; an instance with no interval in it is absent.
    pub async fn percentiles(
        &self,
        ids: Vec<InstanceId>,
        period: StorePeriod,
        at: Timestamp,
        now: Timestamp,
        p: Percentile,
    ) -> Result<BTreeMap<String, Percentiles>, StoreError> {
        let span = self.period_at(period, at)?;
        run!(self, Read, |s| {
            let names: Vec<&str> = ids.iter().map(InstanceId::as_str).collect();
            engine::percentiles_of(s, &names, span, now, p).await
        })
    }

    /// The `p`th percentile of `project`'s summed 5-minute rates in the `period` holding
    /// `at`, so far at `now`.
    pub async fn project_percentiles(
        &self,
        project: Label,
        period: StorePeriod,
        at: Timestamp,
        now: Timestamp,
        p: Percentile,
    ) -> Result<Option<Percentiles>, StoreError> {
        let span = self.period_at(period, at)?;
        run!(self, Read, |s| engine::project_percentiles(
            s, &project, span, now, p
        )
        .await)
    }

    /// `project`'s traffic (all its instances') in the `period` holding `at`, with its
    /// pooled quotas.
    pub async fn project_usage(
        &self,
        project: Label,
        period: StorePeriod,
        at: Timestamp,
    ) -> Result<TrafficUsage, StoreError> {
        let span = self.period_at(period, at)?;
        let tz = self.settings.timezone.clone();
        run!(self, Read, |s| engine::project_usage_in(
            s,
            &project,
            period,
            span,
            (at, Timestamp::now(), &tz)
        )
        .await)
    }

    /// Add an agent's batches, each exactly once.
    pub async fn ingest(&self, report: Report) -> Result<Ingested, StoreError> {
        let tz = self.settings.timezone.clone();
        let bounds = engine::ReportBounds {
            keep: self.settings.keep_report_keys,
            max_rate: self.settings.max_report_rate,
        };
        run!(self, Transaction, |s| engine::ingest(
            s,
            &report.agent,
            &report.batches,
            &tz,
            bounds,
            Timestamp::now()
        )
        .await)
    }

    /// The traffic quotas in force for each of `instances` (what an agent fetches).
    pub async fn traffic_quotas(
        &self,
        instances: Vec<InstanceId>,
    ) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
        let tz = self.settings.timezone.clone();
        run!(self, Read, |s| engine::traffic_quotas_of(
            s,
            &instances,
            (Timestamp::now(), &tz),
            None
        )
        .await)
    }

    /// The same, as `agent` asks for them: each quota with what the other hosts
    /// reported of the instance in its current period.
    pub async fn traffic_quotas_for(
        &self,
        agent: Label,
        instances: Vec<InstanceId>,
    ) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
        self.traffic_quotas_for_at(agent, instances, Timestamp::now())
            .await
    }

    /// [`Store::traffic_quotas_for`] at `now`: the current periods, and a committed
    /// rate's verdict on its period so far, are `now`'s.
    pub async fn traffic_quotas_for_at(
        &self,
        agent: Label,
        instances: Vec<InstanceId>,
        now: Timestamp,
    ) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
        let tz = self.settings.timezone.clone();
        run!(self, Read, |s| engine::traffic_quotas_of(
            s,
            &instances,
            (now, &tz),
            Some(&agent)
        )
        .await)
    }

    /// Buy more of an instance's traffic quota for its current period.
    pub async fn add_topup(
        &self,
        instance: InstanceId,
        topup: (TrafficResource, StorePeriod, Bytes),
    ) -> Result<Topup, StoreError> {
        let tz = self.settings.timezone.clone();
        run!(self, Transaction, |s| engine::add_topup(
            s,
            &instance,
            topup,
            Timestamp::now(),
            &tz
        )
        .await)
    }

    /// The instance's top-ups of periods not yet over.
    pub async fn topups(&self, instance: InstanceId) -> Result<Vec<Topup>, StoreError> {
        run!(self, Read, |s| {
            let rows = s.topups_of(&[instance.as_str()], Timestamp::now()).await?;
            Ok(rows.into_iter().map(|(_, t)| t).collect())
        })
    }

    /// The fleet at a glance for the `period` holding `at`: every agent's last report,
    /// the `top` instances by traffic, and each of their quotas with its use — the ones
    /// nearest their limits are among the biggest talkers, so only those are resolved
    /// (one bounded query, then `top` quota lookups, whatever the fleet's size).
    pub async fn fleet(
        &self,
        period: StorePeriod,
        at: Timestamp,
        top: usize,
    ) -> Result<Fleet, StoreError> {
        let (start, end) = self.period_at(period, at)?;
        let ranked = { run!(self, Read, |s| s.top_traffic(start, end, top).await)? };
        let mut instances = Vec::with_capacity(ranked.len());
        for (id, _, _) in &ranked {
            let id = InstanceId::new(id)?;
            instances.push(self.traffic_usage(id, period, at).await?);
        }
        Ok(Fleet {
            period: period.as_str().to_owned(),
            start: start.to_string(),
            end: end.to_string(),
            agents: self.stats().await?.agents,
            instances,
        })
    }

    /// The fleet view ranked by the 95th percentile (the larger direction per interval)
    /// of the period's 5-minute rates so far, over every instance reported in it: the
    /// `top` highest, each with its percentiles and quotas' use.
    pub async fn fleet_by_percentile(
        &self,
        period: StorePeriod,
        at: Timestamp,
        top: usize,
    ) -> Result<Fleet, StoreError> {
        let (start, _) = self.period_at(period, at)?;
        let ids = {
            run!(self, Read, |s| s
                .reported_since(start.as_millisecond())
                .await)?
        };
        let ids: Vec<InstanceId> = ids.iter().filter_map(|i| InstanceId::new(i).ok()).collect();
        let all = self
            .percentiles(ids, period, at, Timestamp::now(), Percentile::P95)
            .await?;
        let mut ranked: Vec<(&String, &Percentiles)> = all.iter().collect();
        ranked.sort_by(|a, b| {
            let max = |p: &Percentiles| p.max.map_or(0, |r| r.bits_per_sec());
            max(b.1).cmp(&max(a.1)).then(a.0.cmp(b.0))
        });
        let mut fleet = self.fleet(period, at, 0).await?;
        for (id, p) in ranked.into_iter().take(top) {
            let mut usage = self.traffic_usage(InstanceId::new(id)?, period, at).await?;
            usage.percentiles = Some(PercentileUse::from(p));
            fleet.instances.push(usage);
        }
        Ok(fleet)
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        run!(self, Read, |s| engine::stats(s, Timestamp::now()).await)
    }

    /// A new token for `role`: stored hashed, returned whole this once.
    pub async fn token_create(&self, role: Role) -> Result<Token, StoreError> {
        let token = Token::generate()?;
        run!(self, Autocommit, |s| engine::token_insert(s, &token, &role)
            .await
            .map(|()| token))
    }

    /// Every token (ids, roles, hosts; never secrets).
    pub async fn token_list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        run!(self, Read, |s| engine::token_list(s).await)
    }

    /// Revoke a token; not found if there is no live token with that id.
    pub async fn token_revoke(&self, id: TokenId) -> Result<(), StoreError> {
        run!(self, Autocommit, |s| engine::token_revoke(s, &id).await)
    }
}

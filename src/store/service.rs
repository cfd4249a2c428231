//! The store as the HTTP API and the embedded agent use it: async, backend-agnostic.
//!
//! Each method is one unit of work that runs in one transaction. On SQLite the work goes
//! to the group-commit [`Writer`]; another backend adds its own arm to each method.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::model::{Deltas, ReservationId, Scope, StoreError};
use super::postgres::PgStore;
use super::report::{Ingested, Report};
use super::spec::{KnownResources, Spec};
use super::sqlite::writer::Writer;
use super::sqlite::{expiry, open_connection, ops};
use super::traffic::{ShownTrafficQuota, StorePeriod};
use super::view::{
    Fleet, InstanceQuota, ScopeView, Stats, TrafficUsage, resource_views, traffic_usage,
};
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, Token};

/// What every backend is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Periods (days, months) are aligned to this zone.
    pub timezone: TimeZone,
    pub resources: KnownResources,
    /// Report keys older than this are forgotten (a retry is never that late).
    pub keep_report_keys: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timezone: TimeZone::UTC,
            resources: KnownResources::new(&[]),
            keep_report_keys: Duration::from_secs(30 * 86_400),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(Writer),
    Postgres(PgStore),
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
        let writer = Writer::start(open_connection(path)?)?;
        Ok(Store {
            backend: Backend::Sqlite(writer),
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
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    async fn sqlite<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(w) => w.run(f).await,
            Backend::Postgres(_) => Err(StoreError::Database {
                what: "internal",
                reason: "a SQLite operation on a PostgreSQL store".into(),
            }),
        }
    }

    /// Whether the database answers.
    pub async fn health(&self) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.health().await;
        }
        self.sqlite(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(super::sqlite::db("health check"))
        })
        .await
    }

    /// The role of a presented token, if it is live and its secret matches.
    pub async fn authenticate(&self, token: Token) -> Result<Option<Role>, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.authenticate(token).await;
        }
        self.sqlite(move |c| {
            Ok(ops::token_get(c, &token.id)?
                .filter(|(digest, _)| token.matches(digest))
                .map(|(_, role)| role))
        })
        .await
    }

    pub async fn instance_quota(&self, instance: InstanceId) -> Result<InstanceQuota, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.instance_quota(instance).await;
        }
        self.sqlite(move |c| {
            let membership = ops::membership(c, &instance)?;
            let limits = resource_views(ops::standings(c, &instance, Timestamp::now())?);
            let traffic = ShownTrafficQuota::all(&ops::traffic_quotas(c, &instance)?);
            Ok(InstanceQuota {
                instance: instance.as_str().into(),
                membership,
                limits,
                traffic,
            })
        })
        .await
    }

    /// Replace what is set at `scope` with `spec` (and, for an instance or a project, its
    /// membership or class). Limits below current use are allowed: the instance just
    /// cannot grow until it is under again.
    pub async fn put_scope(&self, scope: Scope, spec: Spec) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.put_scope(scope, spec).await;
        }
        self.sqlite(move |c| {
            ops::clear_scope(c, &scope)?;
            match &scope {
                Scope::Instance(i) => ops::set_membership(
                    c,
                    i,
                    &super::model::Membership {
                        project: spec.project.clone(),
                        class: spec.class.clone(),
                    },
                )?,
                Scope::Project(p) => ops::set_project_class(c, p, spec.class.as_ref())?,
                Scope::Class(_) | Scope::Default => {}
            }
            for (resource, limit) in &spec.limits {
                ops::set_limit(c, &scope, resource, Some(*limit))?;
            }
            for q in &spec.traffic {
                ops::set_traffic_quota(c, &scope, q)?;
            }
            Ok(())
        })
        .await
    }

    /// What is set at exactly `scope`; not found when nothing is.
    pub async fn get_scope(&self, scope: Scope) -> Result<ScopeView, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.get_scope(scope).await;
        }
        self.sqlite(move |c| scope_view(c, &scope)?.ok_or_else(|| not_found(&scope)))
            .await
    }

    /// Every class or project (`kind`) with what is set for it.
    pub async fn list_scopes(&self, kind: &'static str) -> Result<Vec<ScopeView>, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.list_scopes(kind).await;
        }
        self.sqlite(move |c| {
            let mut out = Vec::new();
            for name in ops::scope_names(c, kind)? {
                let Ok(l) = Label::new(&name) else { continue };
                let scope = if kind == "class" {
                    Scope::Class(l)
                } else {
                    Scope::Project(l)
                };
                out.extend(scope_view(c, &scope)?);
            }
            Ok(out)
        })
        .await
    }

    /// Remove what `scope` sets (a project also loses its class and its instances leave
    /// it; an instance's overrides only — see [`Store::destroy_instance`]).
    pub async fn delete_scope(&self, scope: Scope) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.delete_scope(scope).await;
        }
        self.sqlite(move |c| {
            if scope_view(c, &scope)?.is_none() {
                return Err(not_found(&scope));
            }
            match &scope {
                Scope::Project(p) => ops::destroy_project(c, p),
                Scope::Instance(i) => {
                    ops::clear_scope(c, &scope)?;
                    ops::set_membership(c, i, &Default::default())
                }
                _ => ops::clear_scope(c, &scope).map(drop),
            }
        })
        .await
    }

    pub async fn destroy_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.destroy_instance(instance).await;
        }
        self.sqlite(move |c| ops::destroy_instance(c, &instance))
            .await
    }

    /// Check and reserve in one transaction; the id and when it lapses.
    pub async fn reserve(
        &self,
        instance: InstanceId,
        deltas: Deltas,
        expires_in: Duration,
    ) -> Result<(ReservationId, Timestamp), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.reserve(instance, deltas, expires_in).await;
        }
        let id = ReservationId::random()?;
        self.sqlite(move |c| {
            let now = Timestamp::now();
            let expires = expiry(now, expires_in)?;
            ops::reserve(c, &instance, &deltas, id.as_str(), expires, now)?;
            let at = Timestamp::from_millisecond(expires).unwrap_or(now);
            Ok((id, at))
        })
        .await
    }

    /// Would `deltas` fit? Nothing is reserved.
    pub async fn limit_check(
        &self,
        instance: InstanceId,
        deltas: Deltas,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.limit_check(instance, deltas).await;
        }
        self.sqlite(move |c| {
            super::model::check(&ops::standings(c, &instance, Timestamp::now())?, &deltas)
                .map_err(StoreError::OverQuota)
        })
        .await
    }

    pub async fn commit(&self, id: ReservationId) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.commit(id).await;
        }
        self.sqlite(move |c| ops::commit(c, id.as_str())).await
    }

    pub async fn rollback(&self, id: ReservationId) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.rollback(id).await;
        }
        self.sqlite(move |c| ops::rollback(c, id.as_str())).await
    }

    /// Drop lapsed reservations and old report keys; (reservations, keys) removed.
    pub async fn expire(&self, now: Timestamp) -> Result<(usize, usize), StoreError> {
        let keep = jiff::SignedDuration::try_from(self.settings.keep_report_keys)
            .unwrap_or(jiff::SignedDuration::MAX);
        let before = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
        if let Backend::Postgres(p) = &self.backend {
            return p.expire(now, before).await;
        }
        self.sqlite(move |c| Ok((ops::expire(c, now)?, ops::prune_applied(c, before)?)))
            .await
    }

    /// The panel's real counts replace the store's (the cure for usage drift).
    pub async fn usage_set(
        &self,
        instance: InstanceId,
        counts: BTreeMap<Label, u64>,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.usage_set(instance, counts).await;
        }
        self.sqlite(move |c| {
            for (resource, n) in &counts {
                ops::usage_set(c, &instance, resource, *n)?;
            }
            Ok(())
        })
        .await
    }

    /// A counted resource's use back to zero (for one instance or all); how many rows.
    pub async fn usage_reset(
        &self,
        resource: Label,
        instance: Option<InstanceId>,
    ) -> Result<usize, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.usage_reset(resource, instance).await;
        }
        self.sqlite(move |c| ops::usage_reset(c, &resource, instance.as_ref()))
            .await
    }

    /// Forget `instance`'s traffic in the `period` holding now; hours removed.
    pub async fn traffic_reset(
        &self,
        instance: InstanceId,
        period: StorePeriod,
    ) -> Result<usize, StoreError> {
        let (start, end) = self.period_at(period, Timestamp::now())?;
        if let Backend::Postgres(p) = &self.backend {
            return p.traffic_reset(instance, start, end).await;
        }
        self.sqlite(move |c| ops::traffic_reset(c, &instance, start, end))
            .await
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
        let (start, end) = self.period_at(period, at)?;
        if let Backend::Postgres(p) = &self.backend {
            return p.traffic_usage(instance, period, start, end).await;
        }
        self.sqlite(move |c| {
            let traffic = ops::traffic_between(c, &instance, start, end)?;
            let quotas = ops::traffic_quotas(c, &instance)?;
            Ok(traffic_usage(
                instance.as_str(),
                period,
                (start, end),
                traffic,
                quotas,
            ))
        })
        .await
    }

    /// Add an agent's batches, each exactly once.
    pub async fn ingest(&self, report: Report) -> Result<Ingested, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.ingest(report, &self.settings.timezone).await;
        }
        let tz = self.settings.timezone.clone();
        self.sqlite(move |c| ops::ingest(c, &report.agent, &report.batches, &tz, Timestamp::now()))
            .await
    }

    /// The traffic quotas in force for each of `instances` (what an agent fetches).
    pub async fn traffic_quotas(
        &self,
        instances: Vec<InstanceId>,
    ) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.traffic_quotas(instances).await;
        }
        self.sqlite(move |c| {
            let mut out = BTreeMap::new();
            for i in &instances {
                let qs = ShownTrafficQuota::all(&ops::traffic_quotas(c, i)?);
                out.insert(i.as_str().to_owned(), qs);
            }
            Ok(out)
        })
        .await
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
        let ranked = match &self.backend {
            Backend::Postgres(p) => p.top_traffic(start, end, top).await?,
            Backend::Sqlite(_) => {
                self.sqlite(move |c| ops::top_traffic(c, start, end, top))
                    .await?
            }
        };
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

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            return p.stats().await;
        }
        self.sqlite(|c| ops::stats(c, Timestamp::now())).await
    }
}

pub(crate) fn not_found(scope: &Scope) -> StoreError {
    let (kind, name) = scope.key();
    StoreError::NotFound {
        what: kind,
        name: name.to_owned(),
    }
}

/// What is set at `scope`, or `None` when nothing is (and, for a project, it is unknown).
fn scope_view(c: &rusqlite::Connection, scope: &Scope) -> Result<Option<ScopeView>, StoreError> {
    let (limits, traffic) = ops::scope_limits(c, scope)?;
    let (_, name) = scope.key();
    let (class, known) = match scope {
        Scope::Project(p) => {
            let class = ops::project_class(c, p)?;
            let known = ops::scope_names(c, "project")?
                .iter()
                .any(|n| n == p.as_str());
            (class, known)
        }
        Scope::Instance(i) => {
            let m = ops::membership(c, i)?;
            let any = m.project.is_some() || m.class.is_some();
            (m.class.map(|c| c.as_str().to_owned()), any)
        }
        Scope::Class(_) => (
            None,
            ops::scope_names(c, "class")?.iter().any(|n| n == name),
        ),
        Scope::Default => (None, true),
    };
    Ok(ScopeView::assemble(scope, class, known, limits, &traffic))
}

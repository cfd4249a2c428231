//! The statements the store's engine ([`super::engine`]) runs, as one trait both
//! databases implement: the line between what the store means and what a dialect says.
//!
//! A backend supplies two primitives ([`Statements::execute`], [`Statements::query`]) on
//! its open transaction or connection, and the few statements whose SQL its dialect
//! spells its own way (row locks, `MAX` against `GREATEST`, batched upserts). Every other
//! statement is a provided method here, its SQL written once: SQLite takes PostgreSQL's
//! `$1` placeholders (as `?1`, see [`for_sqlite`]), a list of ids is PostgreSQL's
//! `= ANY($n::TEXT[])` (a JSON array `json_each` reads on SQLite), and where PostgreSQL
//! needs a type (sums are `NUMERIC` there) a portable `CAST` says so for both.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::model::{Limit, Membership, Scope, StoreError, cause};
use super::report::{Hours, Intervals};
use super::statement::{Statement, StoredStatement};
use super::traffic::{Measure, Topup, TrafficQuota};
use crate::model::day_curve::{self, day_of};
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::Interval;
use crate::model::token::{Role, TokenId};
use crate::model::units::Rate;

/// A UTC day in milliseconds: packed days are keyed by their start in Unix ms.
pub(crate) const DAY_MS: i64 = day_curve::DAY_SECS * 1000;

/// One bound parameter, in the few types both databases bind the same way.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    /// A list, for `= ANY($n::TEXT[])`: one statement for many ids.
    Texts(&'a [&'a str]),
}

/// One column of a result row.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Int(i64),
    /// A float: no column of the store's is one, so it converts to nothing.
    Real,
    Text(String),
    Bytes(Vec<u8>),
}

/// A result row, with what the statement was doing (for the error if a column is not
/// what the engine expects).
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) what: &'static str,
    pub(crate) values: Vec<Value>,
}

/// A Rust type a column converts into.
pub(crate) trait Column: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl Column for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl Column for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl Column for Vec<u8> {
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl Row {
    /// Column `k` as a `T`.
    pub(crate) fn get<T: Column>(&self, k: usize) -> Result<T, StoreError> {
        self.values
            .get(k)
            .and_then(T::from_value)
            .ok_or_else(|| StoreError::Database {
                what: self.what,
                source: cause(format!(
                    "column {k} is not a {}",
                    std::any::type_name::<T>()
                )),
            })
    }

    /// Column `k`, a count or a sum, as a `u64` (a negative one is 0).
    pub(crate) fn count(&self, k: usize) -> Result<u64, StoreError> {
        Ok(self.get::<i64>(k)?.max(0) as u64)
    }
}

/// The spelling of a list parameter in a statement, as PostgreSQL reads it.
const ANY_LIST: &str = "= ANY($";
/// Its end.
const ANY_LIST_END: &str = "::TEXT[])";

/// `sql` as SQLite reads it: PostgreSQL's `$n` placeholders as `?n` (SQLite reads `$1`
/// as a *named* parameter numbered by first appearance, so `$2 … $1` would bind
/// backwards), and `= ANY($n::TEXT[])` as `IN (SELECT value FROM json_each(?n))`, the
/// list being bound as a JSON array.
pub(crate) fn for_sqlite(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find(ANY_LIST) {
        let after = &rest[at + ANY_LIST.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !after[digits..].starts_with(ANY_LIST_END) {
            out.push_str(&rest[..at + ANY_LIST.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        out.push_str("IN (SELECT value FROM json_each($");
        out.push_str(&after[..digits]);
        out.push_str("))");
        rest = &after[digits + ANY_LIST_END.len()..];
    }
    out.push_str(rest);
    Cow::Owned(out.replace('$', "?"))
}

/// An unsigned amount as the databases' signed 64-bit integer, saturating.
pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which instance-level limits and quotas apply: the instance's own, its project's, its
/// class's and the default's. `$1` the instance, `$2` its project, `$3` its class.
macro_rules! chain {
    () => {
        "(scope_kind = 'instance' AND scope = $1)
         OR (scope_kind = 'project' AND scope = $2)
         OR (scope_kind = 'class' AND scope = $3)
         OR scope_kind = 'default'"
    };
}

/// A traffic quota's columns after its scope kind (as [`quota_at`] reads them), up to
/// the `WHERE`.
macro_rules! quota_rows {
    () => {
        "SELECT scope_kind, resource, period, limit_bytes, on_exceed, upload_rate, download_rate,
                reset_day, pool, direction, commit_bps
         FROM traffic_quotas WHERE "
    };
}

/// Each instance's 5-minute intervals, oldest first (start in Unix ms).
pub(crate) type Curves = BTreeMap<String, Vec<(i64, Interval)>>;

/// The packed days' curves and the loose rows' merged, per instance (an interval in
/// both, a late report's, summed).
pub(crate) fn merge_curves(mut packed: Curves, loose: Curves) -> Curves {
    for (instance, curve) in loose {
        let into = packed.remove(&instance).unwrap_or_default();
        packed.insert(instance, day_curve::merge(into, curve));
    }
    packed
}

/// Whose shares of an instance's traffic a sum takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hosts<'a> {
    /// Every host's but this agent's (what it must add to its own ledger's count).
    Other(&'a Label),
    /// This agent's alone.
    Only(&'a Label),
}

/// The four counts of the store's stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub instances: u64,
    pub projects: u64,
    pub active_reservations: u64,
    pub applied_reports: u64,
    pub overlapping_samples: u64,
}

/// Every statement the engine runs, on one open transaction (or, for reads on
/// PostgreSQL, one pooled connection).
///
/// The engine drives these futures; on SQLite none of them ever waits (the connection
/// is synchronous), so the writer thread runs the engine with a plain `block_on`.
pub(crate) trait Statements {
    /// `"sqlite"` or `"postgres"`, as the stats name the backend.
    const NAME: &'static str;

    // ---- the SQL the dialects spell differently (`MAX` or `GREATEST`, casts) ----

    /// An instance's use and its live reservations' growth, per resource: rows of
    /// (resource, in use, reserved); `$1` the instance, `$2` now.
    const USES: &'static str;
    /// Add `$3` to the use of `$2` by instance `$1`, never below zero.
    const ADD_USAGE: &'static str;
    /// Agent `$1` reported at `$2`; `$3` the highest key it sent (kept if lower).
    const TOUCH_AGENT: &'static str;

    /// Run a statement; how many rows it changed. `what` names it in errors.
    async fn execute(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<u64, StoreError>;

    /// Run a query; its rows.
    async fn query(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Row>, StoreError>;

    // ---- the statements the dialects shape differently ----

    /// Serialise every change to `instance`'s use and reservations with any other
    /// store's. (PostgreSQL: its row, created if missing, locked `FOR UPDATE`; SQLite:
    /// nothing, the transaction already holds the database's write lock.)
    async fn lock_instance(&mut self, instance: &InstanceId) -> Result<(), StoreError>;

    /// Lock the instance holding reservation `id`, if it is still held (see
    /// [`Statements::lock_instance`]).
    async fn lock_reservation(&mut self, id: &str) -> Result<(), StoreError>;

    /// Record `agent`'s report keys `seqs`; those not recorded before (as stored).
    async fn record_reports(
        &mut self,
        agent: &Label,
        seqs: &[u64],
        now: Timestamp,
    ) -> Result<BTreeSet<i64>, StoreError>;

    /// Add `hours` to each instance's hourly traffic, and to `agent`'s share of it.
    async fn add_traffic(&mut self, agent: &Label, hours: &Hours<'_>) -> Result<(), StoreError>;

    /// Add `intervals` (keyed by 5-minute interval start, Unix ms) to each instance's
    /// 5-minute traffic.
    async fn add_intervals(&mut self, intervals: &Intervals<'_>) -> Result<(), StoreError>;

    /// The 5-minute intervals of each of `ids` starting in [from, to) (Unix ms), oldest
    /// first; an instance without any is absent. A month of a thousand instances is
    /// millions of rows: each dialect reads them its fastest way, not as [`Row`]s.
    async fn intervals_of(&mut self, ids: &[&str], range: (i64, i64))
    -> Result<Curves, StoreError>;

    /// Every agent's latest sample time (Unix ms) of each of `instances`: rows of
    /// (agent, instance, time). One statement for a whole report on PostgreSQL.
    async fn report_marks(
        &mut self,
        instances: &[&str],
    ) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// `agent`'s latest sample of each instance is at its time (kept where it had a
    /// later one).
    async fn set_report_marks(
        &mut self,
        agent: &Label,
        marks: &[(&str, i64)],
    ) -> Result<(), StoreError>;

    // ---- the statements both run alike ----

    async fn uses(
        &mut self,
        instance: &InstanceId,
        now: Timestamp,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        self.query(
            "reading usage",
            Self::USES,
            &[Arg::Text(instance.as_str()), Arg::Int(now.as_millisecond())],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .collect()
    }

    /// Add `delta` to a use, never below zero.
    async fn add_usage(
        &mut self,
        instance: &str,
        resource: &str,
        delta: i64,
    ) -> Result<(), StoreError> {
        let args = [Arg::Text(instance), Arg::Text(resource), Arg::Int(delta)];
        self.execute("writing usage", Self::ADD_USAGE, &args)
            .await
            .map(drop)
    }

    /// When `agent` last reported, and the highest key it has sent.
    async fn touch_agent(
        &mut self,
        agent: &Label,
        now: Timestamp,
        last_seq: u64,
    ) -> Result<(), StoreError> {
        let args = [
            Arg::Text(agent.as_str()),
            Arg::Int(now.as_millisecond()),
            Arg::Int(clamp(last_seq)),
        ];
        self.execute("recording an agent", Self::TOUCH_AGENT, &args)
            .await
            .map(drop)
    }

    /// The instance's own project and class (not the project's class).
    async fn membership(&mut self, instance: &InstanceId) -> Result<Membership, StoreError> {
        let rows = self
            .query(
                "reading an instance",
                "SELECT project, class FROM instances WHERE id = $1",
                &[Arg::Text(instance.as_str())],
            )
            .await?;
        let (p, c): (Option<String>, Option<String>) = match rows.first() {
            Some(r) => (r.get(0)?, r.get(1)?),
            None => (None, None),
        };
        Ok(Membership {
            project: p.and_then(|p| Label::new(&p).ok()),
            class: c.and_then(|c| Label::new(&c).ok()),
        })
    }

    /// Put an instance in a project and/or class (creating its record).
    async fn set_membership(
        &mut self,
        instance: &InstanceId,
        m: &Membership,
    ) -> Result<(), StoreError> {
        self.execute(
            "writing an instance",
            "INSERT INTO instances (id, project, class) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET project = excluded.project, class = excluded.class",
            &[
                Arg::Text(instance.as_str()),
                Arg::OptText(m.project.as_ref().map(Label::as_str)),
                Arg::OptText(m.class.as_ref().map(Label::as_str)),
            ],
        )
        .await
        .map(drop)
    }

    async fn set_project_class(
        &mut self,
        project: &Label,
        class: Option<&Label>,
    ) -> Result<(), StoreError> {
        self.execute(
            "writing a project",
            "INSERT INTO projects (id, class) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET class = excluded.class",
            &[
                Arg::Text(project.as_str()),
                Arg::OptText(class.map(Label::as_str)),
            ],
        )
        .await
        .map(drop)
    }

    async fn project_class(&mut self, project: &Label) -> Result<Option<String>, StoreError> {
        let rows = self
            .query(
                "reading a project",
                "SELECT class FROM projects WHERE id = $1",
                &[Arg::Text(project.as_str())],
            )
            .await?;
        match rows.first() {
            Some(r) => r.get(0),
            None => Ok(None),
        }
    }

    /// (project, effective class) of an instance: its own class, else its project's.
    async fn chain_of(
        &mut self,
        instance: &InstanceId,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let rows = self
            .query(
                "reading an instance",
                "SELECT i.project, COALESCE(i.class, p.class) FROM instances i
                 LEFT JOIN projects p ON p.id = i.project WHERE i.id = $1",
                &[Arg::Text(instance.as_str())],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok((r.get(0)?, r.get(1)?)),
            None => Ok((None, None)),
        }
    }

    /// The limits along an instance's chain: (scope kind, resource, limit).
    async fn chain_limits(
        &mut self,
        instance: &InstanceId,
        project: Option<&str>,
        class: Option<&str>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        const SQL: &str = concat!(
            "SELECT scope_kind, resource, hard_limit FROM limits WHERE ",
            chain!()
        );
        self.query(
            "reading limits",
            SQL,
            &[
                Arg::Text(instance.as_str()),
                Arg::OptText(project),
                Arg::OptText(class),
            ],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .collect()
    }

    /// Set the limit of `resource` at `scope`.
    async fn set_limit(
        &mut self,
        scope: &Scope,
        resource: &Label,
        limit: Limit,
    ) -> Result<(), StoreError> {
        let (kind, name) = scope.key();
        self.execute(
            "writing a limit",
            "INSERT INTO limits (scope_kind, scope, resource, hard_limit) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope_kind, scope, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
            &[
                Arg::Text(kind),
                Arg::Text(name),
                Arg::Text(resource.as_str()),
                Arg::Int(limit.to_i64()),
            ],
        )
        .await
        .map(drop)
    }

    /// Remove the limit of `resource` at `scope`.
    async fn remove_limit(&mut self, scope: &Scope, resource: &Label) -> Result<(), StoreError> {
        let (kind, name) = scope.key();
        self.execute(
            "writing a limit",
            "DELETE FROM limits WHERE scope_kind = $1 AND scope = $2 AND resource = $3",
            &[
                Arg::Text(kind),
                Arg::Text(name),
                Arg::Text(resource.as_str()),
            ],
        )
        .await
        .map(drop)
    }

    /// The limits set at exactly `scope`.
    async fn scope_limits(&mut self, scope: &Scope) -> Result<BTreeMap<String, Limit>, StoreError> {
        let (kind, name) = scope.key();
        let mut limits = BTreeMap::new();
        for r in self
            .query(
                "reading limits",
                "SELECT resource, hard_limit FROM limits WHERE scope_kind = $1 AND scope = $2",
                &[Arg::Text(kind), Arg::Text(name)],
            )
            .await?
        {
            let l = Limit::from_i64(r.get(1)?).map_err(|reason| StoreError::Database {
                what: "reading limits",
                source: cause(reason),
            })?;
            limits.insert(r.get(0)?, l);
        }
        Ok(limits)
    }

    async fn put_reservation(
        &mut self,
        id: &str,
        instance: &InstanceId,
        resource: &Label,
        delta: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "writing a reservation",
            "INSERT INTO reservations (id, instance, resource, delta, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                Arg::Text(id),
                Arg::Text(instance.as_str()),
                Arg::Text(resource.as_str()),
                Arg::Int(delta),
                Arg::Int(expires_ms),
            ],
        )
        .await
        .map(drop)
    }

    /// Remove a reservation's rows, returning them: (instance, resource, delta).
    async fn take_reservation(
        &mut self,
        id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.query(
            "removing a reservation",
            "DELETE FROM reservations WHERE id = $1 RETURNING instance, resource, delta",
            &[Arg::Text(id)],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .collect()
    }

    /// Remove the reservations that lapsed by `now`; the ids of their rows.
    async fn expire_reservations(&mut self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        self.query(
            "expiring reservations",
            "DELETE FROM reservations WHERE expires_ms <= $1 RETURNING id",
            &[Arg::Int(now.as_millisecond())],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    async fn set_usage(
        &mut self,
        instance: &InstanceId,
        resource: &Label,
        in_use: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "writing usage",
            "INSERT INTO usages (instance, resource, in_use) VALUES ($1, $2, $3)
             ON CONFLICT (instance, resource) DO UPDATE SET in_use = excluded.in_use",
            &[
                Arg::Text(instance.as_str()),
                Arg::Text(resource.as_str()),
                Arg::Int(in_use),
            ],
        )
        .await
        .map(drop)
    }

    /// A use back to zero (one instance's, or every one's); how many rows.
    async fn reset_usage(
        &mut self,
        resource: &Label,
        instance: Option<&InstanceId>,
    ) -> Result<u64, StoreError> {
        self.execute(
            "resetting usage",
            "UPDATE usages SET in_use = 0
             WHERE resource = $1 AND in_use <> 0 AND (CAST($2 AS TEXT) IS NULL OR instance = $2)",
            &[
                Arg::Text(resource.as_str()),
                Arg::OptText(instance.map(InstanceId::as_str)),
            ],
        )
        .await
    }

    /// Remove an instance's use, reservations, limits, traffic quotas and record.
    async fn delete_instance(&mut self, instance: &InstanceId) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM usages WHERE instance = $1",
            "DELETE FROM reservations WHERE instance = $1",
            "DELETE FROM limits WHERE scope_kind = 'instance' AND scope = $1",
            "DELETE FROM traffic_quotas WHERE scope_kind = 'instance' AND scope = $1",
            "DELETE FROM instances WHERE id = $1",
        ] {
            self.execute(
                "destroying an instance",
                sql,
                &[Arg::Text(instance.as_str())],
            )
            .await?;
        }
        Ok(())
    }

    /// Remove a project's record; its instances leave it.
    async fn delete_project(&mut self, project: &Label) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM projects WHERE id = $1",
            "UPDATE instances SET project = NULL WHERE project = $1",
        ] {
            self.execute("destroying a project", sql, &[Arg::Text(project.as_str())])
                .await?;
        }
        Ok(())
    }

    /// Remove every limit and traffic quota set at `scope`; whether there were any.
    async fn clear_scope(&mut self, scope: &Scope) -> Result<bool, StoreError> {
        let (kind, name) = scope.key();
        let args = [Arg::Text(kind), Arg::Text(name)];
        let a = self
            .execute(
                "clearing limits",
                "DELETE FROM limits WHERE scope_kind = $1 AND scope = $2",
                &args,
            )
            .await?;
        let b = self
            .execute(
                "clearing traffic quotas",
                "DELETE FROM traffic_quotas WHERE scope_kind = $1 AND scope = $2",
                &args,
            )
            .await?;
        Ok(a + b > 0)
    }

    async fn set_traffic_quota(
        &mut self,
        scope: &Scope,
        q: &TrafficQuota,
    ) -> Result<(), StoreError> {
        let (kind, name) = scope.key();
        let (up, down) = q.on_exceed.rates();
        let bps = |r: Option<Rate>| r.map(|r| clamp(r.bits_per_sec()));
        // A committed rate keeps its bound in its own columns: limit_bytes is 0 there.
        let (limit, direction, commit) = match q.measure {
            Measure::Volume { limit, .. } => (limit.get(), None, None),
            Measure::Rate95th { direction, commit } => (0, Some(direction.as_str()), Some(commit)),
        };
        self.execute(
            "writing a traffic quota",
            "INSERT INTO traffic_quotas
               (scope_kind, scope, resource, period, limit_bytes, on_exceed, upload_rate, download_rate,
                reset_day, pool, direction, commit_bps)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (scope_kind, scope, resource, period) DO UPDATE SET
               limit_bytes = excluded.limit_bytes, on_exceed = excluded.on_exceed,
               upload_rate = excluded.upload_rate, download_rate = excluded.download_rate,
               reset_day = excluded.reset_day, pool = excluded.pool,
               direction = excluded.direction, commit_bps = excluded.commit_bps",
            &[
                Arg::Text(kind),
                Arg::Text(name),
                Arg::Text(q.name()),
                Arg::Text(q.period.as_str()),
                Arg::Int(clamp(limit)),
                Arg::Text(q.on_exceed.name()),
                Arg::OptInt(bps(up)),
                Arg::OptInt(bps(down)),
                Arg::Int(i64::from(q.reset_day)),
                Arg::Int(i64::from(q.pool)),
                Arg::OptText(direction),
                Arg::OptInt(bps(commit)),
            ],
        )
        .await
        .map(drop)
    }

    /// The traffic quotas set at exactly `scope`.
    async fn scope_traffic_quotas(
        &mut self,
        scope: &Scope,
    ) -> Result<Vec<TrafficQuota>, StoreError> {
        const SQL: &str = concat!(quota_rows!(), "scope_kind = $1 AND scope = $2");
        let (kind, name) = scope.key();
        let rows = self
            .query(
                "reading traffic quotas",
                SQL,
                &[Arg::Text(kind), Arg::Text(name)],
            )
            .await?;
        rows.iter().map(|r| quota_at(r, 1)).collect()
    }

    /// Each of `ids`' project and its class (the instance's own, else its project's);
    /// an id the store does not know is absent.
    async fn chains_of(
        &mut self,
        ids: &[&str],
    ) -> Result<BTreeMap<String, (Option<String>, Option<String>)>, StoreError> {
        let rows = self
            .query(
                "reading instances",
                "SELECT i.id, i.project, COALESCE(i.class, p.class) FROM instances i
                 LEFT JOIN projects p ON p.id = i.project WHERE i.id = ANY($1::TEXT[])",
                &[Arg::Texts(ids)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .collect()
    }

    /// The traffic quotas set at any of these instances, projects or classes, and the
    /// default's: rows of (scope kind, scope, quota).
    async fn chains_traffic_quotas(
        &mut self,
        instances: &[&str],
        projects: &[&str],
        classes: &[&str],
    ) -> Result<Vec<(String, String, TrafficQuota)>, StoreError> {
        let rows = self
            .query(
                "reading traffic quotas",
                "SELECT scope_kind, scope, resource, period, limit_bytes, on_exceed, upload_rate,
                        download_rate, reset_day, pool, direction, commit_bps
                 FROM traffic_quotas
                 WHERE (scope_kind = 'instance' AND scope = ANY($1::TEXT[]))
                    OR (scope_kind = 'project' AND scope = ANY($2::TEXT[]))
                    OR (scope_kind = 'class' AND scope = ANY($3::TEXT[]))
                    OR scope_kind = 'default'",
                &[
                    Arg::Texts(instances),
                    Arg::Texts(projects),
                    Arg::Texts(classes),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, quota_at(r, 2)?)))
            .collect()
    }

    /// The (upload, download) sums one row of `sql` answers (none: nothing counted).
    async fn byte_pair(
        &mut self,
        what: &'static str,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<(u64, u64), StoreError> {
        let rows = self.query(what, sql, args).await?;
        match rows.first() {
            Some(r) => Ok((r.count(0)?, r.count(1)?)),
            None => Ok((0, 0)),
        }
    }

    /// Bytes (upload, download) of `instance` in hours starting in [start, end).
    async fn traffic_between(
        &mut self,
        instance: &InstanceId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        self.byte_pair(
            "reading traffic",
            "SELECT CAST(COALESCE(SUM(upload), 0) AS BIGINT),
                    CAST(COALESCE(SUM(download), 0) AS BIGINT)
             FROM traffic_hours WHERE instance = $1 AND hour_ms >= $2 AND hour_ms < $3",
            &[
                Arg::Text(instance.as_str()),
                Arg::Int(start.as_millisecond()),
                Arg::Int(end.as_millisecond()),
            ],
        )
        .await
    }

    /// Instances some agent reported a sample of at or after `since_ms`.
    async fn reported_since(&mut self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.query(
            "reading reported instances",
            "SELECT DISTINCT instance FROM report_marks WHERE last_at_ms >= $1 ORDER BY 1",
            &[Arg::Int(since_ms)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Each of `ids`' latest statement: (its month's start in Unix ms, its hash).
    async fn latest_statements(
        &mut self,
        ids: &[&str],
    ) -> Result<BTreeMap<String, (i64, String)>, StoreError> {
        self.query(
            "reading the latest statements",
            "SELECT s.instance, s.start_ms, s.hash FROM statements s
             WHERE s.instance = ANY($1::TEXT[])
               AND s.start_ms = (SELECT MAX(t.start_ms) FROM statements t
                                 WHERE t.instance = s.instance)",
            &[Arg::Texts(ids)],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .collect()
    }

    /// File a sealed statement; false when one for that month was filed first (by
    /// another store process).
    async fn insert_statement(
        &mut self,
        st: &Statement,
        start_ms: i64,
    ) -> Result<bool, StoreError> {
        let body = st.to_canonical();
        let n = self
            .execute(
                "writing a statement",
                "INSERT INTO statements (instance, start_ms, start, body, hash)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance, start_ms) DO NOTHING",
                &[
                    Arg::Text(&st.instance),
                    Arg::Int(start_ms),
                    Arg::Text(&st.start),
                    Arg::Text(&body),
                    Arg::Text(&st.hash),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// Statements as stored, of one instance or all, by instance then month.
    async fn stored_statements(
        &mut self,
        instance: Option<&str>,
    ) -> Result<Vec<StoredStatement>, StoreError> {
        self.query(
            "reading statements",
            "SELECT instance, start, body FROM statements
             WHERE CAST($1 AS TEXT) IS NULL OR instance = $1
             ORDER BY instance, start_ms",
            &[Arg::OptText(instance)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(StoredStatement {
                instance: r.get(0)?,
                start: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .collect()
    }

    /// The ids of `project`'s instances.
    async fn members_of(&mut self, project: &Label) -> Result<Vec<String>, StoreError> {
        self.query(
            "reading a project's instances",
            "SELECT id FROM instances WHERE project = $1 ORDER BY id",
            &[Arg::Text(project.as_str())],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Forget 5-minute intervals that start before `before`, and packed days that end
    /// by then; how many rows.
    async fn prune_intervals(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let loose = self
            .execute(
                "pruning 5-minute traffic",
                "DELETE FROM traffic_5m WHERE bucket_ms < $1",
                &[Arg::Int(before.as_millisecond())],
            )
            .await?;
        let days = self
            .execute(
                "pruning 5-minute traffic",
                "DELETE FROM traffic_days WHERE day_ms <= $1",
                &[Arg::Int(before.as_millisecond() - DAY_MS)],
            )
            .await?;
        Ok(loose + days)
    }

    /// The oldest UTC day (its start, Unix ms) before `before_ms` that still has loose
    /// 5-minute rows (`None`: every such day is packed).
    async fn oldest_loose_day(&mut self, before_ms: i64) -> Result<Option<i64>, StoreError> {
        let rows = self
            .query(
                "reading 5-minute traffic",
                "SELECT MIN(bucket_ms) FROM traffic_5m WHERE bucket_ms < $1",
                &[Arg::Int(before_ms)],
            )
            .await?;
        let first: Option<i64> = match rows.first() {
            Some(r) => r.get(0)?,
            None => None,
        };
        Ok(first.map(|ms| day_of(ms.div_euclid(1000)) * 1000))
    }

    /// Pack the UTC day starting at `day_ms`: its loose 5-minute rows join each
    /// instance's packed day (summed where a late report adds to an interval already
    /// packed) and are deleted; how many instances. Run in one transaction, so a reader
    /// sees the day either loose or packed, never both or neither.
    async fn pack_day(&mut self, day_ms: i64) -> Result<usize, StoreError> {
        const WHAT: &str = "packing a day of 5-minute traffic";
        let range = [Arg::Int(day_ms), Arg::Int(day_ms + DAY_MS)];
        let rows = self
            .query(
                WHAT,
                "SELECT instance, bucket_ms, upload, download, estimated FROM traffic_5m
                 WHERE bucket_ms >= $1 AND bucket_ms < $2 ORDER BY instance, bucket_ms",
                &range,
            )
            .await?;
        let mut loose: BTreeMap<String, Vec<(i64, Interval)>> = BTreeMap::new();
        for r in &rows {
            loose.entry(r.get(0)?).or_default().push((
                r.get::<i64>(1)?.div_euclid(1000),
                Interval {
                    upload: r.count(2)?,
                    download: r.count(3)?,
                    estimated: r.get::<i64>(4)? != 0,
                },
            ));
        }
        let mut packed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in self
            .query(
                WHAT,
                "SELECT instance, curve FROM traffic_days WHERE day_ms = $1",
                &[Arg::Int(day_ms)],
            )
            .await?
        {
            packed.insert(r.get(0)?, r.get(1)?);
        }
        let day = day_ms.div_euclid(1000);
        for (instance, curve) in &loose {
            let before = match packed.get(instance) {
                Some(bytes) => day_curve::decode(day, bytes).map_err(|e| StoreError::Database {
                    what: WHAT,
                    source: cause(e),
                })?,
                None => Vec::new(),
            };
            let bytes =
                day_curve::encode(day, &day_curve::merge(before, curve.clone())).map_err(|e| {
                    StoreError::Database {
                        what: WHAT,
                        source: cause(e),
                    }
                })?;
            self.execute(
                WHAT,
                "INSERT INTO traffic_days (instance, day_ms, curve) VALUES ($1, $2, $3)
                 ON CONFLICT (instance, day_ms) DO UPDATE SET curve = excluded.curve",
                &[Arg::Text(instance), Arg::Int(day_ms), Arg::Bytes(&bytes)],
            )
            .await?;
        }
        self.execute(
            WHAT,
            "DELETE FROM traffic_5m WHERE bucket_ms >= $1 AND bucket_ms < $2",
            &range,
        )
        .await?;
        Ok(loose.len())
    }

    /// Bytes (upload, download) per instance of `ids` in hours starting in [start, end),
    /// from the shares of `hosts`; an instance without any is absent.
    async fn traffic_by_hosts(
        &mut self,
        ids: &[&str],
        hosts: Hosts<'_>,
        (start, end): (Timestamp, Timestamp),
    ) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let (what, sql, agent) = match hosts {
            Hosts::Other(agent) => (
                "reading other hosts' traffic",
                "SELECT instance, CAST(SUM(upload) AS BIGINT), CAST(SUM(download) AS BIGINT)
                 FROM traffic_by_agent
                 WHERE instance = ANY($1::TEXT[]) AND hour_ms >= $2 AND hour_ms < $3
                   AND agent <> $4
                 GROUP BY instance",
                agent,
            ),
            Hosts::Only(agent) => (
                "reading a host's traffic",
                "SELECT instance, CAST(SUM(upload) AS BIGINT), CAST(SUM(download) AS BIGINT)
                 FROM traffic_by_agent
                 WHERE instance = ANY($1::TEXT[]) AND hour_ms >= $2 AND hour_ms < $3
                   AND agent = $4
                 GROUP BY instance",
                agent,
            ),
        };
        let args = [
            Arg::Texts(ids),
            Arg::Int(start.as_millisecond()),
            Arg::Int(end.as_millisecond()),
            Arg::Text(agent.as_str()),
        ];
        self.query(what, sql, &args)
            .await?
            .iter()
            .map(|r| Ok((r.get(0)?, (r.count(1)?, r.count(2)?))))
            .collect()
    }

    /// Bytes (upload, download) of all of each project's instances in hours starting in
    /// [start, end), from every host's shares; a project without any is absent.
    async fn pools_traffic(
        &mut self,
        projects: &[&str],
        (start, end): (Timestamp, Timestamp),
    ) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        self.query(
            "reading pools' traffic",
            "SELECT i.project, CAST(SUM(t.upload) AS BIGINT), CAST(SUM(t.download) AS BIGINT)
             FROM traffic_by_agent t JOIN instances i ON i.id = t.instance
             WHERE i.project = ANY($1::TEXT[]) AND t.hour_ms >= $2 AND t.hour_ms < $3
             GROUP BY i.project",
            &[
                Arg::Texts(projects),
                Arg::Int(start.as_millisecond()),
                Arg::Int(end.as_millisecond()),
            ],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, (r.count(1)?, r.count(2)?))))
        .collect()
    }

    /// Bytes (upload, download) of all of `project`'s instances in hours starting in
    /// [start, end), from the hourly totals (which also hold what was reported before
    /// the store kept each host's share).
    async fn project_traffic(
        &mut self,
        project: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        self.byte_pair(
            "reading a project's traffic",
            "SELECT CAST(COALESCE(SUM(t.upload), 0) AS BIGINT),
                    CAST(COALESCE(SUM(t.download), 0) AS BIGINT)
             FROM traffic_hours t JOIN instances i ON i.id = t.instance
             WHERE i.project = $1 AND t.hour_ms >= $2 AND t.hour_ms < $3",
            &[
                Arg::Text(project),
                Arg::Int(start.as_millisecond()),
                Arg::Int(end.as_millisecond()),
            ],
        )
        .await
    }

    /// Record a top-up.
    async fn add_topup(&mut self, t: &Topup, instance: &InstanceId) -> Result<(), StoreError> {
        self.execute(
            "adding a top-up",
            "INSERT INTO traffic_topups
               (id, instance, resource, period, start_ms, end_ms, bytes, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Arg::Text(&t.id),
                Arg::Text(instance.as_str()),
                Arg::Text(&t.resource),
                Arg::Text(&t.period),
                Arg::Int(t.start.as_millisecond()),
                Arg::Int(t.end.as_millisecond()),
                Arg::Int(clamp(t.bytes)),
                Arg::Int(t.created.as_millisecond()),
            ],
        )
        .await
        .map(drop)
    }

    /// The top-ups of any of `ids` for periods ending after `after`, oldest first: rows
    /// of (instance, top-up).
    async fn topups_of(
        &mut self,
        ids: &[&str],
        after: Timestamp,
    ) -> Result<Vec<(String, Topup)>, StoreError> {
        let ts = |ms: i64| {
            Timestamp::from_millisecond(ms).map_err(|e| StoreError::Database {
                what: "reading top-ups",
                source: cause(e.to_string()),
            })
        };
        self.query(
            "reading top-ups",
            "SELECT instance, id, resource, period, start_ms, end_ms, bytes, created_ms
             FROM traffic_topups
             WHERE instance = ANY($1::TEXT[]) AND end_ms > $2 ORDER BY created_ms, id",
            &[Arg::Texts(ids), Arg::Int(after.as_millisecond())],
        )
        .await?
        .iter()
        .map(|r| {
            let topup = Topup {
                id: r.get(1)?,
                resource: r.get(2)?,
                period: r.get(3)?,
                start: ts(r.get(4)?)?,
                end: ts(r.get(5)?)?,
                bytes: r.count(6)?,
                created: ts(r.get(7)?)?,
            };
            Ok((r.get(0)?, topup))
        })
        .collect()
    }

    /// The `limit` instances with the most traffic in [start, end): (instance, upload,
    /// download), biggest total first.
    async fn top_traffic(
        &mut self,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.query(
            "ranking traffic",
            "SELECT instance, CAST(SUM(upload) AS BIGINT), CAST(SUM(download) AS BIGINT)
             FROM traffic_hours WHERE hour_ms >= $1 AND hour_ms < $2
             GROUP BY instance ORDER BY SUM(upload) + SUM(download) DESC, instance LIMIT $3",
            &[
                Arg::Int(start.as_millisecond()),
                Arg::Int(end.as_millisecond()),
                Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.count(1)?, r.count(2)?)))
        .collect()
    }

    /// Remove `instance`'s intervals starting in [from, to) (Unix ms) from its packed
    /// days: a day left empty goes, one cut in part is packed again.
    async fn cut_packed_days(
        &mut self,
        instance: &InstanceId,
        (from, to): (i64, i64),
    ) -> Result<(), StoreError> {
        const WHAT: &str = "resetting traffic";
        let days = self
            .query(
                WHAT,
                "SELECT day_ms, curve FROM traffic_days
                 WHERE instance = $1 AND day_ms > $2 AND day_ms < $3",
                &[
                    Arg::Text(instance.as_str()),
                    Arg::Int(from - DAY_MS),
                    Arg::Int(to),
                ],
            )
            .await?;
        let bad = |e: day_curve::DayCurveError| StoreError::Database {
            what: WHAT,
            source: cause(e),
        };
        for r in days {
            let day_ms: i64 = r.get(0)?;
            let day = day_ms.div_euclid(1000);
            let mut curve = day_curve::decode(day, &r.get::<Vec<u8>>(1)?).map_err(bad)?;
            curve.retain(|(t, _)| !(from..to).contains(&(t * 1000)));
            let key = [Arg::Text(instance.as_str()), Arg::Int(day_ms)];
            if curve.is_empty() {
                self.execute(
                    WHAT,
                    "DELETE FROM traffic_days WHERE instance = $1 AND day_ms = $2",
                    &key,
                )
                .await?;
            } else {
                let bytes = day_curve::encode(day, &curve).map_err(bad)?;
                self.execute(
                    WHAT,
                    "UPDATE traffic_days SET curve = $3 WHERE instance = $1 AND day_ms = $2",
                    &[key[0], key[1], Arg::Bytes(&bytes)],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Forget `instance`'s traffic in [start, end); hours removed.
    async fn delete_traffic(
        &mut self,
        instance: &InstanceId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<u64, StoreError> {
        let args = [
            Arg::Text(instance.as_str()),
            Arg::Int(start.as_millisecond()),
            Arg::Int(end.as_millisecond()),
        ];
        // The hosts' shares go with the hours: a reset is a reset on every host.
        self.execute(
            "resetting traffic",
            "DELETE FROM traffic_by_agent WHERE instance = $1 AND hour_ms >= $2 AND hour_ms < $3",
            &args,
        )
        .await?;
        self.execute(
            "resetting traffic",
            "DELETE FROM traffic_5m WHERE instance = $1 AND bucket_ms >= $2 AND bucket_ms < $3",
            &args,
        )
        .await?;
        self.cut_packed_days(instance, (start.as_millisecond(), end.as_millisecond()))
            .await?;
        self.execute(
            "resetting traffic",
            "DELETE FROM traffic_hours WHERE instance = $1 AND hour_ms >= $2 AND hour_ms < $3",
            &args,
        )
        .await
    }

    /// Forget report keys recorded before `before`; how many.
    async fn prune_reports(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        self.execute(
            "pruning report keys",
            "DELETE FROM applied_reports WHERE applied_ms < $1",
            &[Arg::Int(before.as_millisecond())],
        )
        .await
    }

    /// Names of every class or project (`kind`) something is set for.
    async fn scope_names(&mut self, kind: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "listing",
            "SELECT scope FROM limits WHERE scope_kind = $1
             UNION SELECT scope FROM traffic_quotas WHERE scope_kind = $1
             UNION SELECT class FROM projects WHERE $1 = 'class' AND class IS NOT NULL
             UNION SELECT class FROM instances WHERE $1 = 'class' AND class IS NOT NULL
             UNION SELECT id FROM projects WHERE $1 = 'project'
             ORDER BY 1",
            &[Arg::Text(kind)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// The counts of the stats, at `now`.
    async fn counts(&mut self, now: Timestamp) -> Result<Counts, StoreError> {
        let rows = self
            .query(
                "counting",
                "SELECT
                   (SELECT COUNT(*) FROM (SELECT id FROM instances UNION SELECT instance FROM usages
                                          UNION SELECT instance FROM traffic_hours) x),
                   (SELECT COUNT(*) FROM projects),
                   (SELECT COUNT(DISTINCT id) FROM reservations WHERE expires_ms > $1),
                   (SELECT COUNT(*) FROM applied_reports),
                   (SELECT COALESCE(MAX(value), 0) FROM report_counters
                     WHERE name = 'overlapping_samples')",
                &[Arg::Int(now.as_millisecond())],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(Counts::default());
        };
        Ok(Counts {
            instances: r.count(0)?,
            projects: r.count(1)?,
            active_reservations: r.count(2)?,
            applied_reports: r.count(3)?,
            overlapping_samples: r.count(4)?,
        })
    }

    /// When `agent`'s previous report arrived (Unix ms, the store's clock).
    async fn agent_last_report(&mut self, agent: &Label) -> Result<Option<i64>, StoreError> {
        self.query(
            "reading an agent's last report",
            "SELECT last_report_ms FROM agents WHERE id = $1",
            &[Arg::Text(agent.as_str())],
        )
        .await?
        .first()
        .map(|r| r.get(0))
        .transpose()
    }

    /// Count `n` more samples that overlapped another host's for the same instance.
    async fn add_overlapping_samples(&mut self, n: u64) -> Result<(), StoreError> {
        self.execute(
            "counting overlapping samples",
            "INSERT INTO report_counters (name, value) VALUES ('overlapping_samples', $1)
             ON CONFLICT (name) DO UPDATE SET value = report_counters.value + excluded.value",
            &[Arg::Int(clamp(n))],
        )
        .await
        .map(drop)
    }

    /// Every agent that reported: (id, last report in Unix ms, highest key).
    async fn agents(&mut self) -> Result<Vec<(String, i64, u64)>, StoreError> {
        self.query(
            "listing agents",
            "SELECT id, last_report_ms, last_seq FROM agents ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.count(2)?)))
        .collect()
    }

    async fn insert_token(
        &mut self,
        id: &TokenId,
        digest: &[u8; 32],
        role: &Role,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "writing a token",
            "INSERT INTO tokens (id, digest, role, host, created_ms) VALUES ($1, $2, $3, $4, $5)",
            &[
                Arg::Text(id.as_str()),
                Arg::Bytes(&digest[..]),
                Arg::Text(role.name()),
                Arg::OptText(role.host().map(Label::as_str)),
                Arg::Int(now.as_millisecond()),
            ],
        )
        .await
        .map(drop)
    }

    /// A live (not revoked) token's digest and role.
    async fn live_token(&mut self, id: &TokenId) -> Result<Option<(Vec<u8>, Role)>, StoreError> {
        let rows = self
            .query(
                "reading a token",
                "SELECT digest, role, host FROM tokens WHERE id = $1 AND revoked_ms IS NULL",
                &[Arg::Text(id.as_str())],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let role: String = r.get(1)?;
        let host: Option<String> = r.get(2)?;
        Ok(Some((r.get(0)?, Role::from_parts(&role, host.as_deref())?)))
    }

    /// Every token: (id, role, host, created, revoked), oldest first.
    async fn tokens(
        &mut self,
    ) -> Result<Vec<(String, String, Option<String>, i64, Option<i64>)>, StoreError> {
        self.query(
            "listing tokens",
            "SELECT id, role, host, created_ms, revoked_ms FROM tokens ORDER BY created_ms, id",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .collect()
    }

    /// Revoke a live token; how many were (0 or 1).
    async fn revoke_token(&mut self, id: &TokenId, now: Timestamp) -> Result<u64, StoreError> {
        self.execute(
            "revoking a token",
            "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
            &[Arg::Text(id.as_str()), Arg::Int(now.as_millisecond())],
        )
        .await
    }
}

/// The quota in `r`'s columns from `k` on, in `quota_rows!`' order (from `resource`).
fn quota_at(r: &Row, k: usize) -> Result<TrafficQuota, StoreError> {
    TrafficQuota::from_stored(
        &r.get::<String>(k)?,
        &r.get::<String>(k + 1)?,
        r.get(k + 2)?,
        &r.get::<String>(k + 3)?,
        (r.get(k + 4)?, r.get(k + 5)?),
        r.get(k + 6)?,
        r.get(k + 7)?,
        (r.get(k + 8)?, r.get(k + 9)?),
    )
    .map_err(|reason| StoreError::Database {
        what: "reading traffic quotas",
        source: cause(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_in_sqlites_spelling() {
        for (pg, sqlite) in [
            (
                "UPDATE t SET a = $2 WHERE id = $1",
                "UPDATE t SET a = ?2 WHERE id = ?1",
            ),
            (
                "SELECT a FROM t WHERE id = ANY($1::TEXT[]) AND b = $2",
                "SELECT a FROM t WHERE id IN (SELECT value FROM json_each(?1)) AND b = ?2",
            ),
            (
                "WHERE (k = 'i' AND s = ANY($1::TEXT[])) OR (k = 'p' AND s = ANY($12::TEXT[]))",
                "WHERE (k = 'i' AND s IN (SELECT value FROM json_each(?1))) \
                 OR (k = 'p' AND s IN (SELECT value FROM json_each(?12)))",
            ),
            // Not a list: left as it is, placeholders aside.
            (
                "WHERE a = ANY($x) AND b = $1",
                "WHERE a = ANY(?x) AND b = ?1",
            ),
        ] {
            assert_eq!(for_sqlite(pg), sqlite, "{pg}");
        }
        assert!(matches!(for_sqlite("SELECT 1"), Cow::Borrowed(_)));
    }
}

//! The store's operations, written once over [`Statements`]: resolving limits along an
//! instance's chain, check-and-reserve, settling and expiring reservations, usage,
//! scopes, traffic quotas and usage, report ingestion with its idempotency keys, stats
//! and tokens.
//!
//! Each function is one unit of work; the caller runs it inside one transaction (SQLite:
//! the group-commit writer's savepoint or [`super::sqlite::SqliteStore`]'s own; PostgreSQL:
//! a transaction on a pooled connection) and so decides only *where*, never *what*.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::backend::{Hosts, Statements, clamp};
use super::model::{
    Deltas, Limit, Membership, ReservationId, Scope, Standing, StoreError, check, standings_from,
};
use super::report::{Batch, Ingested, five_minutes, hourly};
use super::spec::Spec;
use super::statement::{BILLED_PERCENTILE, GENESIS, Statement};
use super::traffic::{
    Elsewhere, Judged, Measure, RATE_QUOTA_PERCENTILE, ShownTrafficQuota, StorePeriod, Topup,
    TrafficQuota, TrafficResource, resolve,
};
use super::view::{
    AgentView, InstanceQuota, PercentileUse, ScopeView, Stats, TrafficUsage, resource_views,
    traffic_usage,
};
use crate::model::calendar::{PeriodKind, period_containing};
use crate::model::ids::{InstanceId, Label};
use crate::model::percentile::{Interval, Percentile, Percentiles, of_curve, over_by};
use crate::model::token::{Role, Token, TokenId, TokenInfo};

/// What becomes of a reservation that is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Its deltas become use.
    Commit,
    /// It is dropped unused.
    Rollback,
}

/// When a reservation made at `now` for `expires_in` lapses, in Unix milliseconds.
pub fn expiry(now: Timestamp, expires_in: Duration) -> Result<i64, StoreError> {
    i64::try_from(expires_in.as_millis())
        .ok()
        .and_then(|ms| now.as_millisecond().checked_add(ms))
        .ok_or_else(|| StoreError::Invalid {
            field: "expires_in".into(),
            reason: "too long".into(),
        })
}

fn ts(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

pub(crate) fn not_found(scope: &Scope) -> StoreError {
    let (kind, name) = scope.key();
    StoreError::NotFound {
        what: kind,
        name: name.to_owned(),
    }
}

/// Each resource's limit (resolved), use and reservations for `instance`: every
/// resource that has a limit anywhere in its chain or any use.
pub(crate) async fn standings<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    now: Timestamp,
) -> Result<Vec<Standing>, StoreError> {
    let (project, class) = s.chain_of(instance).await?;
    let limits = s
        .chain_limits(instance, project.as_deref(), class.as_deref())
        .await?;
    let uses = s.uses(instance, now).await?;
    standings_from(limits, uses)
}

/// Would `deltas` fit? Nothing is reserved.
pub(crate) async fn limit_check<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    deltas: &Deltas,
) -> Result<(), StoreError> {
    check(&standings(s, instance, Timestamp::now()).await?, deltas).map_err(StoreError::OverQuota)
}

/// Check `deltas` against the standings and, if they fit, record them as reservation
/// `id`, lapsing after `expires_in`; when it lapses.
pub(crate) async fn reserve<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    deltas: &Deltas,
    id: &ReservationId,
    expires_in: Duration,
) -> Result<Timestamp, StoreError> {
    s.lock_instance(instance).await?;
    let now = Timestamp::now();
    let expires = expiry(now, expires_in)?;
    check(&standings(s, instance, now).await?, deltas).map_err(StoreError::OverQuota)?;
    for (resource, delta) in deltas {
        s.put_reservation(id.as_str(), instance, resource, *delta, expires)
            .await?;
    }
    Ok(Timestamp::from_millisecond(expires).unwrap_or(now))
}

/// Commit or roll back reservation `id`, under its instance's lock; unknown (or settled
/// meanwhile by someone else): not found.
pub(crate) async fn settle<S: Statements>(
    s: &mut S,
    id: &str,
    how: Settle,
) -> Result<(), StoreError> {
    s.lock_reservation(id).await?;
    let rows = s.take_reservation(id).await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound {
            what: "reservation",
            name: id.to_owned(),
        });
    }
    if how == Settle::Commit {
        for (instance, resource, delta) in rows {
            s.add_usage(&instance, &resource, delta).await?;
        }
    }
    Ok(())
}

/// Drop reservations that lapsed by `now`; how many reservations (not rows).
pub(crate) async fn expire_reservations<S: Statements>(
    s: &mut S,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let ids: BTreeSet<String> = s.expire_reservations(now).await?.into_iter().collect();
    Ok(ids.len())
}

/// Drop lapsed reservations and report keys older than `keys_before`; (reservations,
/// keys) removed.
pub(crate) async fn expire<S: Statements>(
    s: &mut S,
    now: Timestamp,
    keys_before: Timestamp,
) -> Result<(usize, usize), StoreError> {
    let reservations = expire_reservations(s, now).await?;
    let keys = s.prune_reports(keys_before).await? as usize;
    Ok((reservations, keys))
}

/// How long after a billing month ends its statement waits for late reports.
pub const STATEMENT_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// How far back an instance's last report may be for its month to be closed.
const CLOSE_LOOKBACK: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 70);

/// Write the statement of each instance's last closed billing month that has none yet
/// (its month runs from its monthly quota's billing day, else the 1st, in `tz`), once
/// [`STATEMENT_GRACE`] has passed; how many were written. An instance that has never
/// had a statement and moved nothing that month gets none.
pub(crate) async fn close_periods<S: Statements>(
    s: &mut S,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<usize, StoreError> {
    let since = now.checked_sub(CLOSE_LOOKBACK).unwrap_or(Timestamp::MIN);
    let ids = s.reported_since(since.as_millisecond()).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let in_force = quotas_in_force(s, &refs).await?;
    let latest = s.latest_statements(&refs).await?;
    let mut written = 0;
    for (id, force) in refs.iter().zip(in_force) {
        let Ok(instance) = InstanceId::new(id) else {
            continue;
        };
        let reset_day = force
            .quotas
            .iter()
            .find(|(q, _)| q.period == StorePeriod::Month && !q.pool)
            .map_or(1, |(q, _)| q.reset_day);
        let kind = PeriodKind::Month(reset_day);
        let Ok(current) = period_containing(kind, now, tz) else {
            continue;
        };
        if now
            < current
                .start
                .checked_add(STATEMENT_GRACE)
                .unwrap_or(Timestamp::MAX)
        {
            continue;
        }
        let before = current.start - jiff::SignedDuration::from_secs(1);
        let Ok(month) = period_containing(kind, before, tz) else {
            continue;
        };
        let prev = latest.get(*id);
        if prev.is_some_and(|(start, _)| *start >= month.start.as_millisecond()) {
            continue;
        }
        let span = (month.start, month.end);
        let usage = traffic_usage_in(
            s,
            &instance,
            StorePeriod::Month,
            span,
            (month.start, now, tz),
        )
        .await?;
        if prev.is_none() && usage.total == 0 {
            continue;
        }
        let p = Percentile::new(BILLED_PERCENTILE).unwrap_or(Percentile::P95);
        let figures = percentiles_of(s, &[id], span, now, p).await?;
        let statement = Statement {
            instance: instance.to_string(),
            start: month.start.to_string(),
            end: month.end.to_string(),
            reset_day,
            upload_bytes: usage.upload,
            download_bytes: usage.download,
            total_bytes: usage.total,
            percentiles: figures
                .get(*id)
                .map_or_else(|| PercentileUse::none(p), PercentileUse::from),
            quotas: usage.quotas,
            written_at: now.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
        .sealed(prev.map_or(GENESIS, |(_, h)| h.as_str()));
        if s.insert_statement(&statement, month.start.as_millisecond())
            .await?
        {
            written += 1;
        }
    }
    Ok(written)
}

/// Where a percentile's data ends: the period's end, or the last interval over by `now`
/// (the open one would read low), Unix seconds.
fn read_to(end: Timestamp, now: Timestamp) -> i64 {
    end.as_second().min(over_by(now.as_second()))
}

/// One curve per instance of `ids`, interval starts in seconds.
async fn curves<S: Statements>(
    s: &mut S,
    ids: &[&str],
    (start, end): (i64, i64),
) -> Result<BTreeMap<String, Vec<(i64, Interval)>>, StoreError> {
    let mut all = s
        .intervals_of(ids, (start.saturating_mul(1000), end.saturating_mul(1000)))
        .await?;
    for curve in all.values_mut() {
        for (b, _) in curve.iter_mut() {
            *b = b.div_euclid(1000);
        }
    }
    Ok(all)
}

/// Each of `ids`' `p`th percentile of 5-minute rates over [start, end) as of `now`, every
/// host's bytes summed per interval; an instance with no interval in it is absent.
pub(crate) async fn percentiles_of<S: Statements>(
    s: &mut S,
    ids: &[&str],
    (start, end): (Timestamp, Timestamp),
    now: Timestamp,
    p: Percentile,
) -> Result<BTreeMap<String, Percentiles>, StoreError> {
    let window = (start.as_second(), read_to(end, now));
    Ok(curves(s, ids, window)
        .await?
        .into_iter()
        .filter_map(|(id, curve)| of_curve(p, &curve, window).map(|f| (id, f)))
        .collect())
}

/// The percentile of `project`'s curve: its instances' bytes summed per interval (what a
/// pooled commitment is billed on). `None` when none of them has an interval in it.
pub(crate) async fn project_percentiles<S: Statements>(
    s: &mut S,
    project: &Label,
    (start, end): (Timestamp, Timestamp),
    now: Timestamp,
    p: Percentile,
) -> Result<Option<Percentiles>, StoreError> {
    let members = s.members_of(project).await?;
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    let window = (start.as_second(), read_to(end, now));
    let mut summed: BTreeMap<i64, Interval> = BTreeMap::new();
    for (b, i) in curves(s, &ids, window).await?.into_values().flatten() {
        summed.entry(b).or_default().add(&i);
    }
    let curve: Vec<(i64, Interval)> = summed.into_iter().collect();
    Ok(of_curve(p, &curve, window))
}

/// The percentile a committed-rate quota bills.
fn rate_percentile() -> Percentile {
    Percentile::new(RATE_QUOTA_PERCENTILE).unwrap_or(Percentile::P95)
}

/// A committed-rate quota's figures over `window` so far at `now`: the instance's own
/// curve, or for a pool its project's summed one (`None`: no interval, or a pool of an
/// instance in no project).
async fn rate_so_far<S: Statements>(
    s: &mut S,
    instance: &str,
    project: Option<&str>,
    pool: bool,
    window: Window,
    now: Timestamp,
) -> Result<Option<Percentiles>, StoreError> {
    if !pool {
        let mut all = percentiles_of(s, &[instance], window, now, rate_percentile()).await?;
        return Ok(all.remove(instance));
    }
    let Some(project) = project.and_then(|p| Label::new(p).ok()) else {
        return Ok(None);
    };
    project_percentiles(s, &project, window, now, rate_percentile()).await
}

/// The panel's real counts replace the store's (the cure for drift).
pub(crate) async fn usage_set<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    counts: &BTreeMap<Label, u64>,
) -> Result<(), StoreError> {
    s.lock_instance(instance).await?;
    for (resource, n) in counts {
        let n = i64::try_from(*n).map_err(|_| StoreError::Invalid {
            field: resource.as_str().into(),
            reason: "too large".into(),
        })?;
        s.set_usage(instance, resource, n).await?;
    }
    Ok(())
}

/// A counted resource's use back to zero (for one instance or all); how many rows.
pub(crate) async fn usage_reset<S: Statements>(
    s: &mut S,
    resource: &Label,
    instance: Option<&InstanceId>,
) -> Result<usize, StoreError> {
    Ok(s.reset_usage(resource, instance).await? as usize)
}

/// Forget an instance: its use, reservations, limits, traffic quotas and membership.
/// Its traffic history stays (it is billing data).
pub(crate) async fn destroy_instance<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
) -> Result<(), StoreError> {
    s.lock_instance(instance).await?;
    s.delete_instance(instance).await
}

/// Forget a project: its limits and class; its instances leave it (they keep their own
/// use and fall back to their class and the default).
pub(crate) async fn destroy_project<S: Statements>(
    s: &mut S,
    project: &Label,
) -> Result<(), StoreError> {
    s.clear_scope(&Scope::Project(project.clone())).await?;
    s.delete_project(project).await
}

/// Set (`Some`) or remove (`None`) the limit of `resource` at `scope`.
pub(crate) async fn set_limit<S: Statements>(
    s: &mut S,
    scope: &Scope,
    resource: &Label,
    limit: Option<Limit>,
) -> Result<(), StoreError> {
    match limit {
        Some(l) => s.set_limit(scope, resource, l).await,
        None => s.remove_limit(scope, resource).await,
    }
}

/// Replace what is set at `scope` with `spec` (and, for an instance or a project, its
/// membership or class).
pub(crate) async fn put_scope<S: Statements>(
    s: &mut S,
    scope: &Scope,
    spec: &Spec,
) -> Result<(), StoreError> {
    if !matches!(scope, Scope::Project(_))
        && let Some(n) = spec.traffic.iter().position(|q| q.pool)
    {
        return Err(StoreError::Invalid {
            field: format!("traffic[{n}].pool"),
            reason: "only a project's quota can be a pool (the sum of its instances)".into(),
        });
    }
    s.clear_scope(scope).await?;
    match scope {
        Scope::Instance(i) => {
            s.lock_instance(i).await?;
            let m = Membership {
                project: spec.project.clone(),
                class: spec.class.clone(),
            };
            s.set_membership(i, &m).await?;
        }
        Scope::Project(p) => s.set_project_class(p, spec.class.as_ref()).await?,
        Scope::Class(_) | Scope::Default => {}
    }
    for (resource, limit) in &spec.limits {
        s.set_limit(scope, resource, *limit).await?;
    }
    for q in &spec.traffic {
        s.set_traffic_quota(scope, q).await?;
    }
    Ok(())
}

/// What is set at `scope`, or `None` when nothing is (and, for a project, it is unknown).
pub(crate) async fn scope_view<S: Statements>(
    s: &mut S,
    scope: &Scope,
) -> Result<Option<ScopeView>, StoreError> {
    let limits = s.scope_limits(scope).await?;
    let traffic = s.scope_traffic_quotas(scope).await?;
    let (_, name) = scope.key();
    let (class, known) = match scope {
        Scope::Project(p) => {
            let class = s.project_class(p).await?;
            let known = s
                .scope_names("project")
                .await?
                .iter()
                .any(|n| n == p.as_str());
            (class, known)
        }
        Scope::Instance(i) => {
            let m = s.membership(i).await?;
            let any = m.project.is_some() || m.class.is_some();
            (m.class.map(|c| c.as_str().to_owned()), any)
        }
        Scope::Class(_) => (
            None,
            s.scope_names("class").await?.iter().any(|n| n == name),
        ),
        Scope::Default => (None, true),
    };
    Ok(ScopeView::assemble(scope, class, known, limits, &traffic))
}

/// What is set at exactly `scope`; not found when nothing is.
pub(crate) async fn get_scope<S: Statements>(
    s: &mut S,
    scope: &Scope,
) -> Result<ScopeView, StoreError> {
    scope_view(s, scope).await?.ok_or_else(|| not_found(scope))
}

/// Every class or project (`kind`) with what is set for it.
pub(crate) async fn list_scopes<S: Statements>(
    s: &mut S,
    kind: &str,
) -> Result<Vec<ScopeView>, StoreError> {
    let mut out = Vec::new();
    for name in s.scope_names(kind).await? {
        let Ok(l) = Label::new(&name) else { continue };
        let scope = if kind == "class" {
            Scope::Class(l)
        } else {
            Scope::Project(l)
        };
        out.extend(scope_view(s, &scope).await?);
    }
    Ok(out)
}

/// Remove what `scope` sets (a project also loses its class and its instances leave
/// it; an instance its overrides and membership); not found when nothing is set.
pub(crate) async fn delete_scope<S: Statements>(
    s: &mut S,
    scope: &Scope,
) -> Result<(), StoreError> {
    if scope_view(s, scope).await?.is_none() {
        return Err(not_found(scope));
    }
    match scope {
        Scope::Project(p) => destroy_project(s, p).await,
        Scope::Instance(i) => {
            s.clear_scope(scope).await?;
            s.set_membership(i, &Membership::default()).await
        }
        Scope::Class(_) | Scope::Default => s.clear_scope(scope).await.map(drop),
    }
}

/// The traffic quotas in force for `instance`: per (resource, period), the most
/// specific level that sets one, with that level's name.
pub(crate) async fn traffic_quotas<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
) -> Result<Vec<(TrafficQuota, &'static str)>, StoreError> {
    let mut all = quotas_in_force(s, &[instance.as_str()]).await?;
    Ok(all.pop().map(|f| f.quotas).unwrap_or_default())
}

/// One instance's quotas in force, and the project they came through.
struct InForce {
    project: Option<String>,
    quotas: Vec<(TrafficQuota, &'static str)>,
}

/// The traffic quotas in force for each of `ids` (in their order), in two statements
/// whatever their number: an agent asks about every instance on its host at once.
async fn quotas_in_force<S: Statements>(
    s: &mut S,
    ids: &[&str],
) -> Result<Vec<InForce>, StoreError> {
    let chains = s.chains_of(ids).await?;
    let projects: BTreeSet<&str> = chains.values().filter_map(|c| c.0.as_deref()).collect();
    let classes: BTreeSet<&str> = chains.values().filter_map(|c| c.1.as_deref()).collect();
    let rows = s
        .chains_traffic_quotas(
            ids,
            &projects.into_iter().collect::<Vec<_>>(),
            &classes.into_iter().collect::<Vec<_>>(),
        )
        .await?;
    Ok(ids
        .iter()
        .map(|id| {
            let (project, class) = chains.get(*id).cloned().unwrap_or_default();
            let on_chain = rows.iter().filter(|(kind, scope, _)| match kind.as_str() {
                "instance" => scope == id,
                "project" => project.as_deref() == Some(scope),
                "class" => class.as_deref() == Some(scope),
                _ => true,
            });
            InForce {
                quotas: resolve(on_chain.map(|(kind, _, q)| (kind.clone(), *q))),
                project,
            }
        })
        .collect())
}
/// An instance's membership, limits and traffic quotas, as the panel shows them.
pub(crate) async fn instance_quota<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
) -> Result<InstanceQuota, StoreError> {
    let membership = s.membership(instance).await?;
    let limits = resource_views(standings(s, instance, Timestamp::now()).await?);
    let traffic = ShownTrafficQuota::all(&traffic_quotas(s, instance).await?);
    Ok(InstanceQuota {
        instance: instance.as_str().into(),
        membership,
        limits,
        traffic,
    })
}

/// The traffic quotas in force for each of `instances` at `now` (what an agent fetches),
/// their limits with the current periods' top-ups. Asked by an `agent`, each quota
/// carries what the other hosts reported of the instance in its current period.
///
/// A handful of statements whatever the number of instances (one per kind of question,
/// and per distinct period for the fleet's counts): an agent asks about every instance
/// on its host at once, and a statement per instance made that a thousand round trips.
pub(crate) async fn traffic_quotas_of<S: Statements>(
    s: &mut S,
    instances: &[InstanceId],
    (now, tz): (Timestamp, &TimeZone),
    agent: Option<&Label>,
) -> Result<BTreeMap<String, Vec<ShownTrafficQuota>>, StoreError> {
    let ids: Vec<&str> = instances.iter().map(InstanceId::as_str).collect();
    let mut in_force = quotas_in_force(s, &ids).await?;
    let bounds: Vec<Vec<Option<(Timestamp, Timestamp)>>> = in_force
        .iter()
        .map(|f| f.quotas.iter().map(|(q, _)| q.bounds(now, tz)).collect())
        .collect();
    // Only the top-ups of periods that end after the earliest of these start (not every
    // one the instances ever bought).
    let earliest = bounds.iter().flatten().flatten().map(|b| b.0).min();
    let mut topups: BTreeMap<String, Vec<Topup>> = BTreeMap::new();
    if let Some(earliest) = earliest {
        for (i, t) in s.topups_of(&ids, earliest).await? {
            topups.entry(i).or_default().push(t);
        }
    }
    let mut shown: Vec<Vec<ShownTrafficQuota>> = Vec::with_capacity(ids.len());
    for ((id, f), b) in ids.iter().zip(&mut in_force).zip(&bounds) {
        let mine = topups.get(*id).map_or(&[][..], Vec::as_slice);
        let topped = add_topups(&mut f.quotas, b, mine);
        let mut show = ShownTrafficQuota::all(&f.quotas);
        for (sh, t) in show.iter_mut().zip(topped) {
            sh.topups = (t > 0).then_some(t);
        }
        shown.push(show);
    }
    if let Some(agent) = agent {
        let counts = FleetCounts::read(s, agent, &ids, &in_force, &bounds).await?;
        let rates = FleetRates::read(s, &ids, &in_force, &bounds, now).await?;
        for (((id, f), b), show) in ids.iter().zip(&in_force).zip(&bounds).zip(&mut shown) {
            for (((q, _), b), sh) in f.quotas.iter().zip(b).zip(show) {
                let Some(window) = *b else { continue };
                match q.measure {
                    Measure::Volume { resource, .. } => {
                        let (up, down) = counts.elsewhere(id, f.project.as_deref(), q.pool, window);
                        sh.elsewhere = Some(Elsewhere {
                            bytes: resource.of(up, down),
                            period_start: window.0,
                        });
                    }
                    Measure::Rate95th { direction, commit } => {
                        let rate = rates
                            .get(id, f.project.as_deref(), q.pool, window)
                            .and_then(|p| p.rate(direction))
                            .map_or(0, |r| r.bits_per_sec());
                        sh.judged = Some(Judged {
                            period_start: window.0,
                            rate_bps: rate,
                            exceeded: rate > commit.bits_per_sec(),
                        });
                    }
                }
            }
        }
    }
    Ok(ids.iter().map(|id| (*id).to_owned()).zip(shown).collect())
}

/// A period's start and end.
type Window = (Timestamp, Timestamp);

/// What other hosts reported, per period, of the instances (and pools) an agent asked
/// about: the sums its own ledger does not hold.
struct FleetCounts {
    /// Per period: each instance's bytes that other hosts reported.
    other: BTreeMap<Window, BTreeMap<String, (u64, u64)>>,
    /// Per period: each pool's bytes from every host.
    pools: BTreeMap<Window, BTreeMap<String, (u64, u64)>>,
    /// Per period: each pooled instance's bytes that this host reported (its ledger
    /// counts them, so they come off the pool's count).
    own: BTreeMap<Window, BTreeMap<String, (u64, u64)>>,
}

/// The members of a set as a list to bind.
fn list<'a>(set: &BTreeSet<&'a str>) -> Vec<&'a str> {
    set.iter().copied().collect()
}

impl FleetCounts {
    /// One statement per period and kind of sum.
    async fn read<S: Statements>(
        s: &mut S,
        agent: &Label,
        ids: &[&str],
        in_force: &[InForce],
        bounds: &[Vec<Option<Window>>],
    ) -> Result<FleetCounts, StoreError> {
        let mut others: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
        let mut pools: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
        let mut own: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
        for ((id, f), b) in ids.iter().zip(in_force).zip(bounds) {
            for ((q, _), b) in f.quotas.iter().zip(b) {
                let Some(window) = *b else { continue };
                // A committed rate is judged here on the fleet's curve: no sums to hand.
                if q.volume().is_none() {
                    continue;
                }
                match (q.pool, f.project.as_deref()) {
                    (false, _) => {
                        others.entry(window).or_default().insert(id);
                    }
                    (true, Some(p)) => {
                        pools.entry(window).or_default().insert(p);
                        own.entry(window).or_default().insert(id);
                    }
                    (true, None) => {}
                }
            }
        }
        let mut counts = FleetCounts {
            other: BTreeMap::new(),
            pools: BTreeMap::new(),
            own: BTreeMap::new(),
        };
        for (window, set) in &others {
            let sums = s
                .traffic_by_hosts(&list(set), Hosts::Other(agent), *window)
                .await?;
            counts.other.insert(*window, sums);
        }
        for (window, set) in &pools {
            counts
                .pools
                .insert(*window, s.pools_traffic(&list(set), *window).await?);
        }
        for (window, set) in &own {
            let sums = s
                .traffic_by_hosts(&list(set), Hosts::Only(agent), *window)
                .await?;
            counts.own.insert(*window, sums);
        }
        Ok(counts)
    }

    /// What `id`'s quota over `window` must add to this host's count: the other hosts'
    /// bytes of the instance, or for a pool the whole project's count on every host but
    /// this host's own reports of this instance.
    fn elsewhere(&self, id: &str, project: Option<&str>, pool: bool, window: Window) -> (u64, u64) {
        let get = |m: &BTreeMap<Window, BTreeMap<String, (u64, u64)>>, key: &str| {
            m.get(&window)
                .and_then(|sums| sums.get(key))
                .copied()
                .unwrap_or((0, 0))
        };
        if !pool {
            return get(&self.other, id);
        }
        let Some(project) = project else {
            return (0, 0);
        };
        let total = get(&self.pools, project);
        let mine = get(&self.own, id);
        (
            total.0.saturating_sub(mine.0),
            total.1.saturating_sub(mine.1),
        )
    }
}

/// The committed-rate quotas' figures so far, per period: one read per period for the
/// instances, and one per pooled project, whatever the number of instances.
struct FleetRates {
    own: BTreeMap<Window, BTreeMap<String, Percentiles>>,
    pools: BTreeMap<(Window, String), Option<Percentiles>>,
}

impl FleetRates {
    async fn read<S: Statements>(
        s: &mut S,
        ids: &[&str],
        in_force: &[InForce],
        bounds: &[Vec<Option<Window>>],
        now: Timestamp,
    ) -> Result<FleetRates, StoreError> {
        let mut own: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
        let mut pools: BTreeSet<(Window, &str)> = BTreeSet::new();
        for ((id, f), b) in ids.iter().zip(in_force).zip(bounds) {
            for ((q, _), b) in f.quotas.iter().zip(b) {
                let (Some(window), Measure::Rate95th { .. }) = (*b, q.measure) else {
                    continue;
                };
                match (q.pool, f.project.as_deref()) {
                    (false, _) => {
                        own.entry(window).or_default().insert(id);
                    }
                    (true, Some(p)) => {
                        pools.insert((window, p));
                    }
                    (true, None) => {}
                }
            }
        }
        let mut rates = FleetRates {
            own: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        for (window, set) in &own {
            let figures = percentiles_of(s, &list(set), *window, now, rate_percentile()).await?;
            rates.own.insert(*window, figures);
        }
        for (window, project) in pools {
            let figure = rate_so_far(s, "", Some(project), true, window, now).await?;
            rates.pools.insert((window, project.to_owned()), figure);
        }
        Ok(rates)
    }

    fn get(
        &self,
        id: &str,
        project: Option<&str>,
        pool: bool,
        window: Window,
    ) -> Option<&Percentiles> {
        if pool {
            return self.pools.get(&(window, project?.to_owned()))?.as_ref();
        }
        self.own.get(&window)?.get(id)
    }
}

/// Each quota's limit raised by the top-ups bought for its period holding `at`; the
/// bytes each got.
pub(crate) async fn with_topups<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    quotas: &mut [(TrafficQuota, &'static str)],
    at: Timestamp,
    tz: &TimeZone,
) -> Result<Vec<u64>, StoreError> {
    let bounds: Vec<Option<Window>> = quotas.iter().map(|(q, _)| q.bounds(at, tz)).collect();
    let Some(earliest) = bounds.iter().flatten().map(|b| b.0).min() else {
        return Ok(vec![0; quotas.len()]);
    };
    let all: Vec<Topup> = s
        .topups_of(&[instance.as_str()], earliest)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    Ok(add_topups(quotas, &bounds, &all))
}

/// Raise each quota's limit (its period's `bounds`) by the `topups` bought for that
/// period; the bytes each got.
fn add_topups(
    quotas: &mut [(TrafficQuota, &'static str)],
    bounds: &[Option<Window>],
    topups: &[Topup],
) -> Vec<u64> {
    let mut added = Vec::with_capacity(quotas.len());
    for ((q, _), b) in quotas.iter_mut().zip(bounds) {
        // An instance's top-up is its own: a pool's limit is the project's. Bytes
        // bought raise a volume, never a committed rate.
        let Measure::Volume { resource, limit } = &mut q.measure else {
            added.push(0);
            continue;
        };
        if q.pool {
            added.push(0);
            continue;
        }
        let start = b.map(|b| b.0);
        let bytes = topups
            .iter()
            .filter(|t| {
                Some(t.start) == start
                    && t.resource == resource.as_str()
                    && t.period == q.period.as_str()
            })
            .fold(0u64, |sum, t| sum.saturating_add(t.bytes));
        *limit = crate::model::units::Bytes::new(limit.get().saturating_add(bytes));
        added.push(bytes);
    }
    added
}

/// Buy `bytes` more of `resource` for the current `period` of `instance`'s quota: the
/// limit of that period rises by it. A quota must be in force to be topped up.
pub(crate) async fn add_topup<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    (resource, period, bytes): (TrafficResource, StorePeriod, crate::model::units::Bytes),
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Topup, StoreError> {
    let quotas = traffic_quotas(s, instance).await?;
    let Some((q, _)) = quotas.iter().find(|(q, _)| {
        q.volume().is_some_and(|(r, _)| r == resource) && q.period == period && !q.pool
    }) else {
        return Err(StoreError::Invalid {
            field: "resource".into(),
            reason: format!("instance {instance} has no {resource} quota per {period} to top up"),
        });
    };
    let (start, end) = q.bounds(now, tz).ok_or_else(|| StoreError::Invalid {
        field: "period".into(),
        reason: "outside the calendar".into(),
    })?;
    let topup = Topup {
        id: super::model::ReservationId::random()?.as_str().to_owned(),
        resource: resource.as_str().to_owned(),
        period: period.as_str().to_owned(),
        bytes: bytes.get(),
        start,
        end,
        created: now,
    };
    s.add_topup(&topup, instance).await?;
    Ok(topup)
}

/// A project's traffic (all its instances') in [start, end) of `period`, with its
/// pooled quotas for that period, each over its own period holding `at`.
pub(crate) async fn project_usage_in<S: Statements>(
    s: &mut S,
    project: &Label,
    period: StorePeriod,
    (start, end): (Timestamp, Timestamp),
    (at, now, tz): (Timestamp, Timestamp, &TimeZone),
) -> Result<TrafficUsage, StoreError> {
    let traffic = s.project_traffic(project.as_str(), start, end).await?;
    let mut quotas = Vec::new();
    for q in s
        .scope_traffic_quotas(&Scope::Project(project.clone()))
        .await?
    {
        if !q.pool || q.period != period {
            continue;
        }
        let bounds = q.bounds(at, tz).unwrap_or((start, end));
        let used = match q.measure {
            Measure::Volume { resource, .. } => {
                let (up, down) = if bounds == (start, end) {
                    traffic
                } else {
                    s.project_traffic(project.as_str(), bounds.0, bounds.1)
                        .await?
                };
                resource.of(up, down)
            }
            Measure::Rate95th { direction, .. } => {
                project_percentiles(s, project, bounds, now, rate_percentile())
                    .await?
                    .and_then(|p| p.rate(direction))
                    .map_or(0, |r| r.bits_per_sec())
            }
        };
        quotas.push((q, bounds, used, 0));
    }
    Ok(traffic_usage(
        project.as_str(),
        period,
        (start, end),
        traffic,
        quotas,
    ))
}

/// `instance`'s traffic in [start, end) of `period`, with its quotas for that period,
/// each over its own period holding `at` (a monthly quota's starts on its billing day).
pub(crate) async fn traffic_usage_in<S: Statements>(
    s: &mut S,
    instance: &InstanceId,
    period: StorePeriod,
    (start, end): (Timestamp, Timestamp),
    (at, now, tz): (Timestamp, Timestamp, &TimeZone),
) -> Result<TrafficUsage, StoreError> {
    let traffic = s.traffic_between(instance, start, end).await?;
    let mut quotas = Vec::new();
    let mut resolved = traffic_quotas(s, instance).await?;
    let topped = with_topups(s, instance, &mut resolved, at, tz).await?;
    for ((q, _), topups) in resolved.into_iter().zip(topped) {
        if q.period != period {
            continue;
        }
        let bounds = q.bounds(at, tz).unwrap_or((start, end));
        let used = match q.measure {
            Measure::Volume { resource, .. } => {
                let (up, down) = if q.pool {
                    match s.chain_of(instance).await?.0 {
                        Some(p) => s.project_traffic(&p, bounds.0, bounds.1).await?,
                        None => (0, 0),
                    }
                } else if bounds == (start, end) {
                    traffic
                } else {
                    s.traffic_between(instance, bounds.0, bounds.1).await?
                };
                resource.of(up, down)
            }
            Measure::Rate95th { direction, .. } => {
                let project = if q.pool {
                    s.chain_of(instance).await?.0
                } else {
                    None
                };
                rate_so_far(
                    s,
                    instance.as_str(),
                    project.as_deref(),
                    q.pool,
                    bounds,
                    now,
                )
                .await?
                .and_then(|p| p.rate(direction))
                .map_or(0, |r| r.bits_per_sec())
            }
        };
        quotas.push((q, bounds, used, topups));
    }
    Ok(traffic_usage(
        instance.as_str(),
        period,
        (start, end),
        traffic,
        quotas,
    ))
}

/// What a sample may claim: nothing an agent says is trusted because it has a token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReportBounds {
    /// The oldest a sample may be (the report keys' retention).
    pub keep: std::time::Duration,
    /// The most bytes per second a sample may claim since the previous one.
    pub max_rate: crate::model::units::Rate,
}

/// How far ahead of the store's clock a sample may lie (agents' clocks drift).
const MAX_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Add the batches not seen before to the hourly traffic; record their keys. A batch
/// listed twice in one report is applied once.
///
/// Every new sample is checked first: its time within (now − keep, now + 5 min], its
/// bytes within what a link of `max_rate` carries since the agent's previous sample of
/// the instance (for its first one: since the oldest time a sample may have). One bad
/// sample refuses the whole report, naming it; the caller's transaction then rolls
/// back, keys included. A sample whose span another host also reported for the
/// instance (a live migration) is kept, counted and logged.
pub(crate) async fn ingest<S: Statements>(
    s: &mut S,
    agent: &Label,
    batches: &[Batch],
    tz: &TimeZone,
    bounds: ReportBounds,
    now: Timestamp,
) -> Result<Ingested, StoreError> {
    let mut out = Ingested::default();
    let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
    let fresh = s.record_reports(agent, &seqs, now).await?;
    let mut seen = BTreeSet::new();
    let mut applied = Vec::with_capacity(batches.len());
    for (i, b) in batches.iter().enumerate() {
        if !fresh.contains(&clamp(b.seq)) || !seen.insert(b.seq) {
            out.duplicates.push(b.seq);
            continue;
        }
        out.applied.push(b.seq);
        applied.push((i, b));
    }
    check_samples(s, agent, &applied, bounds, now).await?;
    let (hours, samples) = hourly(applied.iter().map(|(_, b)| *b), tz);
    out.samples = samples;
    if !hours.is_empty() {
        s.add_traffic(agent, &hours).await?;
        s.add_intervals(&five_minutes(applied.iter().map(|(_, b)| *b)))
            .await?;
    }
    if let Some(last) = batches.iter().map(|b| b.seq).max() {
        s.touch_agent(agent, now, last).await?;
    }
    Ok(out)
}

/// The checks of [`ingest`] on the batches it applies (each with its place in the
/// report, which errors name), and the report marks they move.
///
/// The byte bound is per instance over the whole report: what a link of `max_rate`
/// carries since the agent's previous sample of it, measured both on the agent's clock
/// (from its previous sample's time to its latest one here) and on the store's (since
/// the agent's previous report arrived), whichever is longer. The store's clock keeps a
/// host whose clock stepped back from being refused for good; the agent's lets a
/// spool that was held back by an outage through.
async fn check_samples<S: Statements>(
    s: &mut S,
    agent: &Label,
    applied: &[(usize, &Batch)],
    bounds: ReportBounds,
    now: Timestamp,
) -> Result<(), StoreError> {
    let keep = jiff::SignedDuration::try_from(bounds.keep).unwrap_or(jiff::SignedDuration::MAX);
    let oldest = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
    let newest = now.checked_add(MAX_AHEAD).unwrap_or(Timestamp::MAX);
    let bytes_per_ms = bounds.max_rate.bits_per_sec() as f64 / 8.0 / 1000.0;
    let last_report = s.agent_last_report(agent).await?;
    // Every instance's marks in one read (one round trip on PostgreSQL).
    let named: BTreeSet<&str> = applied
        .iter()
        .flat_map(|(_, b)| b.samples.iter().map(|x| x.instance.as_str()))
        .collect();
    let named: Vec<&str> = named.into_iter().collect();
    let mut marks: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for (a, i, t) in s.report_marks(&named).await? {
        marks.entry(i).or_default().push((a, t));
    }
    struct Seen {
        previous: Option<i64>,
        latest: i64,
        claimed: f64,
    }
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    let mut overlapping = 0u64;
    for &(i, b) in applied {
        for (j, sample) in b.samples.iter().enumerate() {
            let refuse = |reason: String| StoreError::Invalid {
                field: format!("batches[{i}].samples[{j}]"),
                reason: format!("batch {} instance {}: {reason}", b.seq, sample.instance),
            };
            if sample.at > newest {
                return Err(refuse(format!(
                    "at {} is more than 5 min ahead of the store's clock ({now})",
                    sample.at
                )));
            }
            if sample.at <= oldest {
                return Err(refuse(format!(
                    "at {} is older than the report retention ({oldest})",
                    sample.at
                )));
            }
            let instance = sample.instance.as_str();
            let at = sample.at.as_millisecond();
            if !seen.contains_key(instance) {
                let (mine, others): (Vec<_>, Vec<_>) = marks
                    .remove(instance)
                    .unwrap_or_default()
                    .into_iter()
                    .partition(|(a, _)| a == agent.as_str());
                let previous = mine.first().map(|m| m.1);
                if let Some(p) = previous
                    && others.iter().any(|(_, t)| *t > p)
                {
                    overlapping += 1;
                    let hosts: Vec<&str> = others
                        .iter()
                        .filter(|(_, t)| *t > p)
                        .map(|(a, _)| a.as_str())
                        .collect();
                    tracing::warn!(
                        instance,
                        agent = %agent,
                        others = ?hosts,
                        "two hosts report one instance for overlapping times (a live migration?); both are counted"
                    );
                }
                seen.insert(
                    instance,
                    Seen {
                        previous,
                        latest: at,
                        claimed: 0.0,
                    },
                );
            }
            let Some(e) = seen.get_mut(instance) else {
                continue;
            };
            e.latest = e.latest.max(at);
            e.claimed += sample.upload as f64 + sample.download as f64;
            let agent_span = e.latest - e.previous.unwrap_or(oldest.as_millisecond());
            let store_span = last_report.map_or(0, |r| now.as_millisecond() - r);
            let span_ms = agent_span.max(store_span).max(0);
            if e.claimed > bytes_per_ms * span_ms as f64 {
                return Err(refuse(format!(
                    "{} bytes in {span_ms} ms since the previous sample is more than a link of {} carries",
                    e.claimed as u64, bounds.max_rate
                )));
            }
        }
    }
    let latest: Vec<(&str, i64)> = seen.iter().map(|(i, e)| (*i, e.latest)).collect();
    s.set_report_marks(agent, &latest).await?;
    if overlapping > 0 {
        s.add_overlapping_samples(overlapping).await?;
    }
    Ok(())
}

pub(crate) async fn stats<S: Statements>(s: &mut S, now: Timestamp) -> Result<Stats, StoreError> {
    let counts = s.counts(now).await?;
    let agents = s
        .agents()
        .await?
        .into_iter()
        .map(|(agent, last, last_seq)| AgentView {
            agent,
            last_report: ts(last),
            last_seq,
        })
        .collect();
    Ok(Stats {
        backend: S::NAME.into(),
        instances: counts.instances,
        projects: counts.projects,
        classes: s.scope_names("class").await?.len() as u64,
        active_reservations: counts.active_reservations,
        applied_reports: counts.applied_reports,
        overlapping_samples: counts.overlapping_samples,
        agents,
    })
}

/// The role of a presented token, if it is live and its secret matches.
pub(crate) async fn authenticate<S: Statements>(
    s: &mut S,
    token: &Token,
) -> Result<Option<Role>, StoreError> {
    Ok(s.live_token(&token.id)
        .await?
        .filter(|(digest, _)| token.matches(digest))
        .map(|(_, role)| role))
}

/// Store a new token (hashed).
pub(crate) async fn token_insert<S: Statements>(
    s: &mut S,
    token: &Token,
    role: &Role,
) -> Result<(), StoreError> {
    s.insert_token(&token.id, &token.digest(), role, Timestamp::now())
        .await
}

pub(crate) async fn token_list<S: Statements>(s: &mut S) -> Result<Vec<TokenInfo>, StoreError> {
    s.tokens()
        .await?
        .into_iter()
        .map(|(id, role, host, created, revoked)| {
            let role = Role::from_parts(&role, host.as_deref())?;
            Ok(TokenInfo {
                id: id.parse()?,
                role: role.name(),
                host: role.host().map(|h| h.as_str().to_owned()),
                created: ts(created),
                revoked: revoked.map(ts),
            })
        })
        .collect()
}

/// Revoke a token; not found if there is no live token with that id.
pub(crate) async fn token_revoke<S: Statements>(s: &mut S, id: &TokenId) -> Result<(), StoreError> {
    if s.revoke_token(id, Timestamp::now()).await? == 0 {
        return Err(StoreError::NotFound {
            what: "token",
            name: id.to_string(),
        });
    }
    Ok(())
}

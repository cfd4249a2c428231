//! The store's operations in PostgreSQL's dialect; the same meaning as
//! [`crate::store::sqlite::ops`], which documents each.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::pg;
use crate::model::ids::{InstanceId, Label};
use crate::model::token::{Role, TokenId, TokenInfo};
use crate::model::units::Rate;
use crate::store::model::{Deltas, Limit, Membership, Scope, Standing, StoreError, standings_from};
use crate::store::report::{Batch, Ingested, hourly};
use crate::store::traffic::{TrafficQuota, resolve};
use crate::store::view::{AgentView, ScopeView, Stats};

fn ts(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Lock the instance's row (creating it): every change to its use or reservations
/// goes through here first, so concurrent stores serialise per instance.
pub async fn lock_instance<C: GenericClient>(c: &C, i: &InstanceId) -> Result<(), StoreError> {
    let s = c
        .prepare_cached("INSERT INTO instances (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
        .await
        .map_err(pg("locking an instance"))?;
    c.execute(&s, &[&i.as_str()])
        .await
        .map_err(pg("locking an instance"))?;
    let s = c
        .prepare_cached("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE")
        .await
        .map_err(pg("locking an instance"))?;
    c.query(&s, &[&i.as_str()])
        .await
        .map_err(pg("locking an instance"))?;
    Ok(())
}

pub async fn set_limit<C: GenericClient>(
    c: &C,
    scope: &Scope,
    resource: &Label,
    limit: Limit,
) -> Result<(), StoreError> {
    let (kind, name) = scope.key();
    c.execute(
        "INSERT INTO limits (scope_kind, scope, resource, hard_limit) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope_kind, scope, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        &[&kind, &name, &resource.as_str(), &limit.to_i64()],
    )
    .await
    .map_err(pg("writing a limit"))?;
    Ok(())
}

pub async fn set_membership<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    m: &Membership,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO instances (id, project, class) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET project = excluded.project, class = excluded.class",
        &[
            &i.as_str(),
            &m.project.as_ref().map(Label::as_str),
            &m.class.as_ref().map(Label::as_str),
        ],
    )
    .await
    .map_err(pg("writing an instance"))?;
    Ok(())
}

pub async fn membership<C: GenericClient>(c: &C, i: &InstanceId) -> Result<Membership, StoreError> {
    let row = c
        .query_opt(
            "SELECT project, class FROM instances WHERE id = $1",
            &[&i.as_str()],
        )
        .await
        .map_err(pg("reading an instance"))?;
    let (p, cl): (Option<String>, Option<String>) =
        row.map_or((None, None), |r| (r.get(0), r.get(1)));
    Ok(Membership {
        project: p.and_then(|p| Label::new(&p).ok()),
        class: cl.and_then(|c| Label::new(&c).ok()),
    })
}

pub async fn set_project_class<C: GenericClient>(
    c: &C,
    p: &Label,
    class: Option<&Label>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO projects (id, class) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET class = excluded.class",
        &[&p.as_str(), &class.map(Label::as_str)],
    )
    .await
    .map_err(pg("writing a project"))?;
    Ok(())
}

async fn chain_of<C: GenericClient>(
    c: &C,
    i: &InstanceId,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let s = c
        .prepare_cached(
            "SELECT i.project, COALESCE(i.class, p.class) FROM instances i
             LEFT JOIN projects p ON p.id = i.project WHERE i.id = $1",
        )
        .await
        .map_err(pg("reading an instance"))?;
    let row = c
        .query_opt(&s, &[&i.as_str()])
        .await
        .map_err(pg("reading an instance"))?;
    Ok(row.map_or((None, None), |r| (r.get(0), r.get(1))))
}

pub async fn standings<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    now: Timestamp,
) -> Result<Vec<Standing>, StoreError> {
    let (project, class) = chain_of(c, i).await?;
    let s = c
        .prepare_cached(
            "SELECT scope_kind, resource, hard_limit FROM limits
             WHERE (scope_kind = 'instance' AND scope = $1)
                OR (scope_kind = 'project' AND scope = $2)
                OR (scope_kind = 'class' AND scope = $3)
                OR scope_kind = 'default'",
        )
        .await
        .map_err(pg("reading limits"))?;
    let limits = c
        .query(&s, &[&i.as_str(), &project, &class])
        .await
        .map_err(pg("reading limits"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect::<Vec<_>>();
    let s = c
        .prepare_cached(
            "SELECT resource, in_use, 0::BIGINT FROM usages WHERE instance = $1
             UNION ALL
             SELECT resource, 0::BIGINT, SUM(GREATEST(delta, 0))::BIGINT FROM reservations
             WHERE instance = $1 AND expires_ms > $2 GROUP BY resource",
        )
        .await
        .map_err(pg("reading usage"))?;
    let uses = c
        .query(&s, &[&i.as_str(), &now.as_millisecond()])
        .await
        .map_err(pg("reading usage"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect::<Vec<_>>();
    standings_from(limits, uses)
}

pub async fn put_reservation<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    deltas: &Deltas,
    id: &str,
    expires_ms: i64,
) -> Result<(), StoreError> {
    let s = c
        .prepare_cached(
            "INSERT INTO reservations (id, instance, resource, delta, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .map_err(pg("writing a reservation"))?;
    for (resource, delta) in deltas {
        c.execute(
            &s,
            &[&id, &i.as_str(), &resource.as_str(), delta, &expires_ms],
        )
        .await
        .map_err(pg("writing a reservation"))?;
    }
    Ok(())
}

/// Commit (`true`) or roll back a reservation, under its instance's lock.
pub async fn settle<C: GenericClient>(c: &C, id: &str, commit: bool) -> Result<(), StoreError> {
    let owner = c
        .query_opt(
            "SELECT instance FROM reservations WHERE id = $1 LIMIT 1",
            &[&id],
        )
        .await
        .map_err(pg("reading a reservation"))?;
    let Some(owner) = owner else {
        return Err(StoreError::NotFound {
            what: "reservation",
            name: id.to_owned(),
        });
    };
    let instance: String = owner.get(0);
    if let Ok(i) = InstanceId::new(&instance) {
        lock_instance(c, &i).await?;
    }
    let s = c
        .prepare_cached(
            "DELETE FROM reservations WHERE id = $1 RETURNING instance, resource, delta",
        )
        .await
        .map_err(pg("removing a reservation"))?;
    let rows = c
        .query(&s, &[&id])
        .await
        .map_err(pg("removing a reservation"))?;
    if rows.is_empty() {
        // Settled by someone else while we waited for the lock.
        return Err(StoreError::NotFound {
            what: "reservation",
            name: id.to_owned(),
        });
    }
    if commit {
        let s = c
            .prepare_cached(
                "INSERT INTO usages (instance, resource, in_use) VALUES ($1, $2, GREATEST($3::BIGINT, 0))
                 ON CONFLICT (instance, resource)
                 DO UPDATE SET in_use = GREATEST(usages.in_use + $3::BIGINT, 0)",
            )
            .await
            .map_err(pg("writing usage"))?;
        for r in rows {
            let (i, res, d): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            c.execute(&s, &[&i, &res, &d])
                .await
                .map_err(pg("writing usage"))?;
        }
    }
    Ok(())
}

pub async fn expire<C: GenericClient>(c: &C, now: Timestamp) -> Result<usize, StoreError> {
    let rows = c
        .query(
            "DELETE FROM reservations WHERE expires_ms <= $1 RETURNING id",
            &[&now.as_millisecond()],
        )
        .await
        .map_err(pg("expiring reservations"))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<BTreeSet<_>>()
        .len())
}

pub async fn usage_set<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    resource: &Label,
    n: u64,
) -> Result<(), StoreError> {
    let n = i64::try_from(n).map_err(|_| StoreError::Invalid {
        field: resource.as_str().into(),
        reason: "too large".into(),
    })?;
    c.execute(
        "INSERT INTO usages (instance, resource, in_use) VALUES ($1, $2, $3)
         ON CONFLICT (instance, resource) DO UPDATE SET in_use = excluded.in_use",
        &[&i.as_str(), &resource.as_str(), &n],
    )
    .await
    .map_err(pg("writing usage"))?;
    Ok(())
}

pub async fn usage_reset<C: GenericClient>(
    c: &C,
    resource: &Label,
    i: Option<&InstanceId>,
) -> Result<usize, StoreError> {
    c.execute(
        "UPDATE usages SET in_use = 0
         WHERE resource = $1 AND in_use <> 0 AND ($2::TEXT IS NULL OR instance = $2)",
        &[&resource.as_str(), &i.map(InstanceId::as_str)],
    )
    .await
    .map(|n| n as usize)
    .map_err(pg("resetting usage"))
}

pub async fn destroy_instance<C: GenericClient>(c: &C, i: &InstanceId) -> Result<(), StoreError> {
    for text in [
        "DELETE FROM usages WHERE instance = $1",
        "DELETE FROM reservations WHERE instance = $1",
        "DELETE FROM limits WHERE scope_kind = 'instance' AND scope = $1",
        "DELETE FROM traffic_quotas WHERE scope_kind = 'instance' AND scope = $1",
        "DELETE FROM instances WHERE id = $1",
    ] {
        c.execute(text, &[&i.as_str()])
            .await
            .map_err(pg("destroying an instance"))?;
    }
    Ok(())
}

pub async fn destroy_project<C: GenericClient>(c: &C, p: &Label) -> Result<(), StoreError> {
    clear_scope(c, &Scope::Project(p.clone())).await?;
    for text in [
        "DELETE FROM projects WHERE id = $1",
        "UPDATE instances SET project = NULL WHERE project = $1",
    ] {
        c.execute(text, &[&p.as_str()])
            .await
            .map_err(pg("destroying a project"))?;
    }
    Ok(())
}

pub async fn clear_scope<C: GenericClient>(c: &C, scope: &Scope) -> Result<bool, StoreError> {
    let (kind, name) = scope.key();
    let a = c
        .execute(
            "DELETE FROM limits WHERE scope_kind = $1 AND scope = $2",
            &[&kind, &name],
        )
        .await
        .map_err(pg("clearing limits"))?;
    let b = c
        .execute(
            "DELETE FROM traffic_quotas WHERE scope_kind = $1 AND scope = $2",
            &[&kind, &name],
        )
        .await
        .map_err(pg("clearing traffic quotas"))?;
    Ok(a + b > 0)
}

pub async fn set_traffic_quota<C: GenericClient>(
    c: &C,
    scope: &Scope,
    q: &TrafficQuota,
) -> Result<(), StoreError> {
    let (kind, name) = scope.key();
    let (up, down) = q.on_exceed.rates();
    let bps = |r: Option<Rate>| r.map(|r| clamp(r.bits_per_sec()));
    c.execute(
        "INSERT INTO traffic_quotas
           (scope_kind, scope, resource, period, limit_bytes, on_exceed, upload_rate, download_rate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (scope_kind, scope, resource, period) DO UPDATE SET
           limit_bytes = excluded.limit_bytes, on_exceed = excluded.on_exceed,
           upload_rate = excluded.upload_rate, download_rate = excluded.download_rate",
        &[
            &kind,
            &name,
            &q.resource.as_str(),
            &q.period.as_str(),
            &clamp(q.limit.get()),
            &q.on_exceed.name(),
            &bps(up),
            &bps(down),
        ],
    )
    .await
    .map_err(pg("writing a traffic quota"))?;
    Ok(())
}

fn quota_of(row: &tokio_postgres::Row) -> Result<(String, TrafficQuota), StoreError> {
    let q = TrafficQuota::from_stored(
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    )
    .map_err(|reason| StoreError::Database {
        what: "reading traffic quotas",
        reason,
    })?;
    Ok((row.get(0), q))
}

const QUOTA_COLUMNS: &str = "SELECT scope_kind, resource, period, limit_bytes, on_exceed, upload_rate, download_rate FROM traffic_quotas";

pub async fn traffic_quotas<C: GenericClient>(
    c: &C,
    i: &InstanceId,
) -> Result<Vec<(TrafficQuota, &'static str)>, StoreError> {
    let (project, class) = chain_of(c, i).await?;
    let s = c
        .prepare_cached(&format!(
            "{QUOTA_COLUMNS} WHERE (scope_kind = 'instance' AND scope = $1)
                OR (scope_kind = 'project' AND scope = $2)
                OR (scope_kind = 'class' AND scope = $3)
                OR scope_kind = 'default'"
        ))
        .await
        .map_err(pg("reading traffic quotas"))?;
    let rows = c
        .query(&s, &[&i.as_str(), &project, &class])
        .await
        .map_err(pg("reading traffic quotas"))?
        .iter()
        .map(quota_of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(resolve(rows))
}

pub async fn scope_names<C: GenericClient>(c: &C, kind: &str) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT scope FROM limits WHERE scope_kind = $1
             UNION SELECT scope FROM traffic_quotas WHERE scope_kind = $1
             UNION SELECT class FROM projects WHERE $1 = 'class' AND class IS NOT NULL
             UNION SELECT class FROM instances WHERE $1 = 'class' AND class IS NOT NULL
             UNION SELECT id FROM projects WHERE $1 = 'project'
             ORDER BY 1",
            &[&kind],
        )
        .await
        .map_err(pg("listing"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What is set at `scope`, or `None` when nothing is (see the SQLite twin).
pub async fn scope_view<C: GenericClient>(
    c: &C,
    scope: &Scope,
) -> Result<Option<ScopeView>, StoreError> {
    let (kind, name) = scope.key();
    let mut limits = BTreeMap::new();
    for row in c
        .query(
            "SELECT resource, hard_limit FROM limits WHERE scope_kind = $1 AND scope = $2",
            &[&kind, &name],
        )
        .await
        .map_err(pg("reading limits"))?
    {
        let l = Limit::from_i64(row.get(1)).map_err(|reason| StoreError::Database {
            what: "reading limits",
            reason,
        })?;
        limits.insert(row.get::<_, String>(0), l);
    }
    let mut traffic = Vec::new();
    for row in c
        .query(
            &format!("{QUOTA_COLUMNS} WHERE scope_kind = $1 AND scope = $2"),
            &[&kind, &name],
        )
        .await
        .map_err(pg("reading traffic quotas"))?
    {
        traffic.push(quota_of(&row)?.1);
    }
    let (class, known) = match scope {
        Scope::Project(p) => {
            let row = c
                .query_opt("SELECT class FROM projects WHERE id = $1", &[&p.as_str()])
                .await
                .map_err(pg("reading a project"))?;
            (row.as_ref().and_then(|r| r.get(0)), row.is_some())
        }
        Scope::Instance(i) => {
            let m = membership(c, i).await?;
            let any = m.project.is_some() || m.class.is_some();
            (m.class.map(|c| c.as_str().to_owned()), any)
        }
        Scope::Class(_) => (
            None,
            scope_names(c, "class").await?.iter().any(|n| n == name),
        ),
        Scope::Default => (None, true),
    };
    Ok(ScopeView::assemble(scope, class, known, limits, &traffic))
}

pub async fn traffic_between<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    start: Timestamp,
    end: Timestamp,
) -> Result<(u64, u64), StoreError> {
    let row = c
        .query_one(
            "SELECT COALESCE(SUM(upload), 0)::BIGINT, COALESCE(SUM(download), 0)::BIGINT
             FROM traffic_hours WHERE instance = $1 AND hour_ms >= $2 AND hour_ms < $3",
            &[&i.as_str(), &start.as_millisecond(), &end.as_millisecond()],
        )
        .await
        .map_err(pg("reading traffic"))?;
    Ok((
        row.get::<_, i64>(0).max(0) as u64,
        row.get::<_, i64>(1).max(0) as u64,
    ))
}

/// The `limit` instances with the most traffic in [start, end), biggest total first.
pub async fn top_traffic<C: GenericClient>(
    c: &C,
    start: Timestamp,
    end: Timestamp,
    limit: usize,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let rows = c
        .query(
            "SELECT instance, SUM(upload)::BIGINT, SUM(download)::BIGINT FROM traffic_hours
             WHERE hour_ms >= $1 AND hour_ms < $2
             GROUP BY instance ORDER BY SUM(upload) + SUM(download) DESC, instance LIMIT $3",
            &[
                &start.as_millisecond(),
                &end.as_millisecond(),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(pg("ranking traffic"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1).max(0) as u64,
                r.get::<_, i64>(2).max(0) as u64,
            )
        })
        .collect())
}

pub async fn traffic_reset<C: GenericClient>(
    c: &C,
    i: &InstanceId,
    start: Timestamp,
    end: Timestamp,
) -> Result<usize, StoreError> {
    c.execute(
        "DELETE FROM traffic_hours WHERE instance = $1 AND hour_ms >= $2 AND hour_ms < $3",
        &[&i.as_str(), &start.as_millisecond(), &end.as_millisecond()],
    )
    .await
    .map(|n| n as usize)
    .map_err(pg("resetting traffic"))
}

/// Add the batches not seen before; one multi-row upsert for all their hours, keys
/// sorted so concurrent agents touching the same rows lock them in the same order.
pub async fn ingest<C: GenericClient>(
    c: &C,
    agent: &Label,
    batches: &[Batch],
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Ingested, StoreError> {
    let mut out = Ingested::default();
    let seqs: Vec<i64> = batches.iter().map(|b| clamp(b.seq)).collect();
    let s = c
        .prepare_cached(
            "INSERT INTO applied_reports (agent, seq, applied_ms)
             SELECT $1, s, $3 FROM UNNEST($2::BIGINT[]) AS s
             ON CONFLICT (agent, seq) DO NOTHING RETURNING seq",
        )
        .await
        .map_err(pg("recording a report"))?;
    let fresh: BTreeSet<i64> = c
        .query(&s, &[&agent.as_str(), &seqs, &now.as_millisecond()])
        .await
        .map_err(pg("recording a report"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut seen = BTreeSet::new();
    let mut applied = Vec::with_capacity(batches.len());
    for b in batches {
        // A batch listed twice in one report is applied once.
        if !fresh.contains(&clamp(b.seq)) || !seen.insert(b.seq) {
            out.duplicates.push(b.seq);
            continue;
        }
        out.applied.push(b.seq);
        applied.push(b);
    }
    // Sorted keys: concurrent agents touching the same rows lock them in one order.
    let (hours, samples) = hourly(applied, tz);
    out.samples = samples;
    if !hours.is_empty() {
        let mut ids = Vec::with_capacity(hours.len());
        let mut hs = Vec::with_capacity(hours.len());
        let mut ups = Vec::with_capacity(hours.len());
        let mut downs = Vec::with_capacity(hours.len());
        for ((i, h), (u, d)) in &hours {
            ids.push(*i);
            hs.push(*h);
            ups.push(clamp(*u));
            downs.push(clamp(*d));
        }
        let s = c
            .prepare_cached(
                "INSERT INTO traffic_hours (instance, hour_ms, upload, download)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                 ON CONFLICT (instance, hour_ms) DO UPDATE SET
                   upload = traffic_hours.upload + excluded.upload,
                   download = traffic_hours.download + excluded.download",
            )
            .await
            .map_err(pg("adding traffic"))?;
        c.execute(&s, &[&ids, &hs, &ups, &downs])
            .await
            .map_err(pg("adding traffic"))?;
    }
    if let Some(last) = batches.iter().map(|b| b.seq).max() {
        c.execute(
            "INSERT INTO agents (id, last_report_ms, last_seq) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET last_report_ms = excluded.last_report_ms,
               last_seq = GREATEST(agents.last_seq, excluded.last_seq)",
            &[&agent.as_str(), &now.as_millisecond(), &clamp(last)],
        )
        .await
        .map_err(pg("recording an agent"))?;
    }
    Ok(out)
}

pub async fn prune_applied<C: GenericClient>(
    c: &C,
    before: Timestamp,
) -> Result<usize, StoreError> {
    c.execute(
        "DELETE FROM applied_reports WHERE applied_ms < $1",
        &[&before.as_millisecond()],
    )
    .await
    .map(|n| n as usize)
    .map_err(pg("pruning report keys"))
}

pub async fn stats<C: GenericClient>(c: &C, now: Timestamp) -> Result<Stats, StoreError> {
    let row = c
        .query_one(
            "SELECT
               (SELECT COUNT(*) FROM (SELECT id FROM instances UNION SELECT instance FROM usages
                                      UNION SELECT instance FROM traffic_hours) x),
               (SELECT COUNT(*) FROM projects),
               (SELECT COUNT(DISTINCT id) FROM reservations WHERE expires_ms > $1),
               (SELECT COUNT(*) FROM applied_reports)",
            &[&now.as_millisecond()],
        )
        .await
        .map_err(pg("counting"))?;
    let n = |k: usize| row.get::<_, i64>(k).max(0) as u64;
    let agents = c
        .query(
            "SELECT id, last_report_ms, last_seq FROM agents ORDER BY id",
            &[],
        )
        .await
        .map_err(pg("listing agents"))?
        .iter()
        .map(|r| AgentView {
            agent: r.get(0),
            last_report: ts(r.get(1)),
            last_seq: r.get::<_, i64>(2).max(0) as u64,
        })
        .collect();
    Ok(Stats {
        backend: "postgres".into(),
        instances: n(0),
        projects: n(1),
        classes: scope_names(c, "class").await?.len() as u64,
        active_reservations: n(2),
        applied_reports: n(3),
        agents,
    })
}

pub async fn token_insert<C: GenericClient>(
    c: &C,
    id: &TokenId,
    digest: &[u8; 32],
    role: &Role,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tokens (id, digest, role, host, created_ms) VALUES ($1, $2, $3, $4, $5)",
        &[
            &id.as_str(),
            &&digest[..],
            &role.name(),
            &role.host().map(Label::as_str),
            &now.as_millisecond(),
        ],
    )
    .await
    .map_err(pg("writing a token"))?;
    Ok(())
}

pub async fn token_get<C: GenericClient>(
    c: &C,
    id: &TokenId,
) -> Result<Option<(Vec<u8>, Role)>, StoreError> {
    let s = c
        .prepare_cached(
            "SELECT digest, role, host FROM tokens WHERE id = $1 AND revoked_ms IS NULL",
        )
        .await
        .map_err(pg("reading a token"))?;
    let row = c
        .query_opt(&s, &[&id.as_str()])
        .await
        .map_err(pg("reading a token"))?;
    row.map(|r| {
        let role: String = r.get(1);
        let host: Option<String> = r.get(2);
        Ok((r.get(0), Role::from_parts(&role, host.as_deref())?))
    })
    .transpose()
}

pub async fn token_list<C: GenericClient>(c: &C) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = c
        .query(
            "SELECT id, role, host, created_ms, revoked_ms FROM tokens ORDER BY created_ms, id",
            &[],
        )
        .await
        .map_err(pg("listing tokens"))?;
    rows.iter()
        .map(|r| {
            let role = Role::from_parts(
                &r.get::<_, String>(1),
                r.get::<_, Option<String>>(2).as_deref(),
            )?;
            Ok(TokenInfo {
                id: r.get::<_, String>(0).parse()?,
                role: role.name(),
                host: role.host().map(|h| h.as_str().to_owned()),
                created: ts(r.get(3)),
                revoked: r.get::<_, Option<i64>>(4).map(ts),
            })
        })
        .collect()
}

pub async fn token_revoke<C: GenericClient>(
    c: &C,
    id: &TokenId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
            &[&id.as_str(), &now.as_millisecond()],
        )
        .await
        .map_err(pg("revoking a token"))?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "token",
            name: id.to_string(),
        });
    }
    Ok(())
}

//! The event log: what happened, in the order it happened.

use jiff::Timestamp;
use rusqlite::{Connection, params};

use super::{EventRow, LedgerError, sql};
use crate::model::ids::InstanceId;

pub(super) fn write_events(tx: &Connection, events: &[EventRow]) -> Result<(), LedgerError> {
    let mut ev = tx
        .prepare_cached("INSERT INTO events (at_ms, kind, instance, body) VALUES (?1, ?2, ?3, ?4)")
        .map_err(sql("preparing event write"))?;
    for e in events {
        ev.execute(params![
            e.at.as_millisecond(),
            e.kind.as_str(),
            e.instance.as_ref().map(|i| i.as_str()),
            e.body.to_string()
        ])
        .map_err(sql("writing events"))?;
    }
    Ok(())
}

/// Events at or after `since` (all when `None`) of `instance` (all when `None`), oldest
/// first, the newest `limit` of them. The instance is filtered in SQL, before the
/// limit: filtered after it, a busy host's last `limit` events could hold none of the
/// instance's although it had some.
pub fn read_events(
    conn: &Connection,
    since: Option<Timestamp>,
    instance: Option<&InstanceId>,
    limit: usize,
) -> Result<Vec<EventRow>, LedgerError> {
    let mut stmt = conn
        .prepare(
            "SELECT at_ms, kind, instance, body FROM events
             WHERE at_ms >= ?1 AND (?3 IS NULL OR instance = ?3)
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(sql("reading events"))?;
    let rows = stmt
        .query_map(
            params![
                since.map_or(i64::MIN, |t| t.as_millisecond()),
                i64::try_from(limit).unwrap_or(i64::MAX),
                instance.map(|i| i.as_str())
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .map_err(sql("reading events"))?;
    let mut out = Vec::new();
    for row in rows {
        let (at, kind, instance, body) = row.map_err(sql("reading events"))?;
        let kind = kind.parse().map_err(|why: String| LedgerError::Sql {
            what: "reading events",
            source: format!("event at {at} ms: {why}").into(),
        })?;
        out.push(EventRow {
            at: Timestamp::from_millisecond(at).unwrap_or(Timestamp::UNIX_EPOCH),
            kind,
            instance: instance.and_then(|i| InstanceId::new(&i).ok()),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        });
    }
    out.reverse();
    Ok(out)
}

//! The parallel run's reports in the router database (table `shadow_reports`), summed over every
//! instance: each adds what it saw since its last flush, every [`FLUSH_EVERY`] and before
//! answering `GET /admin/diffs`, and takes back the noise paths the others learned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use platform::{Pool, blocking};

use crate::shadow::{RouteReport, Shadows};
use crate::store::StoreError;

/// How often an instance adds its counts to the stored reports.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

diesel::table! {
    shadow_reports (route) {
        route -> Text,
        report -> Jsonb,
        updated_at -> Timestamptz,
    }
}

fn corrupt(route: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        name: format!("shadow report {route}"),
        detail: e.to_string(),
    }
}

/// Adds `deltas` to the stored reports, in one transaction (routes in order, so two instances
/// flushing at once lock rows in the same order), and returns every stored report.
pub fn add(
    conn: &mut PgConnection,
    deltas: &BTreeMap<String, RouteReport>,
) -> Result<BTreeMap<String, RouteReport>, StoreError> {
    conn.transaction(|tx| {
        for (route, delta) in deltas {
            // The row exists before it is locked: two instances adding a new route's first
            // counts must not both insert it (one would overwrite the other).
            diesel::insert_into(shadow_reports::table)
                .values((
                    shadow_reports::route.eq(route),
                    shadow_reports::report.eq(serde_json::json!({})),
                ))
                .on_conflict_do_nothing()
                .execute(tx)?;
            let stored: serde_json::Value = shadow_reports::table
                .find(route)
                .select(shadow_reports::report)
                .for_update()
                .first(tx)?;
            let mut report: RouteReport =
                serde_json::from_value(stored).map_err(|e| corrupt(route, e))?;
            report.merge(delta);
            let json = serde_json::to_value(&report).map_err(|e| corrupt(route, e))?;
            diesel::update(shadow_reports::table.find(route))
                .set((
                    shadow_reports::report.eq(json),
                    shadow_reports::updated_at.eq(diesel::dsl::now),
                ))
                .execute(tx)?;
        }
        all(tx)
    })
}

/// Every stored report.
pub fn all(conn: &mut PgConnection) -> Result<BTreeMap<String, RouteReport>, StoreError> {
    let rows: Vec<(String, serde_json::Value)> = shadow_reports::table
        .select((shadow_reports::route, shadow_reports::report))
        .load(conn)?;
    rows.into_iter()
        .map(|(route, json)| {
            let report = serde_json::from_value(json).map_err(|e| corrupt(&route, e))?;
            Ok((route, report))
        })
        .collect()
}

/// Deletes one route's stored report, or all of them; how many.
pub fn delete(conn: &mut PgConnection, route: Option<&str>) -> Result<usize, StoreError> {
    Ok(match route {
        Some(route) => diesel::delete(shadow_reports::table.find(route)).execute(conn)?,
        None => diesel::delete(shadow_reports::table).execute(conn)?,
    })
}

/// Adds this instance's counts since the last flush to the stored reports and learns the noise
/// the others found; returns every stored report. On failure the counts stay for the next try.
pub async fn flush(
    pool: &Pool,
    shadows: &Shadows,
) -> Result<BTreeMap<String, RouteReport>, StoreError> {
    let deltas = shadows.take();
    let sent = deltas.clone();
    match blocking(pool, move |c| add(c, &sent)).await {
        Ok(stored) => {
            for (route, report) in &stored {
                shadows.learn_noise(route, report.noise.iter().cloned());
            }
            Ok(stored)
        }
        Err(e) => {
            shadows.give_back(deltas);
            Err(e)
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until the runtime ends.
pub fn spawn_flusher(pool: Pool, shadows: Arc<Shadows>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = flush(&pool, &shadows).await {
                tracing::warn!(error = %e, "could not store the parallel run's reports; will retry");
            }
        }
    })
}

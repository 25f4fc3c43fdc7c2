//! The flip itself: new owner ready → slot of the stream back → hold → fence → cut → catch up →
//! grant → release, each step recorded, undone to the old owner when a step before the grant fails, and finished or undone
//! by the next command when the process running it died ([ADR 0014]).
//!
//! [ADR 0014]: ../../../docs/adr/0014-the-flip-runs-in-a-router-and-streams-follow-the-owner.md

use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use platform::Pool;
use platform::fence;
use replication::ops;
use replication::wire::format_lsn;

use super::audit::{self, Ending, Flip};
use super::plan::{self, Direction, Movable, Recovery, Step};
use super::{FlipError, Flipper, Outcome};
use crate::ownership;
use crate::routes::WriteOwner;

/// A step that failed, and why.
struct Failure {
    step: Step,
    error: String,
}

fn at(step: Step) -> impl Fn(String) -> Failure {
    move |error| Failure { step, error }
}

/// Runs `f` with a connection of its own to `url`, on the blocking pool (diesel blocks).
async fn on<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut PgConnection) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    Open::to(url).await?.run(f).await
}

/// A connection to a database, kept as long as it is needed: a side's for the length of a flip
/// (opening one costs milliseconds the held writes would wait), the lock's for the lock's.
struct Open(Option<PgConnection>);

impl Open {
    async fn to(url: &str) -> Result<Open, String> {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || {
            PgConnection::establish(&url).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the blocking task failed: {e}"))?
        .map(|conn| Open(Some(conn)))
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut PgConnection) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let mut conn = self.0.take().ok_or("the connection was lost")?;
        let (conn, answer) = tokio::task::spawn_blocking(move || {
            let answer = f(&mut conn);
            (conn, answer)
        })
        .await
        .map_err(|e| format!("the blocking task failed: {e}"))?;
        self.0 = Some(conn);
        answer
    }
}

/// Waits (up to `within`) until `stream` runs: its slot is in use on its source.
async fn streaming(stream: &replication::config::Pipeline, within: Duration) -> Result<(), String> {
    let client = replication::source::connect(&stream.source)
        .await
        .map_err(|e| {
            format!(
                "connecting to the source of the stream {}: {e}",
                stream.name
            )
        })?;
    let deadline = Instant::now() + within;
    loop {
        let status = replication::source::slot_status(&client, &stream.slot())
            .await
            .map_err(|e| e.to_string())?;
        if status.is_some_and(|s| s.active_pid.is_some()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the stream {} is not running (nothing would carry the old owner's last writes \
                 to the new one): is the follower running?",
                stream.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` on a pooled router-database connection.
async fn stored<T: Send + 'static>(
    pool: &Pool,
    f: impl FnOnce(&mut PgConnection) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        f(&mut conn)
    })
    .await
    .map_err(|e| format!("the blocking task failed: {e}"))?
}

/// The session lock that makes one flip of a capability run at a time across every router
/// instance. Held by its own connection, not a pooled one: it is released when the connection
/// closes (when this is dropped, or when the process dies).
struct Lock {
    _held_by: Open,
}

async fn lock(database_url: &str, capability: &str) -> Result<Lock, FlipError> {
    #[derive(diesel::QueryableByName)]
    struct Taken {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        taken: bool,
    }
    let mut conn = Open::to(database_url).await.map_err(FlipError::Store)?;
    let capability_name = capability.to_string();
    let taken = conn
        .run(move |c| {
            diesel::sql_query(
                "SELECT pg_try_advisory_lock(hashtext('fig.flip'), hashtext($1)) AS taken",
            )
            .bind::<diesel::sql_types::Text, _>(&capability_name)
            .get_result::<Taken>(c)
            .map(|t| t.taken)
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(FlipError::Store)?;
    if taken {
        Ok(Lock { _held_by: conn })
    } else {
        Err(FlipError::Busy(capability.to_string()))
    }
}

impl Flipper {
    /// Moves `movable`'s writes in `direction`. Finishes or undoes an interrupted flip first.
    pub(super) async fn run(
        &self,
        movable: &Movable,
        direction: Direction,
        actor: &str,
        reason: &str,
    ) -> Result<Outcome, FlipError> {
        let capability = movable.capability.clone();
        let _lock = lock(&self.database_url, &capability).await?;
        let recovered = self.recover_running(movable).await?;
        let owner = self.owner(&capability).await?;
        if owner == direction.to() {
            return Ok(Outcome::AlreadyThere { owner, recovered });
        }
        let (cap, dir, who, why) = (
            capability.clone(),
            direction,
            actor.to_string(),
            reason.to_string(),
        );
        let id = stored(&self.pool, move |c| {
            audit::start(c, &cap, dir, &who, &why).map_err(|e| e.to_string())
        })
        .await
        .map_err(FlipError::Store)?;
        let started = Instant::now();
        let mut timings = Timings::default();
        let ending = match self.steps(id, movable, direction, &mut timings).await {
            Ok(()) => Ending {
                outcome: "done",
                ..Ending::default()
            },
            Err(failure) => {
                tracing::warn!(capability, step = failure.step.as_str(), error = %failure.error, "flip failed; undoing it");
                let outcome = match self.settle(movable, direction).await {
                    Ok(Recovery::Undo) => "undone",
                    Ok(Recovery::Finish) => "done",
                    Err(e) => {
                        tracing::error!(capability, error = %e, "undoing the flip failed; the next flip command finishes the job");
                        "failed"
                    }
                };
                timings.failure = Some(failure);
                // The writes waited until the undo released them.
                timings.hold = timings.hold_started.map(|at| at.elapsed());
                Ending {
                    outcome,
                    ..Ending::default()
                }
            }
        };
        let error = timings.failure.as_ref().map(|f| f.error.clone());
        let ending = Ending {
            failed_step: timings.failure.as_ref().map(|f| f.step),
            error: error.as_deref(),
            hold_ms: timings.hold.map(ms),
            catch_up_ms: timings.catch_up.map(ms),
            total_ms: Some(ms(started.elapsed())),
            ..ending
        };
        let (outcome, failed_step, error) = (
            ending.outcome.to_string(),
            ending.failed_step,
            ending.error.map(str::to_string),
        );
        let (hold_ms, catch_up_ms, total_ms) =
            (ending.hold_ms, ending.catch_up_ms, ending.total_ms);
        let flip = stored(&self.pool, move |c| {
            let ending = Ending {
                outcome: &outcome,
                failed_step,
                error: error.as_deref(),
                hold_ms,
                catch_up_ms,
                total_ms,
            };
            audit::finish(c, id, &ending).map_err(|e| e.to_string())?;
            audit::get(c, id).map_err(|e| e.to_string())
        })
        .await
        .map_err(FlipError::Store)?;
        Ok(Outcome::Flipped {
            flip: Box::new(flip),
            recovered,
        })
    }

    /// The steps, recording each as it is done.
    async fn steps(
        &self,
        id: i64,
        movable: &Movable,
        direction: Direction,
        timings: &mut Timings,
    ) -> Result<(), Failure> {
        let cap = movable.capability.clone();
        let (old_db, new_db) = (
            movable.database(direction.from()).to_string(),
            movable.database(direction.to()).to_string(),
        );
        // Before anything changes: a new owner that cannot answer would only turn the held
        // writes into errors.
        self.ready(&cap, direction.to())
            .await
            .map_err(at(Step::Ready))?;
        self.record(id, Step::Ready, None, None)
            .await
            .map_err(at(Step::Ready))?;

        // The stream into the new owner must be running: the flip waits for it to pass the cut,
        // and whoever runs it (the follower) retires the previous generation of the stream back
        // before starting it, so the slot prepared next cannot be dropped by a late retirement.
        let into_new = movable.stream_while(direction.from());
        streaming(&into_new, self.settings.streams_within)
            .await
            .map_err(at(Step::ReverseReady))?;
        // The stream back gets its slot before the hold, not at the cut: creating a slot waits
        // for the transactions running on its database and for its WAL to be flushed, which
        // would lengthen the pause. Until the grant the only changes it can see are the stream
        // into the new owner's (it skips their origin); the new owner's fence refuses the rest.
        let back = movable.stream_from_cut(direction.to());
        let from = ops::prepare(&back)
            .await
            .map_err(|e| format!("preparing the stream {}: {e}", back.name))
            .map_err(at(Step::ReverseReady))?;
        self.record(id, Step::ReverseReady, None, Some(format_lsn(from)))
            .await
            .map_err(at(Step::ReverseReady))?;
        // Both sides' connections are open before the writes wait.
        let mut old = Open::to(&old_db).await.map_err(at(Step::Held))?;
        let mut new = Open::to(&new_db).await.map_err(at(Step::Held))?;

        let held_at = Instant::now();
        self.set(&cap, direction.from(), true)
            .await
            .map_err(at(Step::Held))?;
        timings.hold_started = Some(held_at);
        self.record(id, Step::Held, None, None)
            .await
            .map_err(at(Step::Held))?;

        let capability = cap.clone();
        let fenced = old
            .run(move |c| fence::fence(c, &capability).map_err(|e| e.to_string()))
            .await
            .map_err(at(Step::Fenced))?;
        let cut = format_lsn(fenced.cut.0);
        self.record(id, Step::Fenced, Some(cut.clone()), None)
            .await
            .map_err(at(Step::Fenced))?;

        // The old owner's sequences are final once it is fenced: the new owner's move past them
        // while the stream catches up.
        // Every stream out of the old owner that carries the capability must pass the cut: the
        // one into the new owner, and the feeds (a change the new owner makes must not overtake
        // one the old owner made where both arrive).
        let mut waited = vec![&into_new];
        waited.extend(movable.feeds_out_of(direction.from(), &self.migrations.feeds));
        let catch_up = Instant::now();
        let (applied, sequences) = tokio::join!(
            async {
                let marker = ops::emit_cut(&old_db)
                    .await
                    .map_err(|e| format!("writing the cut marker: {e}"))?;
                let goal = marker.max(fenced.cut.0);
                let waits = waited
                    .iter()
                    .map(|stream| ops::wait_applied(stream, goal, self.settings.catch_up));
                let applied = futures_util::future::join_all(waits).await;
                let mut behind = Vec::new();
                for (stream, applied) in waited.iter().zip(applied) {
                    if !applied.map_err(|e| e.to_string())? {
                        behind.push(stream.name.as_str());
                    }
                }
                Ok::<_, String>((behind.join(", "), goal))
            },
            ops::sync_sequences(&into_new),
        );
        let (behind, goal) = applied.map_err(at(Step::CaughtUp))?;
        timings.catch_up = Some(catch_up.elapsed());
        if !behind.is_empty() {
            return Err(Failure {
                step: Step::CaughtUp,
                error: format!(
                    "the stream {behind} did not apply past the cut {} within {:?}",
                    format_lsn(goal),
                    self.settings.catch_up
                ),
            });
        }
        // The new owner draws ids from now on: past every id the old one drew.
        sequences
            .map_err(|e| format!("moving the new owner's sequences forward: {e}"))
            .map_err(at(Step::CaughtUp))?;
        self.record(id, Step::CaughtUp, None, None)
            .await
            .map_err(at(Step::CaughtUp))?;

        let capability = cap.clone();
        new.run(move |c| fence::grant(c, &capability).map_err(|e| e.to_string()))
            .await
            .map_err(at(Step::Granted))?;
        self.record(id, Step::Granted, None, None)
            .await
            .map_err(at(Step::Released))?;

        let version = self
            .store(&cap, direction.to(), false)
            .await
            .map_err(at(Step::Released))?;
        // The writes go on as each router hears of the release, without waiting for the others.
        timings.hold = Some(held_at.elapsed());
        self.applied_everywhere(&cap, version)
            .await
            .map_err(at(Step::Released))?;
        self.record(id, Step::Released, None, None)
            .await
            .map_err(at(Step::Released))?;
        Ok(())
    }

    /// After a failed step, or for a flip whose process died: finish it when the new owner's
    /// fence admits writes, otherwise give them back to the old owner ([`plan::recover`]).
    async fn settle(&self, movable: &Movable, direction: Direction) -> Result<Recovery, String> {
        let cap = movable.capability.clone();
        let capability = cap.clone();
        let new_admits = on(movable.database(direction.to()), move |c| {
            fence::read(c, &capability)
                .map(|owned| owned.owns)
                .map_err(|e| e.to_string())
        })
        .await?;
        let recovery = plan::recover(new_admits);
        if recovery == Recovery::Undo {
            let capability = cap.clone();
            on(movable.database(direction.from()), move |c| {
                fence::grant(c, &capability).map_err(|e| e.to_string())
            })
            .await?;
            // The stream back into the old owner may have its slot already: nothing flowed
            // through it (the new owner never took a write), so it goes.
            let back = movable.stream_from_cut(direction.to());
            ops::drop(&back)
                .await
                .map_err(|e| format!("dropping the prepared stream {}: {e}", back.name))?;
        }
        let owner = match recovery {
            Recovery::Undo => direction.from(),
            Recovery::Finish => direction.to(),
        };
        self.set(&cap, owner, false).await?;
        Ok(recovery)
    }

    /// Finishes or undoes a flip recorded as running (its process died): the lock is ours, so
    /// nobody else is running it.
    async fn recover_running(&self, movable: &Movable) -> Result<Option<Flip>, FlipError> {
        let cap = movable.capability.clone();
        let running = stored(&self.pool, move |c| {
            audit::running(c, &cap).map_err(|e| e.to_string())
        })
        .await
        .map_err(FlipError::Store)?;
        let Some(flip) = running else {
            return Ok(None);
        };
        let direction = Direction::parse(&flip.direction).unwrap_or(Direction::Cutover);
        let last = Step::parse(&flip.step).unwrap_or(Step::Started);
        let settled = self.settle(movable, direction).await;
        let (outcome, error) = match &settled {
            Ok(Recovery::Finish) => (
                "done",
                format!("interrupted after {}; finished", last.as_str()),
            ),
            Ok(Recovery::Undo) => (
                "undone",
                format!("interrupted after {}; undone", last.as_str()),
            ),
            Err(e) => (
                "running",
                format!("interrupted after {}; settling failed: {e}", last.as_str()),
            ),
        };
        if let Err(e) = settled {
            return Err(FlipError::Settle(e));
        }
        let id = flip.id;
        let flip = stored(&self.pool, move |c| {
            let failed = Step::parse(&flip.step).map(Step::next);
            audit::finish(
                c,
                id,
                &Ending {
                    outcome,
                    failed_step: if outcome == "undone" { failed } else { None },
                    error: Some(&error),
                    ..Ending::default()
                },
            )
            .map_err(|e| e.to_string())?;
            audit::get(c, id).map_err(|e| e.to_string())
        })
        .await
        .map_err(FlipError::Store)?;
        Ok(Some(flip))
    }

    /// Sets the stored ownership, then waits (up to the configured time) until every live router
    /// applies it: a router that has not heard yet still routes by the old state, which the
    /// fence makes safe but not pleasant.
    async fn set(&self, capability: &str, owner: WriteOwner, held: bool) -> Result<(), String> {
        let version = self.store(capability, owner, held).await?;
        self.applied_everywhere(capability, version).await
    }

    /// Stores the ownership (every router hears of it by NOTIFY); returns its version.
    async fn store(&self, capability: &str, owner: WriteOwner, held: bool) -> Result<i64, String> {
        let cap = capability.to_string();
        stored(&self.pool, move |c| {
            ownership::set(c, &cap, owner, held).map_err(|e| e.to_string())
        })
        .await
    }

    /// Waits (up to the configured time) until every live router applies `version`.
    async fn applied_everywhere(&self, capability: &str, version: i64) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.acks_within;
        let alive = self.settings.alive_within;
        loop {
            let behind = stored(&self.pool, move |c| {
                ownership::behind(c, version, alive).map_err(|e| e.to_string())
            })
            .await?;
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    capability,
                    ?behind,
                    version,
                    "routers have not applied the ownership change yet; going on"
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn record(
        &self,
        id: i64,
        step: Step,
        cut: Option<String>,
        reverse_from: Option<String>,
    ) -> Result<(), String> {
        stored(&self.pool, move |c| {
            audit::step(c, id, step, cut.as_deref(), reverse_from.as_deref())
                .map_err(|e| e.to_string())
        })
        .await?;
        if !self.settings.step_pause.is_zero() {
            tokio::time::sleep(self.settings.step_pause).await;
        }
        Ok(())
    }

    /// The side's upstream answers `/readyz` (it is up and reaches its database).
    async fn ready(&self, capability: &str, side: WriteOwner) -> Result<(), String> {
        let url = self
            .upstream(capability, side)
            .ok_or_else(|| format!("no upstream for {capability}'s {}", side.as_str()))?;
        let answer = self
            .http
            .get(format!("{}/readyz", url.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| format!("the new owner ({url}) is down: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the new owner ({url}) is not ready: /readyz answered {}",
                answer.status()
            ))
        }
    }
}

/// What a flip measured.
#[derive(Default)]
struct Timings {
    hold_started: Option<Instant>,
    hold: Option<Duration>,
    catch_up: Option<Duration>,
    failure: Option<Failure>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `capability`'s latest flips, newest first.
pub(super) async fn stored_history(
    pool: &Pool,
    capability: String,
    limit: i64,
) -> Result<Vec<Flip>, String> {
    stored(pool, move |c| {
        audit::history(c, &capability, limit).map_err(|e| e.to_string())
    })
    .await
}

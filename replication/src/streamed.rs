//! Large source transactions applied while still in progress (pgoutput protocol 2 with
//! `streaming`, ADR 0010).
//!
//! Once a source transaction's decoded changes pass the walsender's `logical_decoding_work_mem`
//! (the pipeline's `stream_after_kib`), the server sends them in blocks (StreamStart ..
//! StreamStop) before the transaction ends, interleaved with other transactions, and ends it
//! later with StreamCommit or StreamAbort. Each such transaction is applied as it arrives, in
//! a target transaction of its own on a session of its own, left open until the source's verdict:
//! at StreamCommit it commits with the pipeline's position, so the target is done moments after
//! the source rather than a whole replay later. Subtransactions become savepoints, so a
//! `ROLLBACK TO SAVEPOINT` on the source undoes exactly its changes on the target.
//!
//! The target may refuse a change of a streamed transaction that the source itself undid: a
//! multi-row INSERT is decoded and streamed row by row before the statement fails on a
//! duplicate key, and only the subtransaction's (or the transaction's) abort comes later. So a
//! refusal is kept, the transaction's later changes are dropped (the server would refuse them
//! too), and the verdict decides: a rollback to a savepoint set before the refusal undoes it
//! and the transaction goes on; an abort discards it; a commit reports it.
//!
//! How the sessions are kept from overtaking or waiting for each other is the pipeline's part
//! (ADR 0010): ordinary transactions are committed before a stream block is applied.

use std::collections::{HashMap, HashSet};

use crate::apply::{Applier, Change};
use crate::config::Pipeline;
use crate::error::{PipelineError, target};
use crate::schema::RelPlan;

/// The subtransactions of one streamed transaction seen so far, as savepoints in the order
/// they were opened on the target.
#[derive(Debug, Default)]
pub struct Savepoints {
    open: Vec<u32>,
    seen: HashSet<u32>,
}

/// The name of the savepoint standing for source subtransaction `xid`.
pub fn savepoint_name(xid: u32) -> String {
    format!("fig_sub_{xid}")
}

impl Savepoints {
    /// A change of (sub)transaction `xid` inside the streamed transaction `top`: the savepoint
    /// to open before applying it, when `xid` is a subtransaction not seen before.
    ///
    /// A savepoint opened at a subtransaction's first change is enough: subtransactions nest,
    /// so every change between that point and the subtransaction's abort belongs to it or to
    /// its children, which abort with it.
    pub fn enter(&mut self, top: u32, xid: u32) -> Option<String> {
        if xid == top || !self.seen.insert(xid) {
            return None;
        }
        self.open.push(xid);
        Some(savepoint_name(xid))
    }

    /// Subtransaction `xid` aborted: the savepoint to roll back to, or `None` when none of its
    /// changes were applied (it had none, or an enclosing one was rolled back already).
    pub fn abort(&mut self, xid: u32) -> Option<String> {
        let at = self.open.iter().position(|&x| x == xid)?;
        // Savepoints opened after it are gone with it on the target too.
        self.open.truncate(at);
        Some(savepoint_name(xid))
    }
}

/// One streamed transaction being applied.
pub struct Streamed {
    pub applier: Applier,
    /// It carries an origin this pipeline skips (an echo): nothing of it is applied.
    pub skipping: bool,
    savepoints: Savepoints,
    /// The target refused one of its changes; nothing more is sent until a rollback to a
    /// savepoint from before the refusal undoes it.
    pub failed: Option<PipelineError>,
}

/// Whether the target's refusal `e` of a change in a streamed transaction may be one the source
/// undoes later. A cancelled statement or a deadlock is between our own sessions, never the
/// source's doing: the pipeline has to hear of it at once.
fn deferrable(e: &PipelineError) -> bool {
    e.is_target_refusal() && !e.is_between_sessions()
}

impl Streamed {
    /// Keeps a refusal the source may still undo (the first one: later ones follow from it);
    /// anything else is the caller's.
    fn absorb(&mut self, result: Result<(), PipelineError>) -> Result<(), PipelineError> {
        match result {
            Err(e) if deferrable(&e) => {
                tracing::debug!(error = %e, "the target refused a change of a streamed transaction: waiting for its verdict");
                self.applier.discard_unsent();
                self.failed.get_or_insert(e);
                Ok(())
            }
            other => other,
        }
    }
}

/// The streamed transactions open now, and target sessions kept for the next ones.
pub struct InProgress {
    open: HashMap<u32, Streamed>,
    spare: Vec<Applier>,
    /// Sessions opened so far: the next one's number (and origin).
    sessions: usize,
}

impl InProgress {
    pub fn new() -> InProgress {
        InProgress {
            open: HashMap::new(),
            spare: Vec::new(),
            sessions: 0,
        }
    }

    /// StreamStart: the transaction `xid` continues, or (`first`) begins on a spare session or a
    /// new one that adopts `main`'s plans.
    pub async fn start(
        &mut self,
        xid: u32,
        first: bool,
        pipeline: &Pipeline,
        main: &Applier,
    ) -> Result<(), PipelineError> {
        if self.open.contains_key(&xid) {
            return Ok(());
        }
        if !first {
            return Err(PipelineError::Protocol(format!(
                "a stream block of transaction {xid} arrived without its first block"
            )));
        }
        if self.open.len() >= pipeline.max_streams {
            return Err(PipelineError::TooManyStreams {
                max: pipeline.max_streams,
            });
        }
        let applier = match self.spare.pop() {
            Some(applier) => applier,
            None => {
                let client = crate::source::connect(&pipeline.target)
                    .await
                    .map_err(target("connecting a session for a streamed transaction"))?;
                let origin = pipeline.stream_origin(self.sessions);
                let name = format!("{}-stream", pipeline.application_name());
                crate::pipeline::prepare_apply_session(&client, &name, &origin).await?;
                self.sessions += 1;
                let mut applier = Applier::new(client, &pipeline.name, pipeline.batch_rows);
                applier.adopt_plans(main);
                applier
            }
        };
        self.open.insert(
            xid,
            Streamed {
                applier,
                skipping: false,
                savepoints: Savepoints::default(),
                failed: None,
            },
        );
        Ok(())
    }

    fn get(&mut self, xid: u32) -> Result<&mut Streamed, PipelineError> {
        self.open.get_mut(&xid).ok_or_else(|| {
            PipelineError::Protocol(format!("a change of transaction {xid} outside its stream"))
        })
    }

    /// Marks the streamed transaction `top` as one not to apply (an echo).
    pub fn skip(&mut self, top: u32) -> Result<(), PipelineError> {
        self.get(top)?.skipping = true;
        Ok(())
    }

    /// A Relation message: every session's plan for it changes.
    pub async fn set_plan(&mut self, relation: u32, plan: &RelPlan) -> Result<(), PipelineError> {
        for streamed in self.open.values_mut() {
            // (Writes what is batched for the relation: the target may refuse it.)
            let set = streamed.applier.set_plan(relation, plan.clone()).await;
            streamed.absorb(set)?;
        }
        for applier in &mut self.spare {
            applier.set_plan(relation, plan.clone()).await?;
        }
        Ok(())
    }

    /// The transaction a change of (sub)transaction `xid` (`None`: the top one) of the streamed
    /// transaction `top` is applied in, with its savepoint opened first if it needs one; `None`
    /// when nothing of it is to be sent (skipped, or refused until its verdict).
    async fn enter(
        &mut self,
        top: u32,
        xid: Option<u32>,
    ) -> Result<Option<&mut Streamed>, PipelineError> {
        let streamed = self.get(top)?;
        if streamed.skipping {
            return Ok(None);
        }
        // Counted even while refused: a rollback to it must not reach further back.
        if let Some(name) = streamed.savepoints.enter(top, xid.unwrap_or(top))
            && streamed.failed.is_none()
        {
            let opened = streamed.applier.savepoint(&name).await;
            streamed.absorb(opened)?;
        }
        Ok(if streamed.failed.is_some() {
            None
        } else {
            Some(streamed)
        })
    }

    /// A row change of (sub)transaction `xid` in the streamed transaction `top`.
    pub async fn change(
        &mut self,
        top: u32,
        xid: Option<u32>,
        relation: u32,
        change: Change,
    ) -> Result<(), PipelineError> {
        if let Some(streamed) = self.enter(top, xid).await? {
            let applied = streamed.applier.change(relation, change).await;
            streamed.absorb(applied)?;
        }
        Ok(())
    }

    /// A TRUNCATE in (sub)transaction `xid` of the streamed transaction `top`.
    pub async fn truncate(
        &mut self,
        top: u32,
        xid: Option<u32>,
        relations: &[u32],
    ) -> Result<(), PipelineError> {
        if let Some(streamed) = self.enter(top, xid).await? {
            let applied = streamed.applier.truncate(relations).await;
            streamed.absorb(applied)?;
        }
        Ok(())
    }

    /// StreamAbort of `subxid` in `xid`: the whole transaction, or one subtransaction.
    pub async fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), PipelineError> {
        if xid == subxid {
            if let Some(mut streamed) = self.open.remove(&xid) {
                streamed.applier.rollback().await?;
                self.spare.push(streamed.applier);
            }
            return Ok(());
        }
        let Some(streamed) = self.open.get_mut(&xid) else {
            return Ok(());
        };
        let Some(name) = streamed.savepoints.abort(subxid) else {
            return Ok(());
        };
        if streamed.failed.is_none() {
            // What came before goes first (the target may refuse it, and the rollback undo it).
            let sent = streamed.applier.send_now().await;
            streamed.absorb(sent)?;
        }
        match streamed.applier.rollback_to(&name).await {
            // Everything since the savepoint is undone, a refused statement among it included.
            Ok(()) => streamed.failed = None,
            // The savepoint never reached the target: it was queued after a refused statement,
            // which stays refused.
            Err(e) if deferrable(&e) && streamed.failed.is_some() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// StreamCommit: the transaction, for the caller to commit (or skip), then [`recycle`].
    pub fn finish(&mut self, xid: u32) -> Result<Streamed, PipelineError> {
        self.open.remove(&xid).ok_or_else(|| {
            PipelineError::Protocol(format!(
                "a commit of streamed transaction {xid}, which never started"
            ))
        })
    }

    /// Keeps a finished transaction's session for the next one.
    pub fn recycle(&mut self, streamed: Streamed) {
        self.spare.push(streamed.applier);
    }
}

impl Default for InProgress {
    fn default() -> Self {
        InProgress::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step {
        /// A change of this xid (top is 1): the savepoint expected to open, if any.
        Change(u32, Option<u32>),
        /// This subtransaction aborts: the savepoint expected to be rolled back to, if any.
        Abort(u32, Option<u32>),
    }
    use Step::{Abort, Change};

    #[test]
    fn subtransactions_become_savepoints_and_aborts_roll_back_to_them() {
        let cases: &[(&str, &[Step])] = &[
            (
                "top-level changes only",
                &[Change(1, None), Change(1, None)],
            ),
            (
                "one savepoint per subtransaction, at its first change",
                &[
                    Change(1, None),
                    Change(5, Some(5)),
                    Change(5, None),
                    Change(1, None),
                    Change(6, Some(6)),
                ],
            ),
            (
                "an aborted subtransaction rolls back to its savepoint",
                &[Change(5, Some(5)), Abort(5, Some(5))],
            ),
            (
                "a subtransaction with no changes has nothing to undo",
                &[Change(1, None), Abort(7, None)],
            ),
            (
                // SAVEPOINT a; SAVEPOINT b; (b writes); RELEASE b; (a writes); ROLLBACK TO a:
                // the server reports b's abort, then a's.
                "aborting an outer subtransaction takes the inner ones with it",
                &[
                    Change(6, Some(6)),
                    Change(5, Some(5)),
                    Abort(6, Some(6)),
                    Abort(5, None),
                ],
            ),
            (
                "children listed after their parent find their savepoint gone",
                &[
                    Change(5, Some(5)),
                    Change(6, Some(6)),
                    Abort(5, Some(5)),
                    Abort(6, None),
                ],
            ),
            (
                "a later sibling opens a savepoint of its own",
                &[Change(5, Some(5)), Abort(5, Some(5)), Change(8, Some(8))],
            ),
        ];
        for (name, steps) in cases {
            let mut savepoints = Savepoints::default();
            for (i, step) in steps.iter().enumerate() {
                let (got, want) = match *step {
                    Change(xid, want) => (savepoints.enter(1, xid), want),
                    Abort(xid, want) => (savepoints.abort(xid), want),
                };
                assert_eq!(got, want.map(savepoint_name), "{name}: step {i}");
            }
        }
    }
}

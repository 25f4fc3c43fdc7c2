//! The flip's decisions, as pure functions: which side a direction takes the writes from and
//! gives them to, which stream carries the data each way, and what to do with a flip whose
//! process died.

use replication::config::{InitialCopy, Pipeline};
use serde::Serialize;

use crate::routes::WriteOwner;

/// Which way a flip moves a capability's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the monolith (legacy) to the extracted service.
    Cutover,
    /// From the extracted service back to the monolith.
    Rollback,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Cutover => "cutover",
            Direction::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "cutover" => Some(Direction::Cutover),
            "rollback" => Some(Direction::Rollback),
            _ => None,
        }
    }

    /// Who owns the writes before the flip.
    pub fn from(self) -> WriteOwner {
        match self {
            Direction::Cutover => WriteOwner::Legacy,
            Direction::Rollback => WriteOwner::Extracted,
        }
    }

    /// Who owns them after it.
    pub fn to(self) -> WriteOwner {
        match self {
            Direction::Cutover => WriteOwner::Extracted,
            Direction::Rollback => WriteOwner::Legacy,
        }
    }
}

/// One capability that can flip: its name (the route table's, and the write fences') and the
/// forward pipeline, which copies it from the legacy database (its source) to the extracted
/// service's (its target). Everything else follows from those.
#[derive(Debug, Clone)]
pub struct Movable {
    pub capability: String,
    pub forward: Pipeline,
}

impl Movable {
    /// The database whose fence says whether `side` owns the writes.
    pub fn database(&self, side: WriteOwner) -> &str {
        match side {
            WriteOwner::Legacy => &self.forward.source,
            WriteOwner::Extracted => &self.forward.target,
        }
    }

    /// The stream that runs while `owner` owns the writes: out of the owner's database into the
    /// other side's. The forward one skips what the reverse one applied (and the other way
    /// round), so neither echoes the other's changes. Started from a flip's cut (its slot
    /// prepared there), it never copies: the other side already holds the data. The forward
    /// stream's first start, before any flip, is the data-first split's copy.
    pub fn stream_while(&self, owner: WriteOwner) -> Pipeline {
        let reverse = self.forward.reversed();
        match owner {
            WriteOwner::Legacy => Pipeline {
                skip_origins_of: vec![reverse.name.clone()],
                ..self.forward.clone()
            },
            WriteOwner::Extracted => reverse,
        }
    }

    /// The feeds (streams to other databases, such as the reporting database's) that carry this
    /// capability's tables out of `side`'s database: before the other side takes the writes,
    /// they must have applied everything `side` accepted, or a change made after the flip could
    /// overtake one made before it where both meet.
    pub fn feeds_out_of<'a>(&self, side: WriteOwner, feeds: &'a [Pipeline]) -> Vec<&'a Pipeline> {
        let stream = self.stream_while(side);
        let tables: Vec<String> = stream
            .tables
            .iter()
            .map(|t| t.source_name().to_string())
            .collect();
        feeds
            .iter()
            .filter(|f| f.source == stream.source)
            .filter(|f| {
                f.tables
                    .iter()
                    .any(|t| tables.contains(&t.source_name().to_string()))
            })
            .collect()
    }

    /// [`Movable::stream_while`] as a flip prepares it: no copy, whatever the configuration says.
    pub fn stream_from_cut(&self, owner: WriteOwner) -> Pipeline {
        Pipeline {
            initial_copy: InitialCopy::None,
            ..self.stream_while(owner)
        }
    }
}

/// The steps of a flip, in order; the audit records the last one done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Recorded; nothing changed yet.
    Started,
    /// The new owner answers `/readyz`.
    Ready,
    /// The stream back into the old owner has its slot (before the new owner can take a
    /// write, and before the hold, so that creating it does not lengthen the pause).
    ReverseReady,
    /// Every router holds the capability's writes.
    Held,
    /// The old owner's database refuses its writes; the cut is known.
    Fenced,
    /// The stream into the new owner has applied past the cut, and the new owner's sequences
    /// are past the old owner's.
    CaughtUp,
    /// The new owner's database admits its writes. From here the flip finishes; it is never
    /// undone.
    Granted,
    /// The routers send the capability's writes to the new owner.
    Released,
}

const STEPS: [Step; 8] = [
    Step::Started,
    Step::Ready,
    Step::ReverseReady,
    Step::Held,
    Step::Fenced,
    Step::CaughtUp,
    Step::Granted,
    Step::Released,
];

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Started => "started",
            Step::Ready => "ready",
            Step::ReverseReady => "reverse_ready",
            Step::Held => "held",
            Step::Fenced => "fenced",
            Step::CaughtUp => "caught_up",
            Step::Granted => "granted",
            Step::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<Step> {
        STEPS.into_iter().find(|s| s.as_str() == text)
    }

    /// The step after this one: the one that failed when this is the last one recorded.
    pub fn next(self) -> Step {
        STEPS
            .into_iter()
            .find(|s| *s > self)
            .unwrap_or(Step::Released)
    }
}

/// The capability's phase as an operator reads it.
pub fn phase(owner: WriteOwner, flipping: bool) -> &'static str {
    match (flipping, owner) {
        (true, _) => "flipping",
        (false, WriteOwner::Legacy) => "monolith",
        (false, WriteOwner::Extracted) => "cutover",
    }
}

/// What to do with a flip that stopped before it ended (its process died, or a step failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The new owner's database admits writes: the flip happened; finish releasing to it.
    Finish,
    /// It does not: give the writes back to the old owner, drop the reverse stream's slot if it
    /// was prepared, release to the old owner.
    Undo,
}

/// Decided by the new owner's fence alone, not by the recorded step: the process may have died
/// between granting and recording it, and a grant is the one step that cannot be taken back
/// (the new owner may have accepted writes the old one does not have). Before the grant nobody
/// owned the writes since the fence (they were held), so giving them back loses nothing.
pub fn recover(new_owner_admits: bool) -> Recovery {
    if new_owner_admits {
        Recovery::Finish
    } else {
        Recovery::Undo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movable() -> Movable {
        let forward: Vec<Pipeline> = replication::config::parse(
            "[[pipelines]]\nname = \"catalog\"\nsource = \"postgres://m/monolith\"\n\
             target = \"postgres://c/catalog\"\n[[pipelines.tables]]\nsource = \"catalog.albums\"\n",
            |_| None,
        )
        .unwrap();
        Movable {
            capability: "catalog".into(),
            forward: forward[0].clone(),
        }
    }

    #[test]
    fn directions_move_the_writes_between_the_two_sides() {
        for (direction, from, to) in [
            (
                Direction::Cutover,
                WriteOwner::Legacy,
                WriteOwner::Extracted,
            ),
            (
                Direction::Rollback,
                WriteOwner::Extracted,
                WriteOwner::Legacy,
            ),
        ] {
            assert_eq!((direction.from(), direction.to()), (from, to));
            assert_eq!(Direction::parse(direction.as_str()), Some(direction));
        }
        assert_eq!(Direction::parse("sideways"), None);
    }

    #[test]
    fn the_stream_runs_out_of_the_owners_database_and_skips_the_other_streams_changes() {
        let m = movable();
        assert_eq!(m.database(WriteOwner::Legacy), "postgres://m/monolith");
        assert_eq!(m.database(WriteOwner::Extracted), "postgres://c/catalog");
        for owner in [WriteOwner::Legacy, WriteOwner::Extracted] {
            let stream = m.stream_while(owner);
            assert_eq!(stream.source, m.database(owner), "{owner:?}");
            let other = m.stream_while(match owner {
                WriteOwner::Legacy => WriteOwner::Extracted,
                WriteOwner::Extracted => WriteOwner::Legacy,
            });
            assert_eq!(
                stream.skip_origins_of,
                vec![other.name.clone()],
                "{owner:?}"
            );
            assert_eq!(m.stream_from_cut(owner).initial_copy, InitialCopy::None);
        }
        assert_eq!(m.stream_while(WriteOwner::Legacy).name, "catalog");
        assert_eq!(
            m.stream_while(WriteOwner::Legacy).initial_copy,
            InitialCopy::Snapshot,
            "the forward stream's first start copies"
        );
        assert_eq!(
            m.stream_while(WriteOwner::Extracted).name,
            "catalog_reverse"
        );
    }

    #[test]
    fn the_feeds_a_flip_waits_for_carry_the_capability_out_of_the_old_owner() {
        let m = movable();
        let feeds: Vec<Pipeline> = replication::config::parse(
            "[[pipelines]]\nname = \"reporting_monolith\"\nsource = \"postgres://m/monolith\"\n\
             target = \"postgres://r/reporting\"\n\
             [[pipelines.tables]]\nsource = \"orders.orders\"\n\
             [[pipelines.tables]]\nsource = \"catalog.albums\"\ntarget = \"raw_catalog.albums\"\n\
             [[pipelines]]\nname = \"reporting_catalog\"\nsource = \"postgres://c/catalog\"\n\
             target = \"postgres://r/reporting\"\n\
             [[pipelines.tables]]\nsource = \"catalog.albums\"\ntarget = \"raw_catalog.albums\"\n\
             [[pipelines]]\nname = \"orders_only\"\nsource = \"postgres://m/monolith\"\n\
             target = \"postgres://r/reporting\"\n\
             [[pipelines.tables]]\nsource = \"orders.orders\"\n",
            |_| None,
        )
        .unwrap();
        let names = |side| -> Vec<String> {
            m.feeds_out_of(side, &feeds)
                .iter()
                .map(|f| f.name.clone())
                .collect()
        };
        assert_eq!(names(WriteOwner::Legacy), ["reporting_monolith"]);
        assert_eq!(names(WriteOwner::Extracted), ["reporting_catalog"]);
        assert!(m.feeds_out_of(WriteOwner::Legacy, &[]).is_empty());
    }

    #[test]
    fn steps_are_ordered_and_spelled_once() {
        let mut step = Step::Started;
        while step != Step::Released {
            assert!(step.next() > step);
            assert_eq!(Step::parse(step.as_str()), Some(step));
            step = step.next();
        }
        assert_eq!(Step::parse("released"), Some(Step::Released));
        assert_eq!(Step::parse("done"), None);
    }

    #[test]
    fn phases_name_the_owner_unless_a_flip_runs() {
        assert_eq!(phase(WriteOwner::Legacy, false), "monolith");
        assert_eq!(phase(WriteOwner::Extracted, false), "cutover");
        assert_eq!(phase(WriteOwner::Extracted, true), "flipping");
    }

    #[test]
    fn an_interrupted_flip_is_finished_exactly_when_the_new_owner_was_granted() {
        assert_eq!(recover(true), Recovery::Finish);
        assert_eq!(recover(false), Recovery::Undo);
    }
}

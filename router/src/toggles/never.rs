//! Strategies that can never be on, which Unleash's SDKs evaluate as off whatever else the
//! toggle has, but which Unleash's engine (Yggdrasil) cannot compile, turning the whole toggle
//! off instead:
//!
//! - a constraint whose operator the engine does not know (Unleash stores it as it is; a
//!   constraint that cannot be checked does not match);
//! - a segment that does not exist (the admin API refuses to store one, but a document from an
//!   Unleash server is taken as SDKs take it).
//!
//! The engine gets a copy in which each such strategy holds one constraint that never matches;
//! the definitions themselves are kept, and served, unchanged.

use std::collections::HashMap;

use unleash_types::client_features::{ClientFeatures, Constraint, Operator, Segment, Strategy};

/// A constraint the engine compiles to `false`: it turns a version constraint whose value starts
/// with `v` into a constant false (Unleash's versions never have the `v`), before looking at
/// the context.
fn never() -> Constraint {
    Constraint {
        context_name: "appName".into(),
        operator: Operator::SemverEq,
        case_insensitive: false,
        inverted: false,
        values: None,
        value: Some("v0.0.0".into()),
    }
}

/// The first constraint in `constraints` with an unknown operator: its index and operator.
fn first_unknown(constraints: &[Constraint]) -> Option<(usize, &str)> {
    constraints
        .iter()
        .enumerate()
        .find_map(|(k, c)| match &c.operator {
            Operator::Unknown(op) => Some((k, op.as_str())),
            _ => None,
        })
}

/// Why `strategy` (number `j` of its toggle) can never be on, if it cannot: one of its own
/// constraints, or of a segment it names, has an operator the engine does not know, or a
/// segment it names does not exist.
fn why_off(j: usize, strategy: &Strategy, segments: &HashMap<i32, &Segment>) -> Option<String> {
    let head = format!("strategy {j} ({}) is always off", strategy.name);
    if let Some((k, op)) = first_unknown(strategy.constraints.as_deref().unwrap_or_default()) {
        return Some(format!(
            "{head}: its constraint {k} has the unknown operator {op:?}"
        ));
    }
    strategy.segments.iter().flatten().find_map(|id| {
        let Some(segment) = segments.get(id) else {
            return Some(format!("{head}: its segment {id} does not exist"));
        };
        let (k, op) = first_unknown(&segment.constraints)?;
        Some(format!(
            "{head}: constraint {k} of its segment {id} has the unknown operator {op:?}"
        ))
    })
}

/// The copy of `features` the engine compiles, and per toggle why some strategies never match.
/// Only the strategies concerned differ from `features`.
pub fn for_engine(features: &ClientFeatures) -> (ClientFeatures, HashMap<String, Vec<String>>) {
    let segments: HashMap<i32, &Segment> = features
        .segments
        .iter()
        .flatten()
        .map(|s| (s.id, s))
        .collect();
    let mut compiled = features.clone();
    let mut notes: HashMap<String, Vec<String>> = HashMap::new();
    for feature in &mut compiled.features {
        for (j, strategy) in feature.strategies.iter_mut().flatten().enumerate() {
            if let Some(note) = why_off(j, strategy, &segments) {
                strategy.constraints = Some(vec![never()]);
                strategy.segments = None;
                notes.entry(feature.name.clone()).or_default().push(note);
            }
        }
    }
    (compiled, notes)
}

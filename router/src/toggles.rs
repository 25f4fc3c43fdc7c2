//! Toggles are Unleash feature definitions (the client-features document), evaluated by
//! Unleash's own engine, so every Unleash SDK reading the same definitions agrees with us.

mod never;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use unleash_types::client_features::{ClientFeatures, Constraint, Operator, Segment};
use unleash_yggdrasil::{Context, EngineState, UpdateMessage};

use crate::decide::RequestHead;

/// One Unleash feature definition.
pub use unleash_types::client_features::ClientFeature as Feature;

/// Whether a toggle is on for a request.
pub trait Toggles {
    fn enabled(&self, name: &str, head: &RequestHead) -> bool;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToggleError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ToggleError {
    /// The same problem, its field seen from a document that holds the checked part at `path`.
    pub fn within(self, path: &str) -> ToggleError {
        let ToggleError::Invalid { field, message } = self;
        ToggleError::Invalid {
            field: format!("{path}.{field}"),
            message,
        }
    }

    /// The same problem, its field seen from the part at `path` (the inverse of [`Self::within`]).
    pub fn under(self, path: &str) -> ToggleError {
        let ToggleError::Invalid { field, message } = self;
        let field = match field.strip_prefix(path).and_then(|f| f.strip_prefix('.')) {
            Some(rest) => rest.to_string(),
            None => field,
        };
        ToggleError::Invalid { field, message }
    }
}

/// One immutable generation of toggles: the definitions and the engine compiled from them.
pub struct ToggleSet {
    /// As stored and served: constraints with operators the engine does not know included.
    features: ClientFeatures,
    /// Compiled from [`never::for_engine`]'s copy of `features`.
    engine: EngineState,
    /// Per toggle, why some of its strategies can never be on.
    notes: HashMap<String, Vec<String>>,
    /// Increases with every change; shown in metrics and the admin API.
    pub version: i64,
}

impl std::fmt::Debug for ToggleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToggleSet")
            .field("toggles", &self.features.features.len())
            .field("version", &self.version)
            .finish()
    }
}

/// Strategies the router understands; anything else would silently evaluate to off.
const KNOWN_STRATEGIES: [&str; 8] = [
    "default",
    "flexibleRollout",
    "userWithId",
    "gradualRolloutUserId",
    "gradualRolloutSessionId",
    "gradualRolloutRandom",
    "remoteAddress",
    "applicationHostname",
];

/// Unleash's limit on the length of a feature name.
pub const NAME_MAX_LEN: usize = 100;

/// Why a toggle name breaks Unleash's rules (see [`check_name`]).
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("a toggle name must not be empty")]
    Empty,
    #[error("a toggle name must be at most {NAME_MAX_LEN} characters")]
    TooLong,
    #[error(
        "a toggle name may only contain A-Z a-z 0-9 - _ . ! ~ * ' ( ) (Unleash requires URL-friendly names)"
    )]
    NotUrlFriendly,
    #[error("a toggle name must not be . or ..")]
    Dots,
}

/// Unleash's rules for a feature name: 1 to [`NAME_MAX_LEN`] characters, each one that
/// `encodeURIComponent` leaves as it is (`A-Z a-z 0-9 - _ . ! ~ * ' ( )`), and not `.` or `..`,
/// which are not path segments of their own. A name that passes is the same in a path, a query
/// and the store, and holds nothing PostgreSQL refuses.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong);
    }
    let url_friendly = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
    if !name.bytes().all(url_friendly) {
        return Err(NameError::NotUrlFriendly);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

/// What the admin API accepts to store: [`validate`], and every name follows [`check_name`].
/// (Toggles read from an Unleash server or already stored are not held to the name rules.)
pub fn validate_input(features: &ClientFeatures) -> Result<(), ToggleError> {
    for (i, f) in features.features.iter().enumerate() {
        check_name(&f.name).map_err(|e| ToggleError::Invalid {
            field: format!("features[{i}].name"),
            message: e.to_string(),
        })?;
    }
    validate(features)
}

/// Parses and checks a client-features document: 400-worthy problems name the field.
pub fn parse_features(json: &[u8]) -> Result<ClientFeatures, ToggleError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let features: ClientFeatures =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ToggleError::Invalid {
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    validate(&features)?;
    Ok(features)
}

/// Checks a client-features document on its own: everything but whether the segments its
/// strategies name exist, which depends on what else is stored (see [`check_references`]).
pub fn validate(features: &ClientFeatures) -> Result<(), ToggleError> {
    let invalid = |field: String, message: String| Err(ToggleError::Invalid { field, message });
    let mut ids = std::collections::HashSet::new();
    for (i, segment) in features.segments.iter().flatten().enumerate() {
        if !ids.insert(segment.id) {
            return invalid(
                format!("segments[{i}].id"),
                format!("segment {} is defined twice", segment.id),
            );
        }
        validate_segment(segment).map_err(|e| e.within(&format!("segments[{i}]")))?;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, f) in features.features.iter().enumerate() {
        if f.name.trim().is_empty() {
            return invalid(
                format!("features[{i}].name"),
                "a toggle needs a name".into(),
            );
        }
        if !seen.insert(f.name.as_str()) {
            return invalid(
                format!("features[{i}].name"),
                format!("{} is defined twice", f.name),
            );
        }
        for (j, s) in f.strategies.iter().flatten().enumerate() {
            let field = format!("features[{i}].strategies[{j}]");
            for (k, id) in s.segments.iter().flatten().enumerate() {
                if *id <= 0 {
                    return invalid(
                        format!("{field}.segments[{k}]"),
                        "a segment id is a positive integer".into(),
                    );
                }
            }
            if !KNOWN_STRATEGIES.contains(&s.name.as_str()) {
                return invalid(
                    format!("{field}.name"),
                    format!("unknown strategy {:?}", s.name),
                );
            }
            if s.name == "flexibleRollout" {
                let rollout = s.parameters.as_ref().and_then(|p| p.get("rollout"));
                let ok = rollout
                    .and_then(|r| r.trim().parse::<u32>().ok())
                    .is_some_and(|r| r <= 100);
                if !ok {
                    return invalid(
                        format!("{field}.parameters.rollout"),
                        "flexibleRollout needs a rollout percentage from 0 to 100".into(),
                    );
                }
            }
            let parameter = |key: &str| s.parameters.as_ref().and_then(|p| p.get(key));
            for key in SPLICED_PARAMETERS {
                if parameter(key).is_some_and(|v| v.contains(['"', '\\'])) {
                    return invalid(
                        format!("{field}.parameters.{key}"),
                        format!("{key} must not contain \" or \\"),
                    );
                }
            }
            // User ids are quoted with their `"` escaped; only a `\` at the end still escapes
            // the closing quote.
            let ids = parameter("userIds");
            if ids.is_some_and(|ids| ids.split(',').any(|id| id.trim().ends_with('\\'))) {
                return invalid(
                    format!("{field}.parameters.userIds"),
                    "a user id must not end with \\".into(),
                );
            }
            for (k, c) in s.constraints.iter().flatten().enumerate() {
                if let Err((part, message)) = check_constraint(c) {
                    return invalid(format!("{field}.constraints[{k}].{part}"), message);
                }
            }
            let weights = s.variants.iter().flatten().map(|v| v.weight);
            check_weights(weights, format!("{field}.variants"))?;
        }
        let weights = f.variants.iter().flatten().map(|v| v.weight);
        check_weights(weights, format!("features[{i}].variants"))?;
    }
    Ok(())
}

/// A segment on its own: a positive id, and constraints the engine can compile (the same rules
/// as a strategy's). Fields are the segment's own (`constraints[0].value`).
pub fn validate_segment(segment: &Segment) -> Result<(), ToggleError> {
    if segment.id <= 0 {
        return Err(ToggleError::Invalid {
            field: "id".into(),
            message: "a segment id is a positive integer".into(),
        });
    }
    for (k, c) in segment.constraints.iter().enumerate() {
        if let Err((part, message)) = check_constraint(c) {
            return Err(ToggleError::Invalid {
                field: format!("constraints[{k}].{part}"),
                message,
            });
        }
    }
    Ok(())
}

/// Every segment a strategy names is in the document's `segments`.
fn check_references(features: &ClientFeatures) -> Result<(), ToggleError> {
    let known: std::collections::HashSet<i32> =
        features.segments.iter().flatten().map(|s| s.id).collect();
    for (i, f) in features.features.iter().enumerate() {
        for (j, s) in f.strategies.iter().flatten().enumerate() {
            for (k, id) in s.segments.iter().flatten().enumerate() {
                if !known.contains(id) {
                    return Err(ToggleError::Invalid {
                        field: format!("features[{i}].strategies[{j}].segments[{k}]"),
                        message: format!("there is no segment {id}"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks definitions to be stored beside `segments` (the stored ones): [`validate`],
/// [`check_references`], and the engine compiles each. Fields name the definitions
/// (`features[1].strategies[0].segments[0]`).
pub fn check_with_segments(features: &[Feature], segments: &[Segment]) -> Result<(), ToggleError> {
    let document = ClientFeatures {
        version: 2,
        features: features.to_vec(),
        segments: Some(segments.to_vec()),
        query: None,
        meta: None,
    };
    check_references(&document)?;
    ToggleSet::new(document, 0).map(drop)
}

/// Strategy parameters that Unleash's engine (Yggdrasil) copies into the rule text it compiles,
/// inside quotes that it does not escape: a `"` or `\` there could end the quoted string early
/// and turn the rest into rules of its own (some of which make evaluation panic).
const SPLICED_PARAMETERS: [&str; 4] = ["groupId", "stickiness", "IPs", "hostNames"];

/// A constraint the engine can compile only as the constraint it is (see
/// [`SPLICED_PARAMETERS`]): a context name without `"` or `\`; a number, date or version value
/// of exactly the form the engine's grammar reads, since it is copied in unquoted; and no string
/// value ending in `\`, which would escape its closing quote. Returns the field and the problem.
fn check_constraint(c: &Constraint) -> Result<(), (String, String)> {
    // The engine never sees a constraint whose operator it does not know (see `never`), so
    // nothing of it can reach the rule text; Unleash keeps such constraints as they are.
    if let Operator::Unknown(_) = c.operator {
        return Ok(());
    }
    if c.context_name.contains(['"', '\\']) {
        return Err((
            "contextName".into(),
            "a context name must not contain \" or \\".into(),
        ));
    }
    let raw = c.value.as_deref();
    if let Some(raw) = raw {
        // Around an unquoted value, spaces and tabs are the grammar's whitespace.
        let v = raw.trim_matches([' ', '\t']);
        let (fits, expected) = match c.operator {
            Operator::NumEq
            | Operator::NumGt
            | Operator::NumGte
            | Operator::NumLt
            | Operator::NumLte => (is_number(v), "a number such as 42 or -1.5"),
            Operator::DateAfter | Operator::DateBefore => {
                (is_date(v), "a date such as 2026-01-31T12:00:00Z")
            }
            Operator::SemverEq
            | Operator::SemverGt
            | Operator::SemverGte
            | Operator::SemverLt
            | Operator::SemverLte => (
                // The engine itself turns a value starting with `v` into a false constraint.
                raw.starts_with('v') || is_semver(v),
                "a version such as 1.2.3 or 1.2.3-beta.1",
            ),
            _ => (true, ""),
        };
        if !fits {
            return Err(("value".into(), format!("the value must be {expected}")));
        }
    }
    if c.operator == Operator::RegexMatch && raw.is_some_and(|v| v.ends_with('\\')) {
        return Err(("value".into(), "the value must not end with \\".into()));
    }
    for (n, v) in c.values.iter().flatten().enumerate() {
        if v.ends_with('\\') {
            return Err((
                format!("values[{n}]"),
                "a value must not end with \\".into(),
            ));
        }
    }
    Ok(())
}

/// The engine's `num`: `[+-]digits[.digits][(e|E)[+-]digits]`.
fn is_number(v: &str) -> bool {
    fn int(v: &str) -> Option<&str> {
        let v = v.strip_prefix(['+', '-']).unwrap_or(v);
        let digits = v.len() - v.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        (digits > 0).then(|| &v[digits..])
    }
    let Some(mut rest) = int(v) else {
        return false;
    };
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if let Some(exponent) = rest.strip_prefix(['e', 'E']) {
        return int(exponent) == Some("");
    }
    rest.is_empty()
}

/// The engine's `date`: `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`.
fn is_date(v: &str) -> bool {
    if !v.is_ascii() {
        return false;
    }
    let shape = |v: &str, pattern: &str| {
        v.len() == pattern.len()
            && v.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'd' => c.is_ascii_digit(),
                b's' => c == b'+' || c == b'-',
                p => c == p,
            })
    };
    let (time, zone) = match v.strip_suffix('Z') {
        Some(time) => (time, "Z"),
        None if v.len() >= 6 => v.split_at(v.len() - 6),
        None => return false,
    };
    (zone == "Z" || shape(zone, "sdd:dd"))
        && (shape(time, "dddd-dd-ddTdd:dd:dd") || shape(time, "dddd-dd-ddTdd:dd:dd.ddd"))
}

/// The engine's `semver`: `digits.digits.digits[-fragment][+fragment]`, a fragment being
/// dot-separated runs of `A-Z a-z 0-9 -`.
fn is_semver(v: &str) -> bool {
    let fragment = |f: &str| {
        f.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    let (core, build) = match v.split_once('+') {
        Some((core, build)) => (core, Some(build)),
        None => (v, None),
    };
    let (numbers, patch) = match core.split_once('-') {
        Some((numbers, patch)) => (numbers, Some(patch)),
        None => (core, None),
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && patch.is_none_or(fragment)
        && build.is_none_or(fragment)
}

/// Each variant list must have weights the engine can draw from: none negative, and a total
/// above 0 that fits in 32 bits (it divides by the total, and panics on 0).
fn check_weights(weights: impl Iterator<Item = i32>, field: String) -> Result<(), ToggleError> {
    let mut total: u64 = 0;
    let mut count = 0;
    for (k, weight) in weights.enumerate() {
        if weight < 0 {
            return Err(ToggleError::Invalid {
                field: format!("{field}[{k}].weight"),
                message: "a variant's weight must not be negative".into(),
            });
        }
        total += weight as u64;
        count += 1;
    }
    if count > 0 && !(1..=u64::from(u32::MAX)).contains(&total) {
        return Err(ToggleError::Invalid {
            field,
            message: format!("the variants' weights must add up to 1 to {}", u32::MAX),
        });
    }
    Ok(())
}

/// `"on"` or `"off"` when a toggle no longer varies between requests: disabled, at 0% or 100%,
/// or enabled with only the default strategy. `None` while it is a partial rollout.
pub fn settled(feature: &unleash_types::client_features::ClientFeature) -> Option<&'static str> {
    if !feature.enabled {
        return Some("off");
    }
    let strategies = feature.strategies.as_deref().unwrap_or_default();
    let rollouts: Vec<Option<u32>> = strategies
        .iter()
        .map(|s| match s.name.as_str() {
            "default"
                if s.constraints.as_ref().is_none_or(Vec::is_empty)
                    && s.segments.as_ref().is_none_or(Vec::is_empty) =>
            {
                Some(100)
            }
            "flexibleRollout" => s
                .parameters
                .as_ref()
                .and_then(|p| p.get("rollout"))
                .and_then(|r| r.parse().ok()),
            _ => None,
        })
        .collect();
    match rollouts.as_slice() {
        [] => Some("on"),
        all if all.contains(&Some(100)) => Some("on"),
        all if all.iter().all(|r| *r == Some(0)) => Some("off"),
        _ => None,
    }
}

impl ToggleSet {
    /// Compiles a whole set: [`validate`], and the engine takes every toggle (one it cannot
    /// compile is refused, naming it: `features[<name>]`). A strategy that can never be on (an
    /// unknown operator, a segment that does not exist) is off, as in Unleash's SDKs; the admin
    /// API refuses the latter before storing ([`check_with_segments`]).
    pub fn new(features: ClientFeatures, version: i64) -> Result<ToggleSet, ToggleError> {
        validate(&features)?;
        let (compiled, notes) = never::for_engine(&features);
        let engine = EngineState::default();
        if let Some(warnings) = engine.take_state(UpdateMessage::FullResponse(compiled))
            && let Some(w) = warnings.first()
        {
            return Err(ToggleError::Invalid {
                field: format!("features[{}]", w.toggle_name),
                message: w.message.clone(),
            });
        }
        Ok(ToggleSet {
            features,
            engine,
            notes,
            version,
        })
    }

    pub fn empty() -> ToggleSet {
        ToggleSet {
            features: ClientFeatures {
                version: 2,
                features: Vec::new(),
                segments: None,
                query: None,
                meta: None,
            },
            engine: EngineState::default(),
            notes: HashMap::new(),
            version: 0,
        }
    }

    /// Why some of a toggle's strategies can never be on (empty when none is so).
    pub fn notes(&self, name: &str) -> &[String] {
        self.notes.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The document Unleash's client API serves: with the segments when the SDK says it reads
    /// them, with each segment's constraints copied into the strategies that name it otherwise
    /// (see [`wire::client_document`]).
    pub fn client_document(&self, with_segments: bool) -> serde_json::Value {
        wire::client_document(&self.features, with_segments)
    }

    pub fn features(&self) -> &ClientFeatures {
        &self.features
    }

    /// Unleash's evaluation for an explicit context (the admin API's `evaluate`).
    pub fn evaluate(&self, name: &str, context: &Context) -> bool {
        self.engine.is_enabled(name, context, &None)
    }

    /// The variant Unleash picks for this context, as JSON.
    pub fn variant(&self, name: &str, context: &Context) -> serde_json::Value {
        serde_json::to_value(self.engine.get_variant(name, context, &None)).unwrap_or_default()
    }
}

impl Toggles for ToggleSet {
    fn enabled(&self, name: &str, head: &RequestHead) -> bool {
        let context = Context {
            user_id: head.user_id.map(str::to_string),
            session_id: head.session_id.map(str::to_string),
            remote_address: head.remote_addr.map(str::to_string),
            ..Context::default()
        };
        self.engine.is_enabled(name, &context, &None)
    }
}

/// The live toggles: one value swapped atomically, so a request sees one generation throughout.
#[derive(Debug)]
pub struct LiveToggles(ArcSwap<ToggleSet>);

impl LiveToggles {
    pub fn new(set: ToggleSet) -> LiveToggles {
        LiveToggles(ArcSwap::from_pointee(set))
    }

    pub fn load(&self) -> Arc<ToggleSet> {
        self.0.load_full()
    }

    pub fn store(&self, set: ToggleSet) {
        self.0.store(Arc::new(set));
    }

    /// Installs `set` unless what is live is as new or newer; returns whether it did. Atomic, so
    /// two reloads racing cannot leave the older of two generations live.
    pub fn store_if_newer(&self, set: ToggleSet) -> bool {
        let new = Arc::new(set);
        let previous = self.0.rcu(|current| {
            if current.version >= new.version {
                current.clone()
            } else {
                new.clone()
            }
        });
        previous.version < new.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(doc: serde_json::Value) -> ToggleSet {
        let features = parse_features(doc.to_string().as_bytes()).unwrap();
        ToggleSet::new(features, 1).unwrap()
    }

    fn rollout(name: &str, percent: u32) -> serde_json::Value {
        json!({"version": 2, "features": [{
            "name": name, "enabled": true,
            "strategies": [{"name": "flexibleRollout", "parameters": {
                "rollout": percent.to_string(), "stickiness": "userId", "groupId": name}}]
        }]})
    }

    fn user(id: &str) -> RequestHead<'_> {
        RequestHead {
            method: "GET",
            path: "/catalog/albums",
            user_id: Some(id),
            ..RequestHead::default()
        }
    }

    #[test]
    fn a_user_always_lands_on_the_same_side() {
        let toggles = set(rollout("catalog.reads", 50));
        for u in ["alice", "bob", "carol", "user-17"] {
            let first = toggles.enabled("catalog.reads", &user(u));
            for _ in 0..1_000 {
                assert_eq!(toggles.enabled("catalog.reads", &user(u)), first, "{u}");
            }
        }
    }

    #[test]
    fn a_quarter_rollout_sends_a_quarter_of_users() {
        let toggles = set(rollout("catalog.reads", 25));
        let ids: Vec<String> = (0..10_000).map(|i| format!("customer-{i}")).collect();
        let moved = ids
            .iter()
            .filter(|id| toggles.enabled("catalog.reads", &user(id)))
            .count();
        let share = moved as f64 / ids.len() as f64;
        assert!((0.23..=0.27).contains(&share), "{share}");
    }

    #[test]
    fn default_strategy_and_disabled_toggles() {
        let toggles = set(json!({"version": 2, "features": [
            {"name": "on", "enabled": true, "strategies": [{"name": "default"}]},
            {"name": "off", "enabled": false, "strategies": [{"name": "default"}]}
        ]}));
        assert!(toggles.enabled("on", &user("x")));
        assert!(!toggles.enabled("off", &user("x")));
        assert!(!toggles.enabled("unknown", &user("x")));
    }

    #[test]
    fn constraints_are_honoured() {
        let toggles = set(json!({"version": 2, "features": [{
            "name": "beta", "enabled": true,
            "strategies": [{"name": "default", "constraints": [
                {"contextName": "userId", "operator": "IN", "values": ["tester"]}]}]
        }]}));
        assert!(toggles.enabled("beta", &user("tester")));
        assert!(!toggles.enabled("beta", &user("someone")));
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let field = |doc: serde_json::Value| match parse_features(doc.to_string().as_bytes()) {
            Err(ToggleError::Invalid { field, .. }) => field,
            Ok(_) => panic!("accepted {doc}"),
        };
        assert_eq!(
            field(json!({"version": 2, "features": [{"name": "x", "enabled": "yes"}]})),
            "features[0].enabled"
        );
        assert_eq!(
            field(
                json!({"version": 2, "features": [{"name": "x", "enabled": true, "strategies": [{"name": "magic"}]}]})
            ),
            "features[0].strategies[0].name"
        );
        assert_eq!(
            field(
                rollout("x", 0)
                    .to_string()
                    .replace("\"0\"", "\"150\"")
                    .parse()
                    .unwrap()
            ),
            "features[0].strategies[0].parameters.rollout"
        );
        assert_eq!(
            field(json!({"version": 2, "features": [
                {"name": "x", "enabled": true}, {"name": "x", "enabled": false}]})),
            "features[1].name"
        );
    }

    fn context(user: &str, app: &str) -> Context {
        Context {
            user_id: Some(user.into()),
            app_name: Some(app.into()),
            ..Context::default()
        }
    }

    #[test]
    fn strategies_match_only_inside_their_segments() {
        let toggles = set(json!({"version": 2,
            "segments": [
                {"id": 1, "constraints": [{"contextName": "appName", "operator": "IN", "values": ["web"]}]},
                {"id": 2, "constraints": [{"contextName": "userId", "operator": "STR_STARTS_WITH", "values": ["beta-"]}]}],
            "features": [
                {"name": "both", "enabled": true, "strategies": [{"name": "default", "segments": [1, 2]}]},
                {"name": "web", "enabled": true, "strategies": [{"name": "default", "segments": [1]}]}]}));
        assert!(toggles.evaluate("both", &context("beta-1", "web")));
        assert!(!toggles.evaluate("both", &context("beta-1", "app")));
        assert!(!toggles.evaluate("both", &context("alpha", "web")));
        assert!(toggles.evaluate("web", &context("alpha", "web")));
        assert!(!toggles.evaluate("web", &context("alpha", "app")));
    }

    #[test]
    fn segment_problems_name_the_field() {
        let doc = |segments: serde_json::Value, strategy_segments: serde_json::Value| {
            json!({"version": 2, "segments": segments, "features": [{"name": "x", "enabled": true,
                "strategies": [{"name": "default", "segments": strategy_segments}]}]})
        };
        let parsed = |doc: serde_json::Value| parse_features(doc.to_string().as_bytes());
        // As the admin API checks a document before storing it.
        let whole = |doc: serde_json::Value| match parsed(doc).and_then(|f| {
            check_with_segments(&f.features, f.segments.as_deref().unwrap_or_default())
        }) {
            Err(ToggleError::Invalid { field, .. }) => field,
            Ok(()) => "accepted".into(),
        };
        let ok = json!({"id": 1, "constraints": []});
        let cases = [
            (doc(json!([ok, ok]), json!([1])), "segments[1].id"),
            (
                doc(json!([{"id": 0, "constraints": []}]), json!([])),
                "segments[0].id",
            ),
            (
                doc(json!([ok]), json!([1, -2])),
                "features[0].strategies[0].segments[1]",
            ),
            (
                doc(
                    json!([{"id": 1, "constraints": [{"contextName": "n", "operator": "NUM_EQ", "value": "1 or true"}]}]),
                    json!([1]),
                ),
                "segments[0].constraints[0].value",
            ),
            (doc(json!([{"id": 1}]), json!([1])), "segments[0]"),
            // A segment that is neither in the document nor given beside it.
            (
                doc(json!([ok]), json!([1, 7])),
                "features[0].strategies[0].segments[1]",
            ),
            (doc(json!([ok]), json!([1])), "accepted"),
        ];
        for (doc, expected) in cases {
            assert_eq!(whole(doc.clone()), expected, "{doc}");
        }
        // Checked alone, a document may name segments stored before it; beside them it passes.
        let names_stored = parsed(doc(json!([]), json!([7]))).unwrap();
        let stored: Vec<Segment> =
            serde_json::from_value(json!([{"id": 7, "constraints": []}])).unwrap();
        assert!(validate(&names_stored).is_ok());
        assert!(check_with_segments(&names_stored.features, &stored).is_ok());
        assert_eq!(
            check_with_segments(&names_stored.features, &[]),
            Err(ToggleError::Invalid {
                field: "features[0].strategies[0].segments[0]".into(),
                message: "there is no segment 7".into()
            })
        );
    }

    /// A document from an Unleash server is taken as its SDKs take it: a strategy naming a
    /// segment that does not exist is off (the admin API refuses to store one).
    #[test]
    fn a_strategy_naming_a_missing_segment_is_off() {
        let toggles = set(json!({"version": 2,
            "segments": [{"id": 1, "constraints": []}],
            "features": [{"name": "x", "enabled": true, "strategies": [
                {"name": "default", "segments": [1, 404]},
                {"name": "userWithId", "parameters": {"userIds": "b"}}]}]}));
        assert!(!toggles.evaluate("x", &context("a", "web")));
        assert!(toggles.evaluate("x", &context("b", "web")));
        assert_eq!(
            toggles.notes("x"),
            ["strategy 0 (default) is always off: its segment 404 does not exist"]
        );
    }

    /// As in Unleash's SDKs, a constraint whose operator is unknown does not match, so its
    /// strategy is off; the toggle's other strategies still count, and the definition is kept.
    #[test]
    fn an_unknown_operator_turns_off_only_its_strategy() {
        let future = |inverted: bool| json!({"contextName": "userId", "operator": "SOME_FUTURE_OP", "values": ["a"], "inverted": inverted});
        let toggles = set(json!({"version": 2,
            "segments": [{"id": 3, "constraints": [
                {"contextName": "appName", "operator": "IN", "values": ["web"]},
                {"contextName": "appName", "operator": "NEXT_OP", "value": "x"}]}],
            "features": [
                {"name": "mixed", "enabled": true, "strategies": [
                    {"name": "default", "constraints": [future(false)],
                     "variants": [{"name": "never", "weight": 1, "stickiness": "default"}]},
                    {"name": "userWithId", "parameters": {"userIds": "b"}}]},
                {"name": "inverted", "enabled": true, "strategies": [
                    {"name": "default", "constraints": [
                        {"contextName": "userId", "operator": "IN", "values": ["a", "b"]}, future(true)]}]},
                {"name": "by.segment", "enabled": true, "strategies": [
                    {"name": "default", "segments": [3]}, {"name": "default", "constraints": [
                        {"contextName": "userId", "operator": "IN", "values": ["c"]}]}]},
                {"name": "plain", "enabled": true}]}));
        for user in ["a", "b", "c"] {
            let ctx = context(user, "web");
            assert_eq!(toggles.evaluate("mixed", &ctx), user == "b", "{user}");
            assert!(!toggles.evaluate("inverted", &ctx), "{user}");
            assert_eq!(toggles.evaluate("by.segment", &ctx), user == "c", "{user}");
            assert!(toggles.evaluate("plain", &ctx));
            assert_ne!(toggles.variant("mixed", &ctx)["name"], "never", "{user}");
        }
        assert_eq!(
            toggles.notes("mixed"),
            [
                "strategy 0 (default) is always off: its constraint 0 has the unknown operator \"SOME_FUTURE_OP\""
            ]
        );
        assert_eq!(
            toggles.notes("inverted"),
            [
                "strategy 0 (default) is always off: its constraint 1 has the unknown operator \"SOME_FUTURE_OP\""
            ]
        );
        assert_eq!(
            toggles.notes("by.segment"),
            [
                "strategy 0 (default) is always off: constraint 1 of its segment 3 has the unknown operator \"NEXT_OP\""
            ]
        );
        assert!(toggles.notes("plain").is_empty());
        // Served as it came, operator included.
        let served = toggles.client_document(true);
        assert_eq!(
            served["features"][0]["strategies"][0]["constraints"][0]["operator"],
            "SOME_FUTURE_OP"
        );
        assert_eq!(
            served["segments"][0]["constraints"][1]["operator"],
            "NEXT_OP"
        );
    }

    #[test]
    fn a_toggle_is_settled_when_no_request_can_differ() {
        let settles = |feature: serde_json::Value| {
            settled(&serde_json::from_value::<Feature>(feature).unwrap())
        };
        let default = |extra: serde_json::Value| {
            let mut s = json!({"name": "default"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"name": "x", "enabled": true, "strategies": [s]})
        };
        let cases = [
            (json!({"name": "x", "enabled": false}), Some("off")),
            (json!({"name": "x", "enabled": true}), Some("on")),
            (default(json!({})), Some("on")),
            (default(json!({"segments": []})), Some("on")),
            (default(json!({"segments": [1]})), None),
            (
                default(
                    json!({"constraints": [{"contextName": "userId", "operator": "IN", "values": ["a"]}]}),
                ),
                None,
            ),
            (rollout("x", 0)["features"][0].clone(), Some("off")),
            (rollout("x", 100)["features"][0].clone(), Some("on")),
            (rollout("x", 30)["features"][0].clone(), None),
        ];
        for (feature, expected) in cases {
            assert_eq!(settles(feature.clone()), expected, "{feature}");
        }
    }

    #[test]
    fn an_older_generation_never_replaces_a_newer_one() {
        let live = LiveToggles::new(ToggleSet::empty());
        let mut newer = set(rollout("a", 100));
        newer.version = 5;
        let mut older = set(rollout("a", 0));
        older.version = 4;
        assert!(live.store_if_newer(newer));
        assert!(!live.store_if_newer(older));
        assert_eq!(live.load().version, 5);
    }

    #[test]
    fn live_toggles_swap_whole_generations() {
        let live = LiveToggles::new(ToggleSet::empty());
        let before = live.load();
        live.store(set(rollout("catalog.reads", 100)));
        assert_eq!(
            before.version, 0,
            "a loaded generation never changes under its reader"
        );
        assert!(live.load().enabled("catalog.reads", &user("u")));
    }

    #[test]
    fn toggle_names_follow_unleash_rules() {
        let longest = "a".repeat(NAME_MAX_LEN);
        let too_long = "a".repeat(NAME_MAX_LEN + 1);
        let cases: [(&str, Result<(), NameError>); 18] = [
            ("catalog.reads", Ok(())),
            ("a", Ok(())),
            ("A-Z_a-z.0-9!~*'()", Ok(())),
            ("...", Ok(())),
            (&longest, Ok(())),
            ("", Err(NameError::Empty)),
            (&too_long, Err(NameError::TooLong)),
            (".", Err(NameError::Dots)),
            ("..", Err(NameError::Dots)),
            ("a b", Err(NameError::NotUrlFriendly)),
            ("a/b", Err(NameError::NotUrlFriendly)),
            ("a%00", Err(NameError::NotUrlFriendly)),
            ("a\0", Err(NameError::NotUrlFriendly)),
            ("café", Err(NameError::NotUrlFriendly)),
            ("\u{fffd}", Err(NameError::NotUrlFriendly)),
            ("a\"b", Err(NameError::NotUrlFriendly)),
            ("a?b#c&d=e+f:g@h$i,j;k", Err(NameError::NotUrlFriendly)),
            ("tab\there", Err(NameError::NotUrlFriendly)),
        ];
        for (name, expected) in cases {
            assert_eq!(check_name(name), expected, "{name:?}");
        }
        // Definitions given to the admin API are held to the same rules, naming the field.
        let doc = |name: &str| {
            parse_features(
                json!({"version": 2, "features": [{"name": name, "enabled": true}]})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap()
        };
        assert!(validate_input(&doc("ok")).is_ok());
        assert!(matches!(
            validate_input(&doc("a b")),
            Err(ToggleError::Invalid { field, .. }) if field == "features[0].name"
        ));
    }

    /// Values the engine copies into its rule text unquoted must have exactly the grammar's form.
    #[test]
    fn unquoted_constraint_values_have_the_grammars_form() {
        for ok in ["1", "-1", "+1.5", "1.", "2e10", "-3.25E-2"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            ".5",
            "1e",
            "1 or true",
            "inf",
            "NaN",
            "1,5",
            "1e5e5",
            "0x10",
        ] {
            assert!(!is_number(bad), "{bad}");
        }
        for ok in [
            "2026-01-31T12:00:00Z",
            "2026-01-31T12:00:00.123Z",
            "2026-01-31T12:00:00+01:00",
        ] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "2026-01-31",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00:00Z or true",
            "2026-01-31T12:00:00.1Z",
            "é026-01-31T12:00:00Z",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        for ok in [
            "1.2.3",
            "10.20.30-beta.1",
            "1.2.3+build-7",
            "1.2.3-rc.1+b.2",
        ] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "1.2",
            "1.2.3.4",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3 or true",
            "a.b.c",
            "1.2.3-x)",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    /// Definitions the engine would compile into a panic (a draw from an empty or zero weight, or
    /// rule text spliced in through an unescaped parameter) are refused, naming the field; the
    /// ones that stay are evaluated without one.
    #[test]
    fn definitions_that_would_panic_the_engine_are_refused() {
        let field = |feature: serde_json::Value| match parse_features(
            json!({"version": 2, "features": [feature]})
                .to_string()
                .as_bytes(),
        ) {
            Err(ToggleError::Invalid { field, .. }) => field,
            Ok(_) => "accepted".into(),
        };
        let constraint = |operator: &str, value: &str| {
            json!({"name": "x", "enabled": true, "strategies": [{"name": "default", "constraints": [
                {"contextName": "userId", "operator": operator, "value": value, "values": []}]}]})
        };
        let cases = [
            (
                json!({"name": "x", "enabled": true, "variants": [{"name": "a", "weight": 0}]}),
                "features[0].variants",
            ),
            (
                json!({"name": "x", "enabled": true, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": -1}]}),
                "features[0].variants[1].weight",
            ),
            (
                json!({"name": "x", "enabled": true, "variants": [{"name": "a", "weight": i32::MAX}, {"name": "b", "weight": i32::MAX}, {"name": "c", "weight": 2}]}),
                "features[0].variants",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "default", "variants": [{"name": "a", "weight": 0}]}]}),
                "features[0].strategies[0].variants",
            ),
            (
                constraint("NUM_EQ", "1 or random[1] < 5"),
                "features[0].strategies[0].constraints[0].value",
            ),
            (
                constraint("DATE_AFTER", "2026-01-31T12:00:00Z or random[0] < 5"),
                "features[0].strategies[0].constraints[0].value",
            ),
            (
                constraint("SEMVER_EQ", " v1 or random[1] < 5"),
                "features[0].strategies[0].constraints[0].value",
            ),
            (
                constraint("REGEX", "a\\"),
                "features[0].strategies[0].constraints[0].value",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "default", "constraints": [
                {"contextName": "userId", "operator": "IN", "values": ["ok", "a\\"]}]}]}),
                "features[0].strategies[0].constraints[0].values[1]",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "default", "constraints": [
                {"contextName": "c\"] or random[1] < 5 or context[\"d", "operator": "IN", "values": []}]}]}),
                "features[0].strategies[0].constraints[0].contextName",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "flexibleRollout", "parameters": {
                "rollout": "50", "groupId": "g\" or random[0] < 5 or user_id matches_regex \"x"}}]}),
                "features[0].strategies[0].parameters.groupId",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "flexibleRollout", "parameters": {
                "rollout": "50", "stickiness": "s\"]"}}]}),
                "features[0].strategies[0].parameters.stickiness",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "applicationHostname", "parameters": {
                "hostNames": "h\\"}}]}),
                "features[0].strategies[0].parameters.hostNames",
            ),
            (
                json!({"name": "x", "enabled": true, "strategies": [{"name": "userWithId", "parameters": {
                "userIds": "a, b\\ , c"}}]}),
                "features[0].strategies[0].parameters.userIds",
            ),
        ];
        for (feature, expected) in cases {
            assert_eq!(field(feature.clone()), expected, "{feature}");
        }
        // What is accepted evaluates, variants included, without panicking.
        let accepted = [
            json!({"name": "x", "enabled": true, "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]}),
            constraint("NUM_GTE", " -1.5e3 "),
            constraint("SEMVER_EQ", "v1.2.3"),
            constraint("DATE_BEFORE", "2026-01-31T12:00:00.000+01:00"),
            constraint("REGEX", "^a\\d+$"),
            json!({"name": "x", "enabled": true, "strategies": [{"name": "userWithId", "parameters": {
                "userIds": "a\"b, a1, c\\d"}}]}),
        ];
        for feature in accepted {
            let toggles = set(json!({"version": 2, "features": [feature]}));
            let context = Context {
                user_id: Some("a1".into()),
                ..Context::default()
            };
            toggles.evaluate("x", &context);
            toggles.variant("x", &context);
            toggles.variant("x", &Context::default());
        }
    }
}

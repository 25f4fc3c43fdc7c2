//! Toggles are Unleash feature definitions (the client-features document), evaluated by
//! Unleash's own engine, so every Unleash SDK reading the same definitions agrees with us.

use std::sync::Arc;

use arc_swap::ArcSwap;
use unleash_types::client_features::ClientFeatures;
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

/// One immutable generation of toggles: the definitions and the engine compiled from them.
pub struct ToggleSet {
    features: ClientFeatures,
    engine: EngineState,
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

pub fn validate(features: &ClientFeatures) -> Result<(), ToggleError> {
    let invalid = |field: String, message: String| Err(ToggleError::Invalid { field, message });
    // The store keeps toggles one by one; shared segments would be lost on the way.
    if features.segments.as_ref().is_some_and(|s| !s.is_empty()) {
        return invalid(
            "segments".into(),
            "segments are not supported; put the constraints in the strategy".into(),
        );
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
            if s.segments.as_ref().is_some_and(|s| !s.is_empty()) {
                return invalid(
                    format!("{field}.segments"),
                    "segments are not supported; put the constraints in the strategy".into(),
                );
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
        }
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
            "default" if s.constraints.as_ref().is_none_or(Vec::is_empty) => Some(100),
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
    pub fn new(features: ClientFeatures, version: i64) -> Result<ToggleSet, ToggleError> {
        validate(&features)?;
        let engine = EngineState::default();
        if let Some(warnings) = engine.take_state(UpdateMessage::FullResponse(features.clone()))
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
            version: 0,
        }
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

    #[test]
    fn segments_are_refused_rather_than_lost() {
        let with_segments =
            json!({"version": 2, "segments": [{"id": 1, "constraints": []}], "features": []});
        assert!(matches!(
            parse_features(with_segments.to_string().as_bytes()),
            Err(ToggleError::Invalid { field, .. }) if field == "segments"
        ));
        let strategy_segment = json!({"version": 2, "features": [
            {"name": "x", "enabled": true, "strategies": [{"name": "default", "segments": [1]}]}]});
        assert!(matches!(
            parse_features(strategy_segment.to_string().as_bytes()),
            Err(ToggleError::Invalid { field, .. }) if field == "features[0].strategies[0].segments"
        ));
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
}

//! Toggles as JSON, the way Unleash writes them: what is stored, what the admin API answers and
//! what Unleash's client API serves.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use unleash_types::client_features::{ClientFeatures, Segment};

/// The header in which an SDK says which version of Unleash's client specification it follows.
pub const CLIENT_SPEC_HEADER: &str = "Unleash-Client-Spec";

/// The first version of the client specification with segments: Unleash serves them to SDKs
/// that declare it or a later one, and copies their constraints into the strategies otherwise.
const SEGMENTS_SINCE: (u64, u64, u64) = (4, 2, 0);

/// What this router declares when it reads another server's client API: it reads segments.
pub const CLIENT_SPEC: &str = "4.2.0";

/// `value` as Unleash's JSON. The engine's types write a constraint operator they do not know
/// as `{"UNKNOWN": "X"}`; Unleash writes it as it came, `"X"`, and SDKs read nothing else.
pub fn to_json<T: Serialize>(value: &T) -> Value {
    let mut json = serde_json::to_value(value).unwrap_or_default();
    restore_operators(&mut json);
    json
}

fn restore_operators(json: &mut Value) {
    match json {
        Value::Object(map) => {
            if let Some(Value::Array(constraints)) = map.get_mut("constraints") {
                for constraint in constraints {
                    let Some(operator) = constraint.get_mut("operator") else {
                        continue;
                    };
                    let unknown = match &*operator {
                        Value::Object(tagged) if tagged.len() == 1 => {
                            tagged.get("UNKNOWN").cloned()
                        }
                        _ => None,
                    };
                    if let Some(name @ Value::String(_)) = unknown {
                        *operator = name;
                    }
                }
            }
            map.values_mut().for_each(restore_operators);
        }
        Value::Array(items) => items.iter_mut().for_each(restore_operators),
        _ => {}
    }
}

/// Whether an SDK's `Unleash-Client-Spec` header asks for segments, as Unleash decides it: a
/// version (`MAJOR.MINOR.PATCH`, optionally `-pre` and `+build`) at or after 4.2.0. No header
/// means no. A header that is not a version is an error, as in Unleash.
pub fn wants_segments(header: Option<&str>) -> Result<bool, String> {
    let Some(raw) = header else {
        return Ok(false);
    };
    let version = raw.trim();
    let (core, _build) = version.split_once('+').unwrap_or((version, ""));
    let (numbers, pre) = match core.split_once('-') {
        Some((numbers, pre)) => (numbers, Some(pre)),
        None => (core, None),
    };
    let parts: Vec<Option<u64>> = numbers
        .split('.')
        .map(|p| {
            p.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    let [Some(major), Some(minor), Some(patch)] = parts[..] else {
        return Err(format!(
            "{CLIENT_SPEC_HEADER} must be a version such as 4.2.0, not {raw:?}"
        ));
    };
    // A pre-release comes before its release: 4.2.0-beta does not have what 4.2.0 has.
    let version = (major, minor, patch);
    Ok(version > SEGMENTS_SINCE || (version == SEGMENTS_SINCE && pre.is_none()))
}

/// The client-features document for an SDK: the definitions, and either the segments (for an
/// SDK that reads them) or, in each strategy that names segments, their constraints appended to
/// its own and the names dropped, which is what Unleash serves to an SDK that does not.
pub fn client_document(features: &ClientFeatures, with_segments: bool) -> Value {
    let mut document = features.clone();
    let segments = document.segments.take().unwrap_or_default();
    if with_segments {
        document.segments = Some(segments);
        return to_json(&document);
    }
    let by_id: HashMap<i32, &Segment> = segments.iter().map(|s| (s.id, s)).collect();
    for feature in &mut document.features {
        for strategy in feature.strategies.iter_mut().flatten() {
            let Some(ids) = strategy.segments.take() else {
                continue;
            };
            let inlined = ids
                .iter()
                .filter_map(|id| by_id.get(id))
                .flat_map(|s| s.constraints.iter().cloned());
            let mut constraints = strategy.constraints.take().unwrap_or_default();
            constraints.extend(inlined);
            strategy.constraints = Some(constraints);
        }
    }
    to_json(&document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_spec_header_asks_for_segments_from_4_2_0() {
        let cases: [(Option<&str>, Result<bool, ()>); 13] = [
            (None, Ok(false)),
            (Some("4.2.0"), Ok(true)),
            (Some(" 4.2.0 "), Ok(true)),
            (Some("4.2.1"), Ok(true)),
            (Some("4.10.0"), Ok(true)),
            (Some("5.0.0+build.1"), Ok(true)),
            (Some("6.1.0-beta.2"), Ok(true)),
            (Some("4.2.0-beta"), Ok(false)),
            (Some("4.1.99"), Ok(false)),
            (Some("3.99.99"), Ok(false)),
            (Some("v4.2.0"), Err(())),
            (Some("4.2"), Err(())),
            (Some("4.2.x"), Err(())),
        ];
        for (header, expected) in cases {
            assert_eq!(wants_segments(header).map_err(drop), expected, "{header:?}");
        }
        assert!(wants_segments(Some("+1.2.3")).is_err());
        assert!(wants_segments(Some("99999999999999999999.0.0")).is_err());
    }

    fn document() -> ClientFeatures {
        serde_json::from_value(json!({"version": 2, "features": [{
            "name": "x", "enabled": true, "strategies": [
                {"name": "default", "segments": [2, 1], "constraints": [
                    {"contextName": "userId", "operator": "IN", "values": ["a"]}]},
                {"name": "default"}]}],
            "segments": [
                {"id": 1, "constraints": [{"contextName": "appName", "operator": "IN", "values": ["web"]}]},
                {"id": 2, "constraints": [{"contextName": "region", "operator": "SOME_FUTURE_OP", "values": ["eu"]}]}]}))
        .unwrap()
    }

    #[test]
    fn segments_are_served_or_inlined_as_unleash_does() {
        let served = client_document(&document(), true);
        assert_eq!(
            served["segments"][1]["constraints"][0]["operator"],
            "SOME_FUTURE_OP"
        );
        assert_eq!(
            served["features"][0]["strategies"][0]["segments"],
            json!([2, 1])
        );
        let inlined = client_document(&document(), false);
        assert!(inlined.get("segments").is_none(), "{inlined}");
        let strategy = &inlined["features"][0]["strategies"][0];
        assert!(strategy.get("segments").is_none(), "{strategy}");
        let operators: Vec<&Value> = strategy["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["operator"])
            .collect();
        assert_eq!(
            operators,
            [&json!("IN"), &json!("SOME_FUTURE_OP"), &json!("IN")]
        );
        assert!(
            inlined["features"][0]["strategies"][1]
                .get("constraints")
                .is_none()
        );
        // With no segments stored, an SDK that reads them is told so.
        let mut none = document();
        none.segments = None;
        none.features[0].strategies = None;
        assert_eq!(client_document(&none, true)["segments"], json!([]));
    }

    #[test]
    fn unknown_operators_are_written_as_they_came() {
        let json = to_json(&document());
        assert_eq!(
            json["segments"][1]["constraints"][0]["operator"],
            "SOME_FUTURE_OP"
        );
        let back: ClientFeatures = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(to_json(&back), json);
    }
}

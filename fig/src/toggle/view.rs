//! `fig toggle`'s answers as a person reads them: the admin API's JSON turned into tables and
//! lines. Pure functions of that JSON, so what an operator sees is tested without a router.

use serde_json::Value;

use crate::table::Table;

/// `GET /admin/toggles`: one row per toggle, with who changed it last.
pub fn list(reply: &Value) -> String {
    let mut t = Table::new(&["name", "enabled", "strategy", "rollout", "changed", "by"]);
    let features = reply["features"].as_array().cloned().unwrap_or_default();
    for f in &features {
        let name = f["name"].as_str().unwrap_or("");
        let (strategy, rollout) = strategy(f);
        let last = &reply["last_changes"][name];
        t.push(vec![
            name.to_string(),
            on_off(f["enabled"].as_bool().unwrap_or(false)).into(),
            strategy,
            rollout,
            time(&last["at"]),
            last["actor"].as_str().unwrap_or("-").to_string(),
        ]);
    }
    format!(
        "{}{} toggle{} at version {}\n",
        t.render(),
        features.len(),
        if features.len() == 1 { "" } else { "s" },
        reply["version"]
    )
}

/// `GET /admin/toggles/{name}` and the toggle's latest audit entry (if any).
pub fn get(feature: &Value, last: Option<&Value>) -> String {
    let mut out = format!("{}\n", feature["name"].as_str().unwrap_or(""));
    let mut field = |key: &str, value: String| out.push_str(&format!("  {key:<12}{value}\n"));
    field(
        "enabled",
        on_off(feature["enabled"].as_bool().unwrap_or(false)).into(),
    );
    let strategies = feature["strategies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if strategies.is_empty() {
        field("strategy", "none: on for everyone when enabled".into());
    }
    for (i, s) in strategies.iter().enumerate() {
        let key = if strategies.len() == 1 {
            "strategy".to_string()
        } else {
            format!("strategy {}", i + 1)
        };
        field(&key, one_strategy(s));
        for c in s["constraints"].as_array().into_iter().flatten() {
            field("  where", constraint(c));
        }
        if let Some(ids) = s["segments"].as_array().filter(|a| !a.is_empty()) {
            let ids: Vec<String> = ids.iter().map(Value::to_string).collect();
            field("  segments", ids.join(", "));
        }
    }
    if let Some(v) = feature["variants"].as_array().filter(|v| !v.is_empty()) {
        let names: Vec<&str> = v.iter().filter_map(|v| v["name"].as_str()).collect();
        field("variants", names.join(", "));
    }
    if let Some(last) = last {
        field(
            "changed",
            format!(
                "{} by {}: {}",
                time(&last["at"]),
                last["actor"].as_str().unwrap_or("-"),
                last["reason"].as_str().unwrap_or("")
            ),
        );
    }
    out
}

/// `GET /admin/audit`: one row per change, oldest first, with what changed.
pub fn audit(reply: &Value) -> String {
    let mut t = Table::new(&["at", "toggle", "by", "change", "reason"]);
    for e in reply["entries"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        let (subject, what) = match e["kind"].as_str() {
            Some("segment") => (
                format!("segment {name}"),
                segment_change(&e["before"], &e["after"]),
            ),
            _ => (name.to_string(), change(&e["before"], &e["after"])),
        };
        t.push(vec![
            time(&e["at"]),
            subject,
            e["actor"].as_str().unwrap_or("").to_string(),
            what,
            e["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t.render()
}

/// `GET /admin/stale`: toggles settled on or off, ready to remove from the code.
pub fn stale(reply: &Value) -> String {
    let mut t = Table::new(&["name", "state", "unchanged since"]);
    for s in reply["stale"].as_array().into_iter().flatten() {
        t.push(vec![
            s["name"].as_str().unwrap_or("").to_string(),
            s["state"].as_str().unwrap_or("").to_string(),
            time(&s["unchanged_since"]),
        ]);
    }
    format!(
        "Settled for {} days or more (remove them from the code, then here):\n{}",
        reply["days"],
        t.render()
    )
}

/// An edit's answer (`enable`, `disable`, `rollout`): the toggle as it now is.
pub fn edited(reply: &Value) -> String {
    let f = &reply["toggle"];
    let (strategy, rollout) = strategy(f);
    format!(
        "{}: {}, {strategy} {rollout} (toggles at version {})\n",
        f["name"].as_str().unwrap_or(""),
        on_off(f["enabled"].as_bool().unwrap_or(false)),
        reply["version"]
    )
}

/// An import's answer: how many toggles and segments changed.
pub fn imported(reply: &Value) -> String {
    let changed = reply["changed"].as_u64().unwrap_or(0);
    let what = match changed {
        0 => "nothing changed".to_string(),
        1 => "1 toggle or segment changed".to_string(),
        n => format!("{n} toggles and segments changed"),
    };
    format!("{what} (toggles at version {})\n", reply["version"])
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

/// A toggle's strategies in a word, and the share of users they let through when that is one
/// number: Unleash turns a toggle without strategies on for everyone.
fn strategy(feature: &Value) -> (String, String) {
    let strategies = feature["strategies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match strategies.as_slice() {
        [] => ("default".into(), "100%".into()),
        [s] => {
            let name = s["name"].as_str().unwrap_or("?").to_string();
            let conditions = s["constraints"].as_array().map_or(0, Vec::len)
                + s["segments"].as_array().map_or(0, Vec::len);
            let name = match conditions {
                0 => name,
                1 => format!("{name} +1 condition"),
                n => format!("{name} +{n} conditions"),
            };
            (name, rollout(s).unwrap_or_else(|| "-".into()))
        }
        many => (format!("{} strategies", many.len()), "-".into()),
    }
}

/// The percentage a rollout strategy lets through.
fn rollout(s: &Value) -> Option<String> {
    let param = match s["name"].as_str()? {
        "default" => return Some("100%".into()),
        "flexibleRollout" => "rollout",
        "gradualRolloutUserId" | "gradualRolloutSessionId" | "gradualRolloutRandom" => "percentage",
        _ => return None,
    };
    let value = &s["parameters"][param];
    let text = value
        .as_str()
        .map(str::to_string)
        .or_else(|| value.as_i64().map(|n| n.to_string()))?;
    Some(format!("{text}%"))
}

/// One strategy with its parameters: `flexibleRollout rollout=25 stickiness=default`.
fn one_strategy(s: &Value) -> String {
    let mut text = s["name"].as_str().unwrap_or("?").to_string();
    if let Some(params) = s["parameters"].as_object() {
        let mut pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect();
        pairs.sort();
        for p in pairs {
            text.push(' ');
            text.push_str(&p);
        }
    }
    text
}

/// `userId IN [a, b]`, `currentTime DATE_AFTER 2026-01-01`, negated with `NOT`.
fn constraint(c: &Value) -> String {
    let values: Vec<String> = match c["values"].as_array().filter(|v| !v.is_empty()) {
        Some(v) => v
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        None => c["value"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
    };
    format!(
        "{}{} {} [{}]",
        if c["inverted"].as_bool() == Some(true) {
            "NOT "
        } else {
            ""
        },
        c["contextName"].as_str().unwrap_or("?"),
        c["operator"].as_str().unwrap_or("?"),
        values.join(", ")
    )
}

/// What one audit entry changed, in words.
fn change(before: &Value, after: &Value) -> String {
    match (before.is_null(), after.is_null()) {
        (true, true) => "-".into(),
        (true, false) => {
            let (strategy, rollout) = strategy(after);
            format!(
                "created {}, {strategy} {rollout}",
                on_off(after["enabled"].as_bool().unwrap_or(false))
            )
        }
        (false, true) => "deleted".into(),
        (false, false) => {
            let mut parts = Vec::new();
            let (was, is) = (before["enabled"].as_bool(), after["enabled"].as_bool());
            if was != is {
                parts.push(format!(
                    "{} → {}",
                    on_off(was.unwrap_or(false)),
                    on_off(is.unwrap_or(false))
                ));
            }
            let (was, is) = (strategy(before), strategy(after));
            if was.0 != is.0 {
                parts.push(format!("{} → {}", was.0, is.0));
            }
            if was.1 != is.1 {
                parts.push(format!("rollout {} → {}", was.1, is.1));
            }
            let rest_changed = parts.is_empty() && before != after;
            if rest_changed {
                parts.push("definition changed".into());
            }
            if parts.is_empty() {
                "unchanged".into()
            } else {
                parts.join("; ")
            }
        }
    }
}

/// What one audit entry did to a segment (shared constraints, named by id).
fn segment_change(before: &Value, after: &Value) -> String {
    let constraints = |v: &Value| v["constraints"].as_array().map_or(0, Vec::len);
    match (before.is_null(), after.is_null()) {
        (true, true) => "-".into(),
        (true, false) => format!("created, {} constraints", constraints(after)),
        (false, true) => "deleted".into(),
        (false, false) if before == after => "unchanged".into(),
        (false, false) => format!(
            "constraints changed ({} → {})",
            constraints(before),
            constraints(after)
        ),
    }
}

/// An RFC 3339 timestamp to the second, as `2026-12-03 17:40:12`: UTC, as the API gives it.
fn time(at: &Value) -> String {
    match at.as_str() {
        Some(t) if t.len() >= 19 && t.is_char_boundary(19) => t[..19].replacen('T', " ", 1),
        Some(t) => t.to_string(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout_toggle(name: &str, enabled: bool, percent: &str) -> Value {
        json!({"name": name, "enabled": enabled, "strategies": [{"name": "flexibleRollout",
            "parameters": {"rollout": percent, "stickiness": "default", "groupId": name}}]})
    }

    #[test]
    fn strategies_read_as_a_word_and_a_share() {
        let table = [
            (json!({"name": "a", "enabled": true}), ("default", "100%")),
            (json!({"name": "a", "strategies": []}), ("default", "100%")),
            (
                json!({"strategies": [{"name": "default"}]}),
                ("default", "100%"),
            ),
            (rollout_toggle("a", true, "25"), ("flexibleRollout", "25%")),
            (
                json!({"strategies": [{"name": "gradualRolloutUserId", "parameters": {"percentage": 5}}]}),
                ("gradualRolloutUserId", "5%"),
            ),
            (
                json!({"strategies": [{"name": "userWithId", "parameters": {"userIds": "a,b"}}]}),
                ("userWithId", "-"),
            ),
            (
                json!({"strategies": [{"name": "default", "constraints": [{"contextName": "userId",
                    "operator": "IN", "values": ["x"]}], "segments": [1, 2]}]}),
                ("default +3 conditions", "100%"),
            ),
            (
                json!({"strategies": [{"name": "default"}, {"name": "userWithId"}]}),
                ("2 strategies", "-"),
            ),
        ];
        for (feature, (name, share)) in table {
            assert_eq!(strategy(&feature), (name.into(), share.into()), "{feature}");
        }
    }

    #[test]
    fn the_list_shows_who_changed_each_toggle() {
        let reply = json!({
            "version": 7,
            "features": [rollout_toggle("catalog.reads", true, "25"),
                         {"name": "wishlist.reads", "enabled": false, "strategies": [{"name": "default"}]}],
            "last_changes": {"catalog.reads": {"at": "2026-12-03T17:40:12.123456Z", "actor": "ana", "reason": "canary"}},
        });
        assert_eq!(
            list(&reply),
            "  name            enabled  strategy         rollout  changed              by\n\
             \x20 catalog.reads   on       flexibleRollout  25%      2026-12-03 17:40:12  ana\n\
             \x20 wishlist.reads  off      default          100%     -                    -\n\
             2 toggles at version 7\n"
        );
    }

    #[test]
    fn one_toggle_reads_top_down() {
        let feature = json!({"name": "catalog.reads", "enabled": true, "strategies": [
            {"name": "flexibleRollout", "parameters": {"rollout": "25", "stickiness": "userId"},
             "constraints": [{"contextName": "userId", "operator": "IN", "values": ["1", "2"], "inverted": true}],
             "segments": [3]}],
            "variants": [{"name": "blue"}, {"name": "green"}]});
        let last = json!({"at": "2026-12-03T17:40:12Z", "actor": "ana", "reason": "canary"});
        assert_eq!(
            get(&feature, Some(&last)),
            "catalog.reads\n\
             \x20 enabled     on\n\
             \x20 strategy    flexibleRollout rollout=25 stickiness=userId\n\
             \x20   where     NOT userId IN [1, 2]\n\
             \x20   segments  3\n\
             \x20 variants    blue, green\n\
             \x20 changed     2026-12-03 17:40:12 by ana: canary\n"
        );
    }

    #[test]
    fn audit_entries_say_what_changed() {
        let off = json!({"name": "t", "enabled": false, "strategies": [{"name": "default"}]});
        let on = json!({"name": "t", "enabled": true, "strategies": [{"name": "default"}]});
        let table = [
            (Value::Null, off.clone(), "created off, default 100%"),
            (off.clone(), on.clone(), "off → on"),
            (on.clone(), Value::Null, "deleted"),
            (
                rollout_toggle("t", true, "10"),
                rollout_toggle("t", true, "25"),
                "rollout 10% → 25%",
            ),
            (
                off.clone(),
                rollout_toggle("t", true, "5"),
                "off → on; default → flexibleRollout; rollout 100% → 5%",
            ),
            (
                on.clone(),
                json!({"name": "t", "enabled": true, "strategies": [{"name": "default"}], "variants": [{"name": "v"}]}),
                "definition changed",
            ),
            (on.clone(), on.clone(), "unchanged"),
        ];
        for (before, after, expected) in table {
            assert_eq!(change(&before, &after), expected, "{before} → {after}");
        }
        let reply = json!({"entries": [{"at": "2026-12-03T17:40:12Z", "kind": "toggle", "name": "t",
            "actor": "fig", "before": null, "after": off, "reason": "fig up: first run"},
            {"at": "2026-12-03T17:41:00Z", "kind": "segment", "name": "7", "actor": "ana",
            "before": {"id": 7, "constraints": []},
            "after": {"id": 7, "constraints": [{"contextName": "userId", "operator": "IN", "values": ["1"]}]},
            "reason": "beta"}]});
        assert_eq!(
            audit(&reply),
            "  at                   toggle     by   change                       reason\n\
             \x20 2026-12-03 17:40:12  t          fig  created off, default 100%    fig up: first run\n\
             \x20 2026-12-03 17:41:00  segment 7  ana  constraints changed (0 → 1)  beta\n"
        );
        assert_eq!(
            segment_change(&Value::Null, &json!({"id": 1, "constraints": []})),
            "created, 0 constraints"
        );
    }

    #[test]
    fn stale_and_edits_read_as_lines() {
        let reply = json!({"days": 14, "stale": [
            {"name": "old", "state": "on", "unchanged_since": "2026-10-01T08:00:00Z"}]});
        assert_eq!(
            stale(&reply),
            "Settled for 14 days or more (remove them from the code, then here):\n\
             \x20 name  state  unchanged since\n\
             \x20 old   on     2026-10-01 08:00:00\n"
        );
        let edit = json!({"version": 9, "toggle": rollout_toggle("catalog.reads", true, "50")});
        assert_eq!(
            edited(&edit),
            "catalog.reads: on, flexibleRollout 50% (toggles at version 9)\n"
        );
        assert_eq!(
            imported(&json!({"version": 3, "changed": 2})),
            "2 toggles and segments changed (toggles at version 3)\n"
        );
        assert_eq!(
            imported(&json!({"version": 3, "changed": 0})),
            "nothing changed (toggles at version 3)\n"
        );
        assert_eq!(time(&json!("bad")), "bad");
    }
}

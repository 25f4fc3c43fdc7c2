//! `fig diff`: the router's parallel-run report (`GET /admin/diffs`) as a table, or as it came.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::replay::table;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The router's admin API (printed by `fig up`).
    #[arg(
        long = "admin-url",
        visible_alias = "admin",
        env = "FIG_ADMIN_URL",
        default_value = "http://127.0.0.1:7100"
    )]
    admin_url: String,
    /// The admin token (printed by `fig up`).
    #[arg(long, env = "FIG_ADMIN_TOKEN")]
    token: String,
    /// Print the router's JSON as it came.
    #[arg(long)]
    json: bool,
}

/// Runs `fig diff`: `Ok(true)` when no route has a real difference.
pub fn run(args: DiffArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(fetch(&args))?;
    let report: Value = serde_json::from_str(&text)
        .with_context(|| format!("GET /admin/diffs did not answer JSON: {text}"))?;
    if !report["routes"].is_object() {
        bail!("GET /admin/diffs answered without a routes object: {text}");
    }
    if args.json {
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(real(&report) == 0)
}

async fn fetch(args: &DiffArgs) -> anyhow::Result<String> {
    let base = args.admin_url.trim_end_matches('/');
    let res = reqwest::Client::new()
        .get(format!("{base}/admin/diffs"))
        .bearer_auth(&args.token)
        .send()
        .await
        .with_context(|| format!("calling {base}"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let e = &body["error"];
        bail!(
            "{status}: {} {}",
            e["code"].as_str().unwrap_or("error"),
            e["message"].as_str().unwrap_or(&text)
        );
    }
    Ok(text)
}

/// Real differences over every route.
pub fn real(report: &Value) -> u64 {
    routes(report).map(|(_, r)| count(r, "real")).sum()
}

fn routes(report: &Value) -> impl Iterator<Item = (&String, &Value)> {
    report["routes"].as_object().into_iter().flatten()
}

fn count(route: &Value, field: &str) -> u64 {
    route[field].as_u64().unwrap_or(0)
}

/// A route's real-difference paths, most frequent first (then by path), at most `n`.
fn top_paths(route: &Value, n: usize) -> Vec<(&str, u64)> {
    let mut top: Vec<(&str, u64)> = route["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(path, count)| (path.as_str(), count.as_u64().unwrap_or(0)))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(n);
    top
}

/// The report for a person: one row per route, then each route's noise and latest sample.
pub fn render(report: &Value) -> String {
    const COUNTS: [&str; 7] = [
        "compared",
        "matched",
        "real",
        "transient",
        "dropped",
        "too_large",
        "failed",
    ];
    let mut out = String::new();
    if routes(report).next().is_none() {
        out.push_str(
            "no shadow copies compared yet: turn a shadow toggle on \
             (fig toggle enable catalog.shadow --reason ...) and send requests through the router\n",
        );
        return out;
    }
    let rows: Vec<Vec<String>> = routes(report)
        .map(|(name, r)| {
            let mut row = vec![name.clone()];
            row.extend(COUNTS.iter().map(|f| count(r, f).to_string()));
            let top: Vec<String> = top_paths(r, 3)
                .into_iter()
                .map(|(path, n)| format!("{path} ({n})"))
                .collect();
            row.push(top.join(", "));
            row
        })
        .collect();
    out.push_str(&table(
        &[
            "ROUTE",
            "COMPARED",
            "MATCHED",
            "REAL",
            "TRANSIENT",
            "DROPPED",
            "TOO_LARGE",
            "FAILED",
            "TOP PATHS",
        ],
        &rows,
    ));
    for (name, r) in routes(report) {
        let noise: Vec<String> = r["noise"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|p| !p.starts_with("header:"))
            .map(|p| match r["noise_hits"][p].as_u64() {
                Some(n) => format!("{p} ({n})"),
                None => p.to_string(),
            })
            .collect();
        let latest = r["samples"].as_array().and_then(|s| s.last());
        if noise.is_empty() && latest.is_none() {
            continue;
        }
        out.push_str(&format!("\n{name}\n"));
        if !noise.is_empty() {
            out.push_str(&format!("  noise, not counted: {}\n", noise.join(", ")));
        }
        if let Some(sample) = latest {
            out.push_str(&format!(
                "  latest real difference: {}  ({} vs {})\n",
                sample["request"].as_str().unwrap_or("?"),
                sample["primary_status"],
                sample["candidate_status"]
            ));
            for d in sample["differences"].as_array().into_iter().flatten() {
                let value = |v: &Value| v.as_str().unwrap_or("(absent)").to_string();
                out.push_str(&format!(
                    "    {}  {}  primary {}  candidate {}\n",
                    d["path"].as_str().unwrap_or("?"),
                    d["kind"].as_str().unwrap_or("?"),
                    value(&d["primary"]),
                    value(&d["candidate"])
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_is_a_table_with_the_latest_sample() {
        let report = json!({
            "limits": {"in_flight": 64},
            "routes": {
                "GET /catalog/": {
                    "compared": 120, "matched": 117, "real": 2, "transient": 1, "dropped": 4,
                    "too_large": 1, "failed": 0, "noise": ["$.served_at", "header:date"],
                    "noise_hits": {"$.served_at": 12},
                    "paths": {"$.albums[*].price": 2, "$.title": 1, "$.a": 1, "$.b": 1},
                    "samples": [
                        {"request": "GET /catalog/albums/1", "primary_status": 200,
                         "candidate_status": 200, "differences": []},
                        {"request": "GET /catalog/albums?page=2", "primary_status": 200,
                         "candidate_status": 404,
                         "differences": [{"path": "$.albums[3].price", "kind": "value",
                                          "primary": "10", "candidate": null}]}
                    ]
                },
                "GET /wishlists/": {"compared": 5, "matched": 5, "real": 0, "transient": 0,
                                    "dropped": 0, "too_large": 0, "failed": 0, "noise": [],
                                    "noise_hits": {}, "paths": {}, "samples": []}
            }
        });
        let text = render(&report);
        for expected in [
            "ROUTE            COMPARED  MATCHED  REAL  TRANSIENT  DROPPED  TOO_LARGE  FAILED  TOP PATHS\n",
            "GET /catalog/         120      117     2          1        4          1       0  $.albums[*].price (2), $.a (1), $.b (1)\n",
            "GET /wishlists/         5        5     0          0        0          0       0\n",
            "  noise, not counted: $.served_at (12)\n",
            "  latest real difference: GET /catalog/albums?page=2  (200 vs 404)\n",
            "    $.albums[3].price  value  primary 10  candidate (absent)\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(!text.contains("$.title"), "three top paths only");
        assert_eq!(real(&report), 2);
    }

    #[test]
    fn an_empty_report_says_how_to_fill_it() {
        let report = json!({"routes": {}, "limits": {}});
        assert!(render(&report).contains("no shadow copies compared yet"));
        assert_eq!(real(&report), 0);
    }
}

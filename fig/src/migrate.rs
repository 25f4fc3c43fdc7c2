//! `fig migrate CAP cutover|rollback|status`: moves a capability's writes between the monolith
//! and its service on a running stack, through the router's admin API
//! (`/admin/migrations/{capability}`), and shows where they are and every flip so far.

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use crate::admin::{AdminArgs, describe};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The capability: `catalog` or `wishlist`.
    capability: String,
    #[command(subcommand)]
    action: Action,
    /// Print the admin API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The service takes the writes: hold them at every router, fence the monolith, wait until
    /// the service has everything, start the stream back, release.
    Cutover {
        #[arg(long)]
        reason: String,
    },
    /// The monolith takes the writes back, the same way.
    Rollback {
        #[arg(long)]
        reason: String,
    },
    /// Who owns the writes, and every flip so far (newest first).
    Status,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(call(&args))
}

async fn call(args: &MigrateArgs) -> anyhow::Result<()> {
    let cap = &args.capability;
    let (method, path, reason) = match &args.action {
        Action::Cutover { reason } => (
            Method::POST,
            format!("/admin/migrations/{cap}/cutover"),
            Some(reason.as_str()),
        ),
        Action::Rollback { reason } => (
            Method::POST,
            format!("/admin/migrations/{cap}/rollback"),
            Some(reason.as_str()),
        ),
        Action::Status => (Method::GET, format!("/admin/migrations/{cap}"), None),
    };
    let (status, body) = args.admin.send(method, &path, None, reason).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else if status.is_success() {
        match &args.action {
            Action::Status => print!("{}", status_text(&body)),
            _ => println!("{}", outcome_text(cap, &body)),
        }
    }
    if !status.is_success() {
        bail!("{}", describe(status, &body));
    }
    Ok(())
}

/// One line for a flip command's answer.
fn outcome_text(capability: &str, body: &Value) -> String {
    let recovered = body["recovered"]
        .as_object()
        .map(|r| {
            format!(
                " (an interrupted {} was {} first)",
                r["direction"].as_str().unwrap_or("flip"),
                r["outcome"].as_str().unwrap_or("settled")
            )
        })
        .unwrap_or_default();
    if body["result"] == "already_there" {
        return format!(
            "{capability}: writes already owned by {}{recovered}",
            body["owner"].as_str().unwrap_or("?")
        );
    }
    format!("{capability}: {}{recovered}", flip_text(&body["flip"]))
}

fn flip_text(f: &Value) -> String {
    let ms = |key: &str| {
        f[key]
            .as_f64()
            .map(|v| format!("{v:.1} ms"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{} {} at step {} (hold {}, catch-up {}, total {}; cut {}, reverse from {}) by {}: {}{}",
        f["direction"].as_str().unwrap_or("?"),
        f["outcome"].as_str().unwrap_or("?"),
        f["step"].as_str().unwrap_or("?"),
        ms("hold_ms"),
        ms("catch_up_ms"),
        ms("total_ms"),
        f["cut_lsn"].as_str().unwrap_or("-"),
        f["reverse_from_lsn"].as_str().unwrap_or("-"),
        f["actor"].as_str().unwrap_or("?"),
        f["reason"].as_str().unwrap_or(""),
        f["error"]
            .as_str()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default()
    )
}

/// The capability's state and its flips, for a person.
fn status_text(body: &Value) -> String {
    let mut out = format!(
        "{}: phase {}, writes owned by {}{}\n",
        body["capability"].as_str().unwrap_or("?"),
        body["phase"].as_str().unwrap_or("?"),
        body["owner"].as_str().unwrap_or("?"),
        if body["held"] == true { " (held)" } else { "" }
    );
    for f in body["flips"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  #{} {} {}\n",
            f["id"],
            f["started_at"].as_str().unwrap_or(""),
            flip_text(f)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_read_as_one_line_each() {
        let flip = json!({
            "id": 3, "direction": "cutover", "outcome": "undone", "step": "caught_up",
            "hold_ms": 1002.25, "catch_up_ms": 1000.0, "total_ms": 1010.0, "cut_lsn": "0/16B3748",
            "reverse_from_lsn": null, "actor": "ana", "reason": "try",
            "error": "the stream catalog did not apply past the cut"
        });
        let line = outcome_text("catalog", &json!({"result": "flipped", "flip": flip}));
        assert_eq!(
            line,
            "catalog: cutover undone at step caught_up (hold 1002.2 ms, catch-up 1000.0 ms, \
             total 1010.0 ms; cut 0/16B3748, reverse from -) by ana: try [the stream catalog \
             did not apply past the cut]"
        );
        let already = json!({"result": "already_there", "owner": "extracted", "recovered": null});
        assert_eq!(
            outcome_text("wishlist", &already),
            "wishlist: writes already owned by extracted"
        );
        let status = status_text(&json!({
            "capability": "catalog", "phase": "cutover", "owner": "extracted", "held": false,
            "flips": [flip]
        }));
        assert!(
            status.starts_with("catalog: phase cutover, writes owned by extracted\n  #3 "),
            "{status}"
        );
    }
}

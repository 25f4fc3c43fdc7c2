//! `fig toggle …`: the router's admin API from the command line. Tables and lines for a person
//! (`view`); `--json` prints the API's answer as it is, for scripts.

mod view;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{AdminArgs, describe};

#[derive(Debug, clap::Args)]
pub struct ToggleArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the admin API's JSON answer instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Every toggle and the version they are at.
    List,
    /// One toggle's definition.
    Get { name: String },
    /// Turns a toggle on.
    Enable {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Turns a toggle off.
    Disable {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Sends this percentage of users (sticky) to the extracted side.
    Rollout {
        name: String,
        percent: u32,
        #[arg(long)]
        reason: String,
    },
    /// Imports an Unleash client-features document (JSON file).
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// The audit history, oldest first.
    Audit { name: Option<String> },
    /// What the router would do with a request, and why.
    Explain {
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// Toggles settled at on or off for this many days: ready to remove.
    Stale {
        #[arg(long, default_value_t = 14)]
        days: u32,
    },
}

pub fn run(args: ToggleArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(call(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let text = match &args.action {
        Action::List => view::list(&reply),
        Action::Get { name } => {
            let path = format!("/admin/audit?toggle={}&limit=1", query_value(name));
            let history = runtime.block_on(get(&args.admin, &path))?;
            view::get(&reply, history["entries"].as_array().and_then(|e| e.last()))
        }
        Action::Enable { .. } | Action::Disable { .. } | Action::Rollout { .. } => {
            view::edited(&reply)
        }
        Action::Import { .. } => view::imported(&reply),
        Action::Audit { .. } => view::audit(&reply),
        Action::Stale { .. } => view::stale(&reply),
        // The explanation is a structure of its own (the route, the toggle, the reasons).
        Action::Explain { .. } => format!("{}\n", serde_json::to_string_pretty(&reply)?),
    };
    print!("{text}");
    Ok(())
}

/// A `GET` on the admin API; its JSON answer, or the error it gave.
async fn get(admin: &AdminArgs, path: &str) -> anyhow::Result<Value> {
    let (status, body) = admin.send(Method::GET, path, None, None).await?;
    if !status.is_success() {
        bail!("{}", describe(status, &body));
    }
    Ok(body)
}

async fn call(args: &ToggleArgs) -> anyhow::Result<Value> {
    let (method, path, body, reason): (Method, String, Option<Value>, Option<&str>) = match &args
        .action
    {
        Action::List => (Method::GET, "/admin/toggles".into(), None, None),
        Action::Get { name } => (Method::GET, format!("/admin/toggles/{name}"), None, None),
        Action::Enable { name, reason } => (
            Method::POST,
            format!("/admin/toggles/{name}/enable"),
            None,
            Some(reason),
        ),
        Action::Disable { name, reason } => (
            Method::POST,
            format!("/admin/toggles/{name}/disable"),
            None,
            Some(reason),
        ),
        Action::Rollout {
            name,
            percent,
            reason,
        } => (
            Method::POST,
            format!("/admin/toggles/{name}/rollout"),
            Some(json!({"percent": percent})),
            Some(reason),
        ),
        Action::Import { file, reason } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            (
                Method::POST,
                "/admin/toggles".into(),
                Some(doc),
                Some(reason),
            )
        }
        Action::Audit { name } => (
            Method::GET,
            match name {
                Some(n) => format!("/admin/audit?toggle={}", query_value(n)),
                None => "/admin/audit".into(),
            },
            None,
            None,
        ),
        Action::Explain { path, method, user } => {
            // The target goes as the client would send it: escaped here, so that the router
            // unescapes it once, as its data path does (`%2525` stays `%25` to it).
            let mut q = format!(
                "/admin/explain?method={}&path={}",
                query_value(method),
                query_value(path)
            );
            if let Some(u) = user {
                q.push_str(&format!("&user_id={}", query_value(u)));
            }
            (Method::GET, q, None, None)
        }
        Action::Stale { days } => (Method::GET, format!("/admin/stale?days={days}"), None, None),
    };
    let (status, body) = args
        .admin
        .send(method, &path, body.as_ref(), reason)
        .await?;
    if !status.is_success() {
        bail!("{}", describe(status, &body));
    }
    Ok(body)
}

/// `value` escaped for a query string: every byte but the unreserved ones (RFC 3986 §2.3) as
/// `%XX`.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::query_value;

    #[test]
    fn query_values_are_escaped_so_the_router_unescapes_them_once() {
        assert_eq!(query_value("/catalog/albums/1"), "/catalog/albums/1");
        assert_eq!(
            query_value("/%63atalog/a b?x=1&y"),
            "/%2563atalog/a%20b%3Fx%3D1%26y"
        );
        assert_eq!(query_value("é"), "%C3%A9");
    }
}

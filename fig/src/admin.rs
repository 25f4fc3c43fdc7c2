//! Calls to the router's admin API, shared by `fig toggle` and `fig migrate`.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the admin API is and who calls it.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The router's admin API (printed by `fig up`).
    #[arg(long, env = "FIG_ADMIN_URL", default_value = "http://127.0.0.1:7100")]
    pub admin_url: String,
    /// The admin token (printed by `fig up`).
    #[arg(long, env = "FIG_ADMIN_TOKEN")]
    pub token: String,
    /// Who is making the change, for the audit history.
    #[arg(long, env = "USER", default_value = "operator")]
    pub actor: String,
}

impl AdminArgs {
    /// Sends one request; a change carries `X-Actor` and `X-Reason`. Returns the status and the
    /// JSON body (`null` when there is none).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        reason: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let base = self.admin_url.trim_end_matches('/');
        let mut req = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token);
        if let Some(reason) = reason {
            req = req
                .header("X-Actor", &self.actor)
                .header("X-Reason", reason);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("calling {base}"))?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }
}

/// The error envelope's text: `<status>: <code> <message> (field <field>)`.
pub fn describe(status: StatusCode, body: &Value) -> String {
    let e = &body["error"];
    format!(
        "{status}: {} {}{}",
        e["code"].as_str().unwrap_or("error"),
        e["message"].as_str().unwrap_or(""),
        e["field"]
            .as_str()
            .map(|f| format!(" (field {f})"))
            .unwrap_or_default()
    )
}

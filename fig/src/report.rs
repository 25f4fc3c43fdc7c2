//! `fig report`: the reporting database's headline reports (`reporting_v1`, docs/reporting.md)
//! as tables in the terminal, or as JSON for scripts.

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The reporting database (printed by `fig up` as `reporting`).
    #[arg(long, env = "FIG_REPORTING_URL")]
    database_url: String,
    /// Rows per report.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// Print JSON (one object, a list of rows per report) instead of tables.
    #[arg(long)]
    json: bool,
}

/// Each report: its title, and a query over `reporting_v1` whose columns are all text.
const REPORTS: [(&str, &str, &str); 4] = [
    (
        "top_artists",
        "Best-selling artists, last 30 days",
        "SELECT coalesce(artist_name, artist_id::text) AS artist, currency, \
                sum(units)::text AS units, to_char(sum(revenue_cents) / 100.0, 'FM999999999990.00') AS revenue \
           FROM reporting_v1.sales_by_artist_day WHERE day >= current_date - 30 \
          GROUP BY 1, 2 ORDER BY sum(units) DESC, 1 LIMIT $1",
    ),
    (
        "most_wished",
        "Most-wished albums",
        "SELECT coalesce(title, album_id::text) AS album, wishes::text AS wishes, \
                CASE WHEN in_stock THEN 'yes' ELSE 'no' END AS in_stock \
           FROM reporting_v1.most_wished_albums ORDER BY wishes DESC, album_id LIMIT $1",
    ),
    (
        "stock_alerts",
        "Stock alerts (wished by 3 or more, 5 or fewer in stock)",
        "SELECT coalesce(title, album_id::text) AS album, wishes::text AS wishes, \
                stock::text AS stock \
           FROM reporting_v1.stock_alerts ORDER BY wishes DESC, album_id LIMIT $1",
    ),
    (
        "top_customers",
        "Customers by lifetime value",
        "SELECT coalesce(name, customer_id::text) AS customer, currency, orders::text AS orders, \
                to_char(revenue_cents / 100.0, 'FM999999999990.00') AS revenue \
           FROM reporting_v1.customer_lifetime_value ORDER BY revenue_cents DESC, customer_id \
          LIMIT $1",
    ),
];

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = runtime.block_on(fetch(&args))?;
    if args.json {
        let object: Map<String, Value> = reports
            .iter()
            .map(|r| {
                let rows = r
                    .rows
                    .iter()
                    .map(|row| {
                        Value::Object(
                            r.columns
                                .iter()
                                .zip(row)
                                .map(|(c, v)| (c.clone(), json!(v)))
                                .collect(),
                        )
                    })
                    .collect();
                (r.key.to_string(), Value::Array(rows))
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&Value::Object(object))?);
    } else {
        for r in &reports {
            print!("{}", table(r));
        }
    }
    Ok(())
}

/// One report's answer.
struct Report {
    key: &'static str,
    title: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

async fn fetch(args: &ReportArgs) -> anyhow::Result<Vec<Report>> {
    let client = replication::source::connect(&args.database_url)
        .await
        .with_context(|| "connecting to the reporting database")?;
    let limit = i64::from(args.limit);
    let mut out = Vec::new();
    for (key, title, sql) in REPORTS {
        let rows = client
            .query(sql, &[&limit])
            .await
            .with_context(|| format!("the report {key}"))?;
        let columns = rows
            .first()
            .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
            .unwrap_or_default();
        let rows = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                    .collect()
            })
            .collect();
        out.push(Report {
            key,
            title,
            columns,
            rows,
        });
    }
    Ok(out)
}

/// A report as a table a person reads: a title, then the aligned table.
fn table(r: &Report) -> String {
    let table = Table {
        columns: r.columns.clone(),
        rows: r.rows.clone(),
    };
    format!("{}\n{}\n", r.title, table.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_prints_as_an_aligned_table() {
        let r = Report {
            key: "most_wished",
            title: "Most-wished albums",
            columns: vec!["album".into(), "wishes".into()],
            rows: vec![
                vec!["Blue Train".into(), "12".into()],
                vec!["Kind of Blue".into(), "3".into()],
            ],
        };
        assert_eq!(
            table(&r),
            "Most-wished albums\n  album         wishes\n  Blue Train    12\n  Kind of Blue  3\n\n"
        );
        let empty = Report { rows: vec![], ..r };
        assert_eq!(table(&empty), "Most-wished albums\n  (none)\n\n");
    }
}

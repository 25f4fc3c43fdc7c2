//! Replication in `fig up`: the MusicCorp pipelines (the data-first split, monolith -> services)
//! for this cluster, and the file `fig replication status --config` reads. Which direction runs
//! is the write owner's to say (`router::migrate::follow`).

use anyhow::Context;
use replication::config::{self, InitialCopy, Pipeline};

/// The MusicCorp pipelines for a cluster's databases.
pub fn musiccorp(monolith: &str, catalog: &str, wishlist: &str) -> anyhow::Result<Vec<Pipeline>> {
    Ok(config::parse(config::MUSICCORP, |name| match name {
        "FIG_MONOLITH_DATABASE_URL" => Some(monolith.to_string()),
        "FIG_CATALOG_DATABASE_URL" => Some(catalog.to_string()),
        "FIG_WISHLIST_DATABASE_URL" => Some(wishlist.to_string()),
        _ => None,
    })?)
}

/// The pipeline file, for `fig replication status|verify --config` (not `run`: `fig up` runs
/// one direction of each pair at a time).
pub fn write_config(
    dir: &std::path::Path,
    pipelines: &[Pipeline],
) -> anyhow::Result<std::path::PathBuf> {
    let mut text = String::from(
        "# Written by `fig up`: both directions of each pipeline, for `status` and `verify`.\n\
         # fig up runs one of them at a time, out of the capability's write owner.\n",
    );
    for p in pipelines {
        text.push_str(&format!(
            "\n[[pipelines]]\nname = {:?}\nsource = {:?}\ntarget = {:?}\n",
            p.name, p.source, p.target
        ));
        if p.initial_copy == InitialCopy::None {
            text.push_str("initial_copy = \"none\"\n");
        }
        if !p.skip_origins_of.is_empty() {
            text.push_str(&format!("skip_origins_of = {:?}\n", p.skip_origins_of));
        }
        for t in &p.tables {
            text.push_str(&format!(
                "\n[[pipelines.tables]]\nsource = {:?}\n",
                t.source
            ));
            if let Some(target) = &t.target {
                text.push_str(&format!("target = {target:?}\n"));
            }
        }
    }
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

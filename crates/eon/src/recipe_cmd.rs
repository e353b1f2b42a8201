//! `eon recipe check | apply | list | rm`: front ends from recipes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use eon_common::recipe::Recipe;
use eon_proto::v1 as pb;

use crate::client::Find;

/// Read and check a recipe file: its text and the directory its `dir` is
/// relative to. The error is one line naming the file and the field.
pub fn load(file: &Path) -> anyhow::Result<(String, Recipe, PathBuf)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read it", file.display()))?;
    let recipe = Recipe::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = std::fs::canonicalize(file)
        .with_context(|| format!("{}: cannot resolve its path", file.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok((text, recipe, dir))
}

pub fn describe(r: &Recipe) -> String {
    format!(
        "front end {:?}: `{}`, {}..{} instances, route {}",
        r.name,
        r.command,
        r.scale.min,
        r.scale.max,
        r.route.describe()
    )
}

pub async fn apply(find: &Find, file: &Path) -> anyhow::Result<()> {
    let (text, _, dir) = load(file)?;
    let mut agent = find.agent().await?;
    let fe = agent
        .apply_recipe(pb::ApplyRecipeRequest {
            toml: text,
            base_dir: dir.display().to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message()))?
        .into_inner();
    let ingress = find.cluster().await.map(|c| c.ingress).unwrap_or_default();
    let url = if fe.route.starts_with('/') {
        format!("http://{ingress}{}/", fe.route.trim_end_matches('/'))
    } else {
        format!("{} via http://{ingress}", fe.route)
    };
    println!(
        "front end {:?} applied: {}..{} instances; reach it at {url}",
        fe.name, fe.min, fe.max
    );
    Ok(())
}

pub async fn list(find: &Find) -> anyhow::Result<()> {
    let mut agent = find.agent().await?;
    let list = agent
        .list_frontends(pb::ListFrontendsRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .frontends;
    if list.is_empty() {
        println!("no front ends (add one with `eon recipe apply FILE`)");
        return Ok(());
    }
    for f in &list {
        let ready = f
            .instances
            .iter()
            .filter(|i| i.instance.as_ref().is_some_and(|x| x.state == "running") && !i.draining)
            .count();
        println!(
            "{}  route {}  instances {ready} ready / {} (min {}, max {})  load {:.1} {} (target {} each)  held {}",
            f.name,
            f.route,
            f.instances.len(),
            f.min,
            f.max,
            f.load,
            f.signal,
            f.target,
            f.held
        );
        if let Some(s) = &f.stats {
            println!(
                "  requests {}  errors {}  in flight {}  cpu {:.1}s  memory {} MiB",
                s.requests_total,
                s.errors_total,
                s.in_flight,
                s.cpu_seconds,
                s.memory_bytes >> 20
            );
        }
        if !f.rule.is_empty() {
            println!("  last decision: {}", f.rule);
        }
        for i in &f.instances {
            let inst = i.instance.clone().unwrap_or_default();
            let state = if i.draining {
                "draining".to_string()
            } else {
                inst.state.clone()
            };
            println!(
                "  {:<20} {:<9} pid {:>7}  port {:>5}  in-flight {:>4}  restarts {}{}",
                inst.name,
                state,
                if inst.pid > 0 {
                    inst.pid.to_string()
                } else {
                    "-".into()
                },
                i.port,
                i.in_flight,
                inst.restarts,
                if i.outdated { "  (old recipe)" } else { "" }
            );
        }
    }
    Ok(())
}

pub async fn remove(find: &Find, name: &str) -> anyhow::Result<()> {
    let mut agent = find.agent().await?;
    match agent
        .remove_recipe(pb::RemoveRecipeRequest { name: name.into() })
        .await
    {
        Ok(r) => {
            let fe = r.into_inner();
            println!(
                "front end {:?} removed; draining {} instance(s)",
                fe.name,
                fe.instances.len()
            );
            Ok(())
        }
        Err(e) => bail!("{}", e.message()),
    }
}

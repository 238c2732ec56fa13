//! Deployed topologies: `/squall/topologies/<name>` holds the topology file as given and its
//! status. `deploy` refuses, writing nothing, a file that does not build, a name already
//! deployed, and a component kind no live node knows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use super::{membership, paths};
use crate::registry::Registry;
use crate::spec::TopologySpec;

/// Whether a deployed topology's spouts run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Spouts emit.
    Active,
    /// Spouts are paused; bolts drain.
    Inactive,
    /// Being torn down.
    Killed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Killed => "killed",
        })
    }
}

/// The content of `/squall/topologies/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The name it is deployed under (the file's own, or `--name`).
    pub name: String,
    /// The topology file (YAML) as deployed.
    pub spec: String,
    /// Its status.
    pub status: Status,
    /// Workers wanted, when `rebalance` changed it from the file's `workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Tasks per component, where `rebalance --parallelism` changed them from the file's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parallelism: BTreeMap<String, u32>,
}

impl TopologyRecord {
    /// The spec, parsed again, under its deployed name and with its current worker count and
    /// parallelism.
    pub fn parse(&self) -> Result<TopologySpec, String> {
        let mut spec = TopologySpec::parse(&self.spec, &paths::topology(&self.name)).map_err(|e| e.to_string())?;
        spec.name = self.name.clone();
        if let Some(workers) = self.workers {
            spec.workers = workers;
        }
        for (component, &tasks) in &self.parallelism {
            if let Some((parallelism, _)) = spec.component_mut(component) {
                *parallelism = tasks;
            }
        }
        Ok(spec)
    }
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The topology file is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("a topology named '{0}' is already deployed (kill it first, or deploy under another --name)")]
    Duplicate(String),
    /// No live node runs this kind.
    #[error(
        "no live node knows component kind '{kind}' (component '{component}'): start a node whose binary registers it"
    )]
    UnknownKind {
        /// The kind.
        kind: String,
        /// The component asking for it.
        component: String,
    },
    /// The store failed.
    #[error("coordinator: {0}")]
    Store(#[from] zk::Error),
}

/// Deploys the topology file `yaml` (from `origin`, for messages), renamed `name` if given;
/// returns the deployed name. Nothing is written unless every check passes.
pub async fn deploy(
    client: &zk::Client,
    registry: &Registry,
    yaml: &str,
    origin: &str,
    name: Option<&str>,
) -> Result<String, DeployError> {
    let mut spec = TopologySpec::parse(yaml, origin).map_err(|e| DeployError::Invalid(e.to_string()))?;
    if let Some(name) = name {
        spec.name = name.to_string();
    }
    registry.build(&spec, origin).map_err(|e| DeployError::Invalid(e.to_string()))?;
    let nodes = membership::live_nodes(client).await?;
    let components = spec.spouts.iter().map(|c| (&c.id, &c.kind)).chain(spec.bolts.iter().map(|c| (&c.id, &c.kind)));
    for (component, kind) in components {
        if !nodes.iter().any(|n| n.kinds.iter().any(|k| k == kind)) {
            return Err(DeployError::UnknownKind { kind: kind.clone(), component: component.clone() });
        }
    }
    let record = TopologyRecord {
        name: spec.name.clone(),
        spec: yaml.to_string(),
        status: Status::Active,
        workers: None,
        parallelism: BTreeMap::new(),
    };
    super::ensure_skeleton(client).await?;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let data = serde_json::to_vec(&record).expect("plain data serializes");
    match client.create(&paths::topology(&spec.name), &data, &persistent).await {
        Ok(_) => Ok(spec.name),
        Err(zk::Error::NodeExists) => Err(DeployError::Duplicate(spec.name)),
        Err(e) => Err(e.into()),
    }
}

/// Marks topology `name` killed: the master then removes its assignment and its record, and the
/// supervisors stop its workers. Fails with `NoNode` if no such topology is deployed.
pub async fn kill(client: &zk::Client, name: &str) -> Result<(), zk::Error> {
    update(client, name, |record| record.status = Status::Killed).await
}

/// The topology-wide settings `squall config` can change while a topology runs; besides them,
/// `<component>.<arg>` for each arg a component's kind declares reloadable.
pub const LIVE_SETTINGS: &[&str] = &["max_spout_pending", "log_level"];

/// Sets `values` (key → value) in topology `name`'s live configuration,
/// `/squall/config/<name>`; returns its new version. Refuses, changing nothing, a topology that
/// is not deployed, a key that cannot change while running, and a value of the wrong type. A
/// component arg (`<component>.<arg>`) must be one its kind (known to `registry`) declares
/// reloadable, and the topology with the new value must still build.
pub async fn configure(
    client: &zk::Client,
    registry: &Registry,
    name: &str,
    values: &[(String, String)],
) -> Result<i32, DeployError> {
    let record = read_record(client, name).await?;
    let mut spec = record.parse().map_err(DeployError::Invalid)?;
    for (key, value) in values {
        check_live_setting(registry, &mut spec, key, value).map_err(DeployError::Invalid)?;
    }
    super::ensure_skeleton(client).await?;
    let path = paths::config(name);
    loop {
        let (mut current, version) = match client.get_data(&path).await {
            Ok((data, stat)) => (
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&data).unwrap_or_default(),
                Some(stat.version),
            ),
            Err(zk::Error::NoNode) => (serde_json::Map::new(), None),
            Err(e) => return Err(e.into()),
        };
        for (key, value) in values {
            current.insert(key.clone(), serde_json::Value::String(value.clone()));
        }
        let data = serde_json::to_vec(&current).expect("plain data serializes");
        let written = match version {
            Some(version) => client.set_data(&path, &data, Some(version)).await.map(|stat| stat.version),
            None => client
                .create(&path, &data, &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()))
                .await
                .map(|(stat, _)| stat.version),
        };
        match written {
            Ok(version) => return Ok(version),
            Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets topology `name`'s status to active or inactive: its workers' spouts resume or pause.
/// Fails with `NoNode` if no such topology is deployed.
pub async fn set_active(client: &zk::Client, name: &str, active: bool) -> Result<(), zk::Error> {
    let status = if active { Status::Active } else { Status::Inactive };
    update(client, name, |record| {
        if record.status != Status::Killed {
            record.status = status;
        }
    })
    .await
}

/// Asks for `workers` workers for topology `name`: the master moves as few tasks as it can.
/// Fails with `NoNode` if no such topology is deployed.
pub async fn rebalance(client: &zk::Client, name: &str, workers: u32) -> Result<(), zk::Error> {
    update(client, name, |record| record.workers = Some(workers)).await
}

/// Gives topology `name`'s components new task counts (`component → tasks`), checked first
/// with `registry` (the topology must still build: a kind may refuse a count). The master
/// schedules the new tasks; workers whose tasks change are restarted with their new ones.
pub async fn set_parallelism(
    client: &zk::Client,
    registry: &Registry,
    name: &str,
    tasks: &[(String, u32)],
) -> Result<(), DeployError> {
    let record = read_record(client, name).await?;
    let mut spec = record.parse().map_err(DeployError::Invalid)?;
    let mut changed = record.clone();
    for (component, count) in tasks {
        if *count == 0 {
            return Err(DeployError::Invalid(format!("component '{component}' needs at least one task")));
        }
        if spec.component_mut(component).is_none() {
            return Err(DeployError::Invalid(format!("topology '{name}' has no component '{component}'")));
        }
        changed.parallelism.insert(component.clone(), *count);
    }
    let spec = changed.parse().map_err(DeployError::Invalid)?;
    registry.build(&spec, &paths::topology(name)).map_err(|e| DeployError::Invalid(e.to_string()))?;
    update(client, name, |record| record.parallelism.extend(changed.parallelism.clone())).await?;
    Ok(())
}

/// Topology `name`'s record; a clear error when it is not deployed or unreadable.
async fn read_record(client: &zk::Client, name: &str) -> Result<TopologyRecord, DeployError> {
    match client.get_data(&paths::topology(name)).await {
        Ok((data, _)) => serde_json::from_slice::<TopologyRecord>(&data)
            .map_err(|e| DeployError::Invalid(format!("unreadable record of topology '{name}': {e}"))),
        Err(zk::Error::NoNode) => Err(DeployError::Invalid(format!("no topology named '{name}' is deployed"))),
        Err(e) => Err(e.into()),
    }
}

/// Changes topology `name`'s record with `change`, retrying on a concurrent change.
async fn update(client: &zk::Client, name: &str, change: impl Fn(&mut TopologyRecord)) -> Result<(), zk::Error> {
    loop {
        let (data, stat) = client.get_data(&paths::topology(name)).await?;
        let mut record: TopologyRecord =
            serde_json::from_slice(&data).map_err(|e| zk::Error::UnexpectedError(format!("{name}: {e}")))?;
        change(&mut record);
        let data = serde_json::to_vec(&record).expect("plain data serializes");
        match client.set_data(&paths::topology(name), &data, Some(stat.version)).await {
            Ok(_) => return Ok(()),
            Err(zk::Error::BadVersion) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The deployed topologies, by name, with their records (unreadable ones skipped).
pub async fn list(client: &zk::Client) -> Result<Vec<(String, TopologyRecord)>, zk::Error> {
    let mut names = match client.list_children(paths::TOPOLOGIES).await {
        Ok(names) => names,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.sort();
    let mut topologies = Vec::new();
    for name in names {
        match client.get_data(&paths::topology(&name)).await {
            Ok((data, _)) => match serde_json::from_slice::<TopologyRecord>(&data) {
                Ok(record) => topologies.push((name, record)),
                Err(e) => tracing::warn!("{}: not a topology record: {e}", paths::topology(&name)),
            },
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(topologies)
}

/// Whether `key` may be set to `value` while topology `spec` runs; a component arg is also set
/// in `spec`, so that later checks see it.
fn check_live_setting(registry: &Registry, spec: &mut TopologySpec, key: &str, value: &str) -> Result<(), String> {
    match key {
        "max_spout_pending" if value.parse::<u32>().is_ok_and(|v| v > 0) => return Ok(()),
        "max_spout_pending" => return Err(format!("max_spout_pending must be a positive integer, not '{value}'")),
        "log_level" if !value.trim().is_empty() => return Ok(()),
        "log_level" => return Err("log_level needs a level or filter, e.g. debug or info,squall=debug".into()),
        _ => {}
    }
    let unknown = || {
        format!(
            "'{key}' cannot change while the topology runs (live settings: {}, and <component>.<arg> for an arg \
             its kind declares reloadable)",
            LIVE_SETTINGS.join(", ")
        )
    };
    let (component, arg) = key.split_once('.').ok_or_else(unknown)?;
    let topology = registry.build(spec, "the deployed topology").map_err(|e| e.to_string())?;
    let found = topology.components.iter().find(|c| c.id == component);
    let found = found.ok_or_else(|| format!("topology '{}' has no component '{component}'", spec.name))?;
    if !found.reloadable().contains(&arg) {
        let reloadable = found.reloadable();
        let which = if reloadable.is_empty() { "none".to_string() } else { reloadable.join(", ") };
        return Err(format!(
            "arg '{arg}' of component '{component}' (kind {}) cannot change while it runs (reloadable: {which})",
            found.kind
        ));
    }
    let parsed: serde_yaml::Value = serde_yaml::from_str(value).unwrap_or_else(|_| value.into());
    let (_, args) = spec.component_mut(component).expect("the component was built from this spec");
    if !args.is_mapping() {
        *args = serde_yaml::Value::Mapping(Default::default());
    }
    args.as_mapping_mut().expect("made a mapping above").insert(arg.into(), parsed);
    registry.build(spec, "the deployed topology").map_err(|e| format!("{key}={value}: {e}"))?;
    Ok(())
}

//! Node membership: each live node is an ephemeral znode `/squall/nodes/<node-id>` holding
//! what the scheduler needs to know of it (its slots and the component kinds its binary
//! knows). It disappears with the node's session: that is how the cluster learns a node died.

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use super::paths;
use crate::scheduler::LiveNode;

/// What a node says of itself in its znode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// The host other nodes reach it at.
    pub host: String,
    /// Worker slots.
    pub slots: u32,
    /// The worker on slot `s` listens for the other workers on `host:(worker_port + s)`.
    pub worker_port: u16,
    /// The component kinds its binary knows.
    pub kinds: Vec<String>,
    /// Squall's version.
    pub version: String,
}

impl NodeInfo {
    /// Where the worker on `slot` of this node listens for the other workers.
    pub fn worker_addr(&self, slot: u32) -> String {
        format!("{}:{}", self.host, u32::from(self.worker_port) + slot)
    }

    /// The node as the scheduler sees it.
    pub fn live(&self) -> LiveNode {
        LiveNode::new(&self.id, self.slots, self.kinds.iter().cloned())
    }
}

/// Registers `info` as `/squall/nodes/<id>`, owned by `client`'s session. A znode left by a
/// previous process of the same node (its session not expired yet) is replaced.
pub async fn register(client: &zk::Client, info: &NodeInfo) -> Result<(), zk::Error> {
    super::ensure_skeleton(client).await?;
    let path = paths::node(&info.id);
    let data = serde_json::to_vec(info).expect("plain data serializes");
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    loop {
        match client.create(&path, &data, &ephemeral).await {
            Ok(_) => return Ok(()),
            Err(zk::Error::NodeExists) => match client.check_stat(&path).await? {
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => return Ok(()),
                Some(stat) => match client.delete(&path, Some(stat.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                    Err(e) => return Err(e),
                },
                None => continue,
            },
            Err(e) => return Err(e),
        }
    }
}

/// The live nodes, by id; a znode that is not a node description is skipped with a warning.
pub async fn live_nodes(client: &zk::Client) -> Result<Vec<NodeInfo>, zk::Error> {
    let mut ids = match client.list_children(paths::NODES).await {
        Ok(ids) => ids,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    ids.sort();
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        match client.get_data(&paths::node(&id)).await {
            Ok((data, _)) => match serde_json::from_slice::<NodeInfo>(&data) {
                Ok(info) => nodes.push(info),
                Err(e) => tracing::warn!("{}: not a node description: {e}", paths::node(&id)),
            },
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(nodes)
}

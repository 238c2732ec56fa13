//! `squall zk`: a small ZooKeeper client shell, for Squall's store or any ZooKeeper.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use zookeeper_client as zk;

#[derive(Args)]
pub(crate) struct ZkArgs {
    /// The ensemble to talk to, as HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SQUALL_COORDINATOR", default_value = "127.0.0.1:2181", global = true)]
    coordinator: String,
    /// `user:password` to authenticate with (digest scheme).
    #[arg(long, global = true)]
    auth: Option<String>,
    #[command(subcommand)]
    command: ZkCommand,
}

#[derive(Subcommand)]
enum ZkCommand {
    /// Lists the children of PATH.
    Ls { path: String },
    /// Prints the data of PATH.
    Get { path: String },
    /// Prints the Stat of PATH.
    Stat { path: String },
    /// Creates PATH with DATA and prints the path created.
    Create {
        path: String,
        #[arg(default_value = "")]
        data: String,
        /// Appends a 10-digit sequence number to the name.
        #[arg(long)]
        sequential: bool,
        /// A container: deleted by the server once its last child is gone.
        #[arg(long, conflicts_with_all = ["sequential", "ttl"])]
        container: bool,
        /// Deleted by the server when it has had no children and no change for this long.
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Replaces the data of PATH.
    Set {
        path: String,
        data: String,
        /// Only if the data version is this.
        #[arg(long)]
        version: Option<i32>,
    },
    /// Deletes PATH (which must have no children).
    Delete {
        path: String,
        /// Only if the data version is this.
        #[arg(long)]
        version: Option<i32>,
    },
    /// Prints every change to PATH (and, with --recursive, below it) until interrupted.
    Watch {
        path: String,
        #[arg(long)]
        recursive: bool,
    },
}

fn describe(error: zk::Error, path: &str) -> anyhow::Error {
    let what = match &error {
        zk::Error::NoNode => "node does not exist".to_string(),
        zk::Error::NodeExists => "node already exists".to_string(),
        zk::Error::NotEmpty => "node has children".to_string(),
        zk::Error::BadVersion => "version does not match".to_string(),
        zk::Error::NoAuth => "not authorized".to_string(),
        other => other.to_string(),
    };
    anyhow::anyhow!("{path}: {what}")
}

pub(crate) fn run(args: ZkArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut connector = zk::Client::connector().with_connection_timeout(Duration::from_secs(5));
        if let Some(auth) = &args.auth {
            connector = connector.with_auth("digest", auth.as_bytes());
        }
        let client = connector
            .connect(&args.coordinator)
            .await
            .with_context(|| format!("cannot connect to the coordinator at {}", args.coordinator))?;
        command(&client, args.command).await
    })
}

async fn command(client: &zk::Client, command: ZkCommand) -> anyhow::Result<()> {
    match command {
        ZkCommand::Ls { path } => {
            let mut children = client.list_children(&path).await.map_err(|e| describe(e, &path))?;
            children.sort();
            for child in children {
                out!("{child}");
            }
        }
        ZkCommand::Get { path } => {
            let (data, _) = client.get_data(&path).await.map_err(|e| describe(e, &path))?;
            out!("{}", String::from_utf8_lossy(&data));
        }
        ZkCommand::Stat { path } => {
            let stat = client.check_stat(&path).await.map_err(|e| describe(e, &path))?;
            let stat = stat.ok_or_else(|| describe(zk::Error::NoNode, &path))?;
            out!("czxid = {:#x}", stat.czxid);
            out!("mzxid = {:#x}", stat.mzxid);
            out!("pzxid = {:#x}", stat.pzxid);
            out!("ctime = {}", stat.ctime);
            out!("mtime = {}", stat.mtime);
            out!("version = {}", stat.version);
            out!("cversion = {}", stat.cversion);
            out!("aversion = {}", stat.aversion);
            out!("ephemeralOwner = {:#x}", stat.ephemeral_owner);
            out!("dataLength = {}", stat.data_length);
            out!("numChildren = {}", stat.num_children);
        }
        ZkCommand::Create { path, data, sequential, container, ttl } => {
            let acls = zk::Acls::anyone_all();
            let mode = match (container, sequential) {
                (true, _) => zk::CreateMode::Container,
                (false, true) => zk::CreateMode::PersistentSequential,
                (false, false) => zk::CreateMode::Persistent,
            };
            let mut options = mode.with_acls(acls);
            if let Some(ttl) = ttl {
                options = options.with_ttl(ttl);
            }
            let (_, sequence) =
                client.create(&path, data.as_bytes(), &options).await.map_err(|e| describe(e, &path))?;
            if sequential {
                out!("{path}{sequence}");
            } else {
                out!("{path}");
            }
        }
        ZkCommand::Set { path, data, version } => {
            client.set_data(&path, data.as_bytes(), version).await.map_err(|e| describe(e, &path))?;
        }
        ZkCommand::Delete { path, version } => {
            client.delete(&path, version).await.map_err(|e| describe(e, &path))?;
        }
        ZkCommand::Watch { path, recursive } => {
            let mode = if recursive { zk::AddWatchMode::PersistentRecursive } else { zk::AddWatchMode::Persistent };
            let mut watcher = client.watch(&path, mode).await.map_err(|e| describe(e, &path))?;
            loop {
                let event = watcher.changed().await;
                if event.event_type == zk::EventType::Session {
                    anyhow::bail!("session ended: {:?}", event.session_state);
                }
                // Stop when nobody reads any more (`squall zk watch /a | head -1`).
                use std::io::Write as _;
                let line = format!("{:?} {}\n", event.event_type, event.path);
                let mut stdout = std::io::stdout().lock();
                if stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

//! `squall node --http H:P`: a small HTTP endpoint with Prometheus metrics (`/metrics`) and a
//! JSON status (`/status`) of what runs on this node. Both are read from the znode store: each
//! worker publishes its counts in its znode every few seconds (`squall status` reads the same).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Value, json};
use squall_runtime::cluster::paths;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zookeeper_client as zk;

/// Serves on `listener` until the task is dropped; `target` is the ensemble, `node` this node.
pub(crate) async fn serve(listener: TcpListener, target: String, node: String) {
    let mut client: Option<zk::Client> = None;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if client.is_none() {
            client = super::cluster::connect(&target, std::time::Duration::from_secs(10)).await.ok();
        }
        let answer = match &client {
            Some(client) => respond(stream, client, &node).await,
            None => reply(stream, "503 Service Unavailable", "text/plain", "the coordinator is unreachable\n").await,
        };
        if let Err(e) = answer {
            tracing::debug!("http: {e}");
            if matches!(e.downcast_ref::<zk::Error>(), Some(zk::Error::SessionExpired | zk::Error::ClientClosed)) {
                client = None;
            }
        }
    }
}

/// Binds `addr` for [`serve`].
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot serve HTTP on {addr}: {e}"))
}

async fn respond(mut stream: TcpStream, client: &zk::Client, node: &str) -> anyhow::Result<()> {
    // The request line may come in pieces: read until it is whole (or 4 KiB, or 5 s).
    let mut request = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !request.windows(2).any(|w| w == b"\r\n") && request.len() < 4096 {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    match (head.split_whitespace().next(), path.as_str()) {
        (Some("GET"), "/status") => {
            let status = status(client, node).await?;
            reply(stream, "200 OK", "application/json", &(serde_json::to_string_pretty(&status)? + "\n")).await
        }
        (Some("GET"), "/metrics") => {
            let status = status(client, node).await?;
            reply(stream, "200 OK", "text/plain; version=0.0.4", &metrics(&status)).await
        }
        (Some("GET"), _) => reply(stream, "404 Not Found", "text/plain", "try /metrics or /status\n").await,
        _ => reply(stream, "405 Method Not Allowed", "text/plain", "GET only\n").await,
    }
}

async fn reply(mut stream: TcpStream, status: &str, content_type: &str, body: &str) -> anyhow::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// This node, the master, and the workers of every topology that run here with their counts.
async fn status(client: &zk::Client, node: &str) -> anyhow::Result<Value> {
    let master = match client.get_data(paths::EPOCH).await {
        Ok((data, stat)) => json!({ "node": String::from_utf8_lossy(&data), "epoch": stat.version }),
        Err(_) => Value::Null,
    };
    let mut workers = Vec::new();
    for topology in client.list_children(paths::WORKERS).await.unwrap_or_default() {
        let on_this_node = |worker: &str| worker.rsplit_once('-').map(|(n, _)| n) == Some(node);
        for (worker, about) in super::cluster::published_by_workers(client, &topology, on_this_node).await {
            workers.push(json!({ "topology": topology, "worker": worker, "published": about }));
        }
    }
    Ok(json!({ "node": node, "master": master, "workers": workers }))
}

/// The counts of [`status`] as Prometheus metrics, summed per topology and component.
fn metrics(status: &Value) -> String {
    let mut sums: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    for worker in status["workers"].as_array().into_iter().flatten() {
        let topology = worker["topology"].as_str().unwrap_or_default().to_string();
        for (component, counts) in worker["published"]["components"].as_object().into_iter().flatten() {
            for key in ["emitted", "executed", "acked", "failed", "errors"] {
                *sums.entry((topology.clone(), component.clone(), key)).or_default() +=
                    counts[key].as_u64().unwrap_or(0);
            }
        }
    }
    let mut out = String::new();
    let node = status["node"].as_str().unwrap_or_default();
    for key in ["emitted", "executed", "acked", "failed", "errors"] {
        let _ = writeln!(out, "# TYPE squall_tuples_{key}_total counter");
        for ((topology, component, k), value) in &sums {
            if *k == key {
                let _ = writeln!(
                    out,
                    "squall_tuples_{key}_total{{node=\"{node}\",topology=\"{topology}\",component=\"{component}\"}} {value}"
                );
            }
        }
    }
    for worker in status["workers"].as_array().into_iter().flatten() {
        let topology = worker["topology"].as_str().unwrap_or_default();
        for (component, counts) in worker["published"]["components"].as_object().into_iter().flatten() {
            for (name, value) in counts["gauges"].as_object().into_iter().flatten() {
                // `metric{labels}` gets this worker's labels in front of its own.
                let (metric, labels) = name.split_once('{').unwrap_or((name, "}"));
                let ours = format!("node=\"{node}\",topology=\"{topology}\",component=\"{component}\"");
                let labels = if labels == "}" { format!("{ours}}}") } else { format!("{ours},{labels}") };
                let _ = writeln!(out, "squall_{metric}{{{labels} {}", value.as_i64().unwrap_or(0));
            }
        }
    }
    let _ = writeln!(out, "# TYPE squall_workers gauge");
    let _ = writeln!(out, "squall_workers{{node=\"{node}\"}} {}", status["workers"].as_array().map_or(0, Vec::len));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_counts_and_label_gauges_with_their_worker() {
        let status = serde_json::json!({
            "node": "n1",
            "workers": [
                { "topology": "t", "published": { "components": {
                    "k": { "emitted": 5, "acked": 4, "gauges": { "kafka_lag{topic=\"e\",partition=\"0\"}": 7 } }
                } } },
                { "topology": "t", "published": { "components": {
                    "k": { "emitted": 2, "gauges": { "backlog{}": 3 } }
                } } }
            ]
        });
        let text = metrics(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"squall_tuples_emitted_total{node=\"n1\",topology=\"t\",component=\"k\"} 7"), "{text}");
        assert!(
            lines.contains(
                &"squall_kafka_lag{node=\"n1\",topology=\"t\",component=\"k\",topic=\"e\",partition=\"0\"} 7"
            ),
            "{text}"
        );
        assert!(lines.contains(&"squall_backlog{node=\"n1\",topology=\"t\",component=\"k\"} 3"), "{text}");
    }
}

//! Through `scripts/cluster`: nginx in front of three nodes, round robin with
//! no stickiness, WebSocket upgrade through the proxy; the camera flow, and a
//! rolling restart of every node under 500 sockets.

use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::cluster::*;
use crate::support::*;

pub struct Cluster {
    child: Child,
    /// A TestApp pointed at the load balancer: every call may land on any node.
    pub lb: TestApp,
    pub node_ports: [u16; 3],
    pub logs: std::path::PathBuf,
}

impl Cluster {
    pub async fn start(name: &str) -> Cluster {
        Self::start_on(name, false).await
    }

    /// With `redis_cluster`, on a Redis Cluster (`REDIS_CLUSTER=1`: six redis-servers).
    pub async fn start_on(name: &str, redis_cluster: bool) -> Cluster {
        let base = free_port_run(if redis_cluster { 10 } else { 5 });
        let (lb, nodes, redis) = (base, base + 1, base + 4);
        let logs = std::env::temp_dir().join(format!("camsig-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&logs);
        let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"));
        if redis_cluster {
            cmd.env("REDIS_CLUSTER", "1").env("REDIS_BUS_PORT", free_port_run(6).to_string());
        }
        let child = cmd
            .env("CLUSTER_PORT", lb.to_string())
            .env("REDIS_PORT", redis.to_string())
            .env("NODE_PORT", nodes.to_string())
            .env("CLUSTER_LOGS", &logs)
            .env("CAMSIG_BIN", env!("CARGO_BIN_EXE_camsig"))
            .env("CAMSIG__AUTH__JWT_SECRET", SECRET)
            .env("CAMSIG__LIMITS__RATE_PER_S", "10000")
            .env("CAMSIG__LIMITS__PRESENCE_PER_MIN", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("scripts/cluster runs");
        let app = spawn_app().await;
        let lb_app = TestApp { port: lb, base: format!("http://127.0.0.1:{lb}"), ..app };
        let cluster = Cluster { child, lb: lb_app, node_ports: [nodes, nodes + 1, nodes + 2], logs };
        for port in cluster.node_ports {
            cluster.wait_ready(port).await;
        }
        cluster.wait_ready(lb).await;
        cluster
    }

    pub async fn wait_ready(&self, port: u16) {
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_until(Duration::from_secs(30), "a cluster port to be ready", async || {
            matches!(self.lb.http.get(&url).send().await, Ok(r) if r.status().is_success())
        })
        .await;
    }

    /// The pid of node `i` (1 to 3) as its supervisor last started it.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        std::fs::read_to_string(self.logs.join(format!("node{i}.pid"))).ok()?.trim().parse().ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The script traps TERM and stops what it started.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("cluster logs kept in {}", self.logs.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

#[actix_web::test]
async fn camera_flow_through_the_nginx_cluster() {
    camera_flow(&Cluster::start("flow").await).await;
}

/// README's "On a Redis Cluster": `REDIS_CLUSTER=1 scripts/cluster`.
#[actix_web::test]
async fn camera_flow_through_the_nginx_cluster_on_a_redis_cluster() {
    camera_flow(&Cluster::start_on("rc-flow", true).await).await;
}

async fn camera_flow(cluster: &Cluster) {
    let lb_app = &cluster.lb;
    let (owner, viewer) = (token("lb-owner"), token("lb-viewer"));
    let mut ows = lb_app.ws(&owner).await;
    let mut vws = lb_app.ws(&viewer).await;
    let mut seen_nodes = std::collections::HashSet::new();
    for _ in 0..6 {
        seen_nodes.insert(lb_app.get("/healthz", None).await.body["node_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen_nodes.len(), 3, "round robin reaches every node: {seen_nodes:?}");

    assert_eq!(lb_app.camera_on(&owner).await.status, 200);
    vws.wait_user("lb-owner", |u| u["camera"] == "on").await;
    let room = lb_app.show(&viewer, "lb-owner").await;
    assert_eq!(ows.next_event().await["action"], "server-action:show_cam");
    let r = lb_app.post("offer", &owner, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(vws.next_event().await["action"], "server-action:put_offer");
    let r = lb_app.post("answer", &viewer, json!({"room_id": room, "answer": sdp("answer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(ows.next_event().await["action"], "server-action:put_answer");
    for i in 0..5u16 {
        lb_app.post("ice", &viewer, json!({"room_id": room, "candidate": candidate(7000 + i)})).await;
    }
    for i in 0..5u16 {
        assert_eq!(ows.next_event().await["data"]["candidate"], candidate(7000 + i));
    }
    assert_eq!(lb_app.post("hangup", &owner, json!({"room_id": room})).await.status, 200);
    assert_eq!(vws.next_event().await["action"], "server-action:hangup");
}

//! A node in its own process, at the default log level, with its log in a
//! file: what an attack costs is measured from outside, as an operator would
//! see it (RSS, open descriptors, log bytes).

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::SECRET;

pub struct ProcNode {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl ProcNode {
    /// A single node (embedded broker) on port 0, with extra environment.
    pub async fn start(env: &[(&str, &str)]) -> ProcNode {
        let log = std::env::temp_dir().join(format!("camsig-abuse-{}-{}.log", std::process::id(), rand_suffix()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_camsig"))
            .env("CAMSIG__SERVER__BIND", "127.0.0.1:0")
            .env("CAMSIG__AUTH__JWT_SECRET", SECRET)
            .env("CAMSIG__LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .env_remove("CAMSIG__REDIS__URL")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("the camsig binary runs");
        let mut node = ProcNode { port: 0, child, log };
        // The port the node bound, read back from its log: no port picked
        // here that another process could take first.
        let start = Instant::now();
        node.port = loop {
            if let Some(p) = node.log_text().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l["message"] == "listening").and_then(|l| l["port"].as_u64()) {
                break p as u16;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the node never said it was listening:\n{}", node.log_text());
            assert!(node.child.try_wait().unwrap().is_none(), "the node exited:\n{}", node.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_raw(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log_raw()).into_owned()
    }

    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc/pid/status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).unwrap().count()
    }

    /// POST `/webrtc/<op>`: status and JSON body.
    pub async fn post(&self, op: &str, token: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut req = http.post(self.url(&format!("/webrtc/{op}"))).insert_header(("Authorization", format!("Bearer {token}")));
        if let Some(k) = key {
            req = req.insert_header(("Idempotency-Key", k));
        }
        let mut r = req.send_json(body).await.expect("the node answers");
        let v = r.json::<Value>().limit(1 << 20).await.unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    }

    /// GET with optional extra headers: the status.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = awc::Client::default().get(self.url(path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        req.send().await.expect("the node answers").status().as_u16()
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u32
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

//! A single node (embedded broker) in its own process, at the default log
//! level unless a test sets `RUST_LOG`: what an attack costs is measured from
//! outside, as an operator would see it (RSS, open descriptors, log bytes).

use serde_json::Value;
use std::ops::Deref;
use std::time::Duration;

use crate::support::SECRET;
use crate::support::process::Process;

pub struct ProcNode(Process);

impl Deref for ProcNode {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl ProcNode {
    pub async fn start(env: &[(&str, &str)]) -> ProcNode {
        let mut all = vec![("CAMSIG__AUTH__JWT_SECRET", SECRET)];
        all.extend_from_slice(env);
        ProcNode(Process::spawn(&all).await)
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

    /// GET with extra headers: the status.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = awc::Client::default().get(self.url(path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        req.send().await.expect("the node answers").status().as_u16()
    }
}

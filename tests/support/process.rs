//! A camsig node in its own process, for tests that kill it, signal it or
//! measure it from outside (RSS, descriptors, log bytes).
//!
//! The node binds port 0 and the test reads the bound port from its log:
//! a port picked by the test and bound later by the node could be taken by
//! another process in between.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub struct Process {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts the binary (`CAMSIG_BIN`, or this tree's) with `env` on top of `CAMSIG__SERVER__BIND=127.0.0.1:0`
    /// and JSON logs. Without `RUST_LOG` in `env`, the configured level applies.
    pub async fn spawn(env: &[(&str, &str)]) -> Process {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("camsig-test-{}-{n}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        // CAMSIG_BIN: another build of the binary (the chaos bench runs a copy,
        // so that rebuilding the tree meanwhile changes nothing under it).
        let bin = std::env::var_os("CAMSIG_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_camsig").into());
        let child = Command::new(bin)
            .env("CAMSIG__SERVER__BIND", "127.0.0.1:0")
            .env("CAMSIG__LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("the camsig binary runs");
        let mut p = Process { port: 0, child, log };
        // On failure, dropping `p` prints the end of its log.
        wait_until(Duration::from_secs(20), "the node to say it is listening", async || {
            let listening = p.log_text().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l["message"] == "listening");
            p.port = listening.and_then(|l| l["port"].as_u64()).unwrap_or(0) as u16;
            assert!(p.port != 0 || !p.exited(), "the node exited before it listened");
            p.port != 0
        })
        .await;
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc/pid/status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill runs").success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of node :{} ---", self.port);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

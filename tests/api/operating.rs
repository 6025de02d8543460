//! README.md's "Operating it", run as an operator pastes it: a node with
//! webhooks to `examples/webhooks/receiver.py`, tokens from the binary, the
//! admin API with curl. Every command followed by `# ...` lines must print
//! them, so the section cannot drift.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::readme::{commands, marked, matches};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_readme_operating_section_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let blocks = marked(&std::fs::read_to_string(root.join("README.md")).unwrap(), "operating");
    assert!(blocks.len() >= 3, "the operating section's blocks");
    let work = std::env::temp_dir().join(format!("camsig-operating-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let (node_port, hook_port) = (free_port(), free_port());
    let here = |s: &str| {
        s.replace("8080", &node_port.to_string())
            .replace("9000", &hook_port.to_string())
            .replace("examples/", &format!("{}/examples/", root.display()))
    };
    // `camsig` is this build's binary; its data (the dev secret) stays in the work directory.
    let mut script = format!(
        "set -euo pipefail\ncamsig() {{ {:?} \"$@\"; }}\nexport CAMSIG__SERVER__DATA_DIR={:?}\n",
        env!("CARGO_BIN_EXE_camsig"),
        work.join("data")
    );
    let mut expected = Vec::new();
    for block in &blocks {
        for (cmd, expect) in commands(&block.text) {
            if expect.is_empty() {
                script.push_str(&here(&cmd));
                script.push('\n');
            } else {
                let n = expected.len();
                script.push_str(&format!("echo '@@{n}'\n{}\necho\necho '@@/{n}'\n", here(&cmd)));
                expected.push((cmd, expect));
            }
        }
    }
    script.push_str("kill $(jobs -p) 2>/dev/null || true\n");
    let mut run = Command::new("timeout");
    std::os::unix::process::CommandExt::process_group(&mut run, 0);
    let mut run = run
        .args(["120", "bash", "-c", &script])
        .current_dir(&work)
        .env_remove("CAMSIG__REDIS__URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    run.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    run.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = run.wait().unwrap();
    let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", run.id())]).stderr(Stdio::null()).status();
    let node_log = std::fs::read_to_string(work.join("camsig.log")).unwrap_or_default();
    assert!(status.success(), "the section failed ({status}):\n{stdout}\n{stderr}\nnode:\n{node_log}");
    for (n, (cmd, expect)) in expected.iter().enumerate() {
        let got = stdout.split(&format!("@@{n}\n")).nth(1).and_then(|s| s.split(&format!("@@/{n}")).next()).unwrap_or_default();
        let got: Vec<&str> = got.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(got.len(), expect.len(), "{cmd}\nprinted:\n{}", got.join("\n"));
        for (g, e) in got.iter().zip(expect) {
            assert!(matches(e, g), "{cmd}\nprinted:  {g}\nREADME:   {e}");
        }
    }
    let hooks = std::fs::read_to_string(work.join("hooks.log")).unwrap();
    assert!(hooks.contains(r#""camera": "on""#) && hooks.contains(r#""user_id": "ann""#), "{hooks}");
    let _ = std::fs::remove_dir_all(&work);
}

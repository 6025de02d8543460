//! README.md's "Operating it", run as an operator pastes it: a node with
//! webhooks to `examples/webhooks/receiver.py`, tokens from the binary, the
//! admin API with curl. Every command followed by `# ...` lines must print
//! them, so the section cannot drift.

use std::path::PathBuf;

use super::readme::{check_printed, marked, push_commands, run_bash};

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
        "set -euo pipefail\nunset CAMSIG__REDIS__URL\ncamsig() {{ {:?} \"$@\"; }}\nexport CAMSIG__SERVER__DATA_DIR={:?}\n",
        env!("CARGO_BIN_EXE_camsig"),
        work.join("data")
    );
    let mut expected = Vec::new();
    for block in &blocks {
        push_commands(&mut script, &mut expected, &block.text, &here);
    }
    let (status, stdout, stderr) = run_bash(&script, &work, 120);
    let node_log = std::fs::read_to_string(work.join("camsig.log")).unwrap_or_default();
    assert!(status.success(), "the section failed ({status}):\n{stdout}\n{stderr}\nnode:\n{node_log}");
    check_printed(&stdout, &expected);
    let hooks = std::fs::read_to_string(work.join("hooks.log")).unwrap();
    assert!(hooks.contains(r#""camera": "on""#) && hooks.contains(r#""user_id": "ann""#), "{hooks}");
    let _ = std::fs::remove_dir_all(&work);
}

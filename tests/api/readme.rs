//! README.md's walkthrough, run as a user pastes it: every ```sh block
//! between the walkthrough markers runs, in order, in one bash against a
//! fresh dev-mode node (`localhost:8080` pointed at it). A ```sh terminal
//! block runs beside it, as in a second terminal, and stays open; the next
//! block waits for its first event. A command followed by `# ...` lines must
//! print them (`...` stands for anything), so the README cannot drift.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Block {
    pub terminal: bool,
    pub text: String,
}

fn walkthrough(readme: &str) -> Vec<Block> {
    marked(readme, "walkthrough")
}

/// The ```sh blocks between `<!-- name` and `<!-- /name -->`.
pub(crate) fn marked(readme: &str, name: &str) -> Vec<Block> {
    let start = readme.find(&format!("<!-- {name}")).unwrap_or_else(|| panic!("README.md marks its {name}"));
    let end = readme.find(&format!("<!-- /{name} -->")).unwrap_or_else(|| panic!("README.md ends its {name}"));
    let mut blocks = Vec::new();
    let mut lines = readme[start..end].lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```sh") else { continue };
        let text: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        blocks.push(Block { terminal: info.trim() == "terminal", text: text.join("\n") });
    }
    blocks
}

/// A command (with its `\` continuations) and the output documented below it.
pub(crate) fn commands(block: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut open = false;
    for line in block.lines() {
        if let Some(expect) = line.strip_prefix("# ").filter(|_| !open && !out.is_empty()) {
            out.last_mut().unwrap().1.push(expect.to_owned());
            continue;
        }
        if open {
            let last = &mut out.last_mut().unwrap().0;
            last.push('\n');
            last.push_str(line);
        } else {
            out.push((line.to_owned(), Vec::new()));
        }
        open = line.ends_with('\\');
    }
    out
}

/// Adds a block's commands to `script`; those with documented output are
/// fenced by `@@n` markers and their output kept in `expected`.
pub(crate) fn push_commands(script: &mut String, expected: &mut Vec<(String, Vec<String>)>, block: &str, here: &dyn Fn(&str) -> String) {
    for (cmd, expect) in commands(block) {
        if expect.is_empty() {
            script.push_str(&here(&cmd));
            script.push('\n');
        } else {
            let n = expected.len();
            // curl's JSON ends without a newline: the `echo` gives it one.
            script.push_str(&format!("echo '@@{n}'\n{}\necho\necho '@@/{n}'\n", here(&cmd)));
            expected.push((cmd, expect));
        }
    }
}

/// Runs `script` in one bash in `dir`, in its own process group (killed
/// after, with whatever it started), for at most `secs`: status, stdout, stderr.
pub(crate) fn run_bash(script: &str, dir: &Path, secs: u32) -> (std::process::ExitStatus, String, String) {
    let script = format!("{script}kill $(jobs -p) 2>/dev/null || true\n");
    let mut run = Command::new("timeout");
    std::os::unix::process::CommandExt::process_group(&mut run, 0);
    let mut run = run
        .args([secs.to_string().as_str(), "bash", "-c", &script])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    run.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    run.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = run.wait().unwrap();
    let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", run.id())]).stderr(Stdio::null()).status();
    (status, stdout, stderr)
}

/// Each fenced command printed what the README documents below it.
pub(crate) fn check_printed(stdout: &str, expected: &[(String, Vec<String>)]) {
    for (n, (cmd, expect)) in expected.iter().enumerate() {
        let got = stdout.split(&format!("@@{n}\n")).nth(1).and_then(|s| s.split(&format!("@@/{n}")).next()).unwrap_or_default();
        let got: Vec<&str> = got.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(got.len(), expect.len(), "{cmd}\nprinted:\n{}", got.join("\n"));
        for (g, e) in got.iter().zip(expect) {
            assert!(matches(e, g), "{cmd}\nprinted:  {g}\nREADME:   {e}");
        }
    }
}

/// `pattern` with `...` standing for anything.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let [first, middle @ .., last] = parts.as_slice() else { return text == pattern };
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn wait_for(path: &Path, what: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(start.elapsed() < limit, "{what:?} never appeared in {}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let blocks = walkthrough(&std::fs::read_to_string(root.join("README.md")).unwrap());
    assert!(blocks.len() >= 8 && blocks.iter().filter(|b| b.terminal).count() == 2, "the walkthrough's blocks");
    let work = std::env::temp_dir().join(format!("camsig-readme-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    // A fresh node in dev mode, as `cargo run` starts it, on a free port.
    let node_log = work.join("node.log");
    let mut node = Command::new(env!("CARGO_BIN_EXE_camsig"))
        .env_remove("CAMSIG__AUTH__JWT_SECRET")
        .env_remove("CAMSIG__REDIS__URL")
        .env("CAMSIG__SERVER__BIND", "127.0.0.1:0")
        .env("CAMSIG__SERVER__DATA_DIR", work.join("data"))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&node_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = wait_for(&node_log, "demo page: http://127.0.0.1:", Duration::from_secs(20));
    let port: u16 = log.split("demo page: http://127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let here = |s: &str| s.replace("localhost:8080", &format!("127.0.0.1:{port}"));

    // One script, as one terminal; terminals beside it keep their stdin open.
    let mut script = String::from("set -euo pipefail\n");
    let mut expected = Vec::new();
    let mut terminals = Vec::new();
    for block in &blocks {
        if block.terminal {
            let out = work.join(format!("terminal{}.out", terminals.len()));
            script.push_str(&format!("( {} ) < <(sleep 3600 </dev/null 2>/dev/null) > {:?} 2>&1 &\n", here(&block.text), out));
            // The socket is open once its hello is printed (npx may download wscat first).
            script.push_str(&format!("until grep -q server-action:hello {out:?}; do sleep 0.1; done\n"));
            terminals.push(out);
            continue;
        }
        push_commands(&mut script, &mut expected, &block.text, &here);
    }
    let (status, stdout, stderr) = run_bash(&script, &root, 300);
    let _ = node.kill();
    let _ = node.wait();
    assert!(status.success(), "the walkthrough failed ({status}):\n{stdout}\n{stderr}");
    check_printed(&stdout, &expected);
    // What the two sockets heard, as the README tells it.
    let ann = std::fs::read_to_string(&terminals[0]).unwrap();
    let bob = std::fs::read_to_string(&terminals[1]).unwrap();
    for action in ["update_user", "show_cam", "put_answer", "put_ice", "hangup", "member_joined", "member_left"] {
        assert!(ann.contains(&format!("server-action:{action}")), "Ann's socket: no {action}:\n{ann}");
    }
    for action in ["update_user", "put_offer", "member_joined"] {
        assert!(bob.contains(&format!("server-action:{action}")), "Bob's socket: no {action}:\n{bob}");
    }
    assert_eq!(ann.matches("server-action:hangup").count(), 3, "one hangup per closed room, the retried one once:\n{ann}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn documented_output_patterns_match_as_meant() {
    assert!(matches(r#"{"a":...,"b":2}"#, r#"{"a":1,"b":2}"#));
    assert!(matches("200", "200") && !matches("200", "201"));
    assert!(!matches(r#"{"a":...,"b":2}"#, r#"{"a":1,"b":3}"#));
    assert!(matches("...", "anything"));
    let cmds = commands("A=1\ncurl x \\\n  -d y\n# out 1\n# out 2\nB=2");
    assert_eq!(cmds.len(), 3);
    assert_eq!(cmds[1].1, ["out 1", "out 2"]);
}

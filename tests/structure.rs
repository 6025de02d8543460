//! The source's import graph has no circles: no file reaches, through `use`
//! and path imports (`crate::`, `super::`, a child module), a file that
//! reaches it back. Read from the text of `src/`, test modules left out.
//!
//! `cargo test --test structure -- --nocapture` prints the graph's size and
//! the largest files, as docs/architecture.md records them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's module path (`["service", "command"]`) and its source, tests cut off.
struct Module {
    path: Vec<String>,
    text: String,
    children: Vec<String>,
}

fn modules(src: &Path) -> BTreeMap<Vec<String>, Module> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: Vec<String> = p.strip_prefix(src).unwrap().with_extension("").iter().map(|c| c.to_string_lossy().into_owned()).collect();
            let mut path = rel.clone();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                path.pop();
            }
            if rel == ["main"] {
                path = vec!["<main>".into()];
            }
            let full = std::fs::read_to_string(&p).unwrap();
            let text = full.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            let children = text
                .lines()
                .filter_map(|l| l.trim().trim_start_matches("pub ").strip_prefix("mod "))
                .filter_map(|l| l.strip_suffix(';'))
                .map(str::to_owned)
                .collect();
            out.insert(path.clone(), Module { path, text, children });
        }
    }
    out
}

/// Every path the text names: `use` trees expanded, and inline `a::b::c` paths.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // Comments say nothing; `pub use` only hands names on (see `resolve`).
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//") && !l.trim_start().starts_with("pub use ")).collect::<Vec<_>>().join("\n");
    // `use` trees: `use a::{b, c::{d, e}};`
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        expand(&rest[..end].split_whitespace().collect::<String>(), &mut Vec::new(), &mut out);
        rest = &rest[end..];
    }
    // Inline paths: identifiers joined by `::`.
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_alphabetic() || bytes[i] == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_alphanumeric() || bytes[i] == '_' || (bytes[i] == ':' && bytes.get(i + 1) == Some(&':'))) {
                i += if bytes[i] == ':' { 2 } else { 1 };
            }
            let word: String = bytes[start..i].iter().collect();
            if word.contains("::") && (start == 0 || !matches!(bytes[start - 1], ':' | '.')) {
                out.push(word.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
            }
        } else {
            i += 1;
        }
    }
    out
}

fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(open) = tree.find('{') else {
        let mut p = prefix.clone();
        p.extend(tree.split(" as ").next().unwrap_or(tree).split("::").filter(|s| !s.is_empty()).map(str::to_owned));
        out.push(p);
        return;
    };
    let head: Vec<String> = tree[..open].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut from) = (0, 0);
    let n = prefix.len();
    prefix.extend(head);
    for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let part = &inner[from..i];
                if !part.is_empty() && part != "self" {
                    expand(part, prefix, out);
                } else if part == "self" {
                    out.push(prefix.clone());
                }
                from = i + 1;
            }
            _ => {}
        }
    }
    prefix.truncate(n);
}

/// The file a path lands in, from the module `at`: the longest module
/// prefix, followed through a `pub use` there (a folder's face hands names
/// on: `domain::Event` lands in `domain::event`).
fn resolve(path: &[String], at: &Module, all: &BTreeMap<Vec<String>, Module>) -> Option<Vec<String>> {
    let mut abs: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("super") => {
            let mut base = at.path.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            base
        }
        Some("self") => at.path.iter().chain(&path[1..]).cloned().collect(),
        Some(first) if at.children.iter().any(|c| c == first) => at.path.iter().chain(path).cloned().collect(),
        _ => return None,
    };
    let full = abs.clone();
    while !abs.is_empty() && !all.contains_key(&abs) {
        abs.pop();
    }
    let module = all.get(&abs)?;
    if let Some(name) = full.get(abs.len()) {
        for (exported, from) in reexports(module) {
            if exported == *name && from.first() != Some(name) {
                return resolve(&from, module, all).or(Some(abs));
            }
        }
    }
    Some(abs)
}

/// A module's `pub use` lines: each name it hands on, and the path it comes from.
fn reexports(m: &Module) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in m.text.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let mut names = Vec::new();
        expand(&line.trim_end_matches(';').split_whitespace().collect::<String>(), &mut Vec::new(), &mut names);
        out.extend(names.into_iter().filter_map(|p| Some((p.last()?.clone(), p))));
    }
    out
}

fn graph(src: &Path) -> (BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, BTreeMap<Vec<String>, Module>) {
    let all = modules(src);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in all.values() {
        let to = edges.entry(m.path.clone()).or_default();
        for p in paths(&m.text) {
            if let Some(target) = resolve(&p, m, &all)
                && target != m.path
                && !target.is_empty()
            {
                to.insert(target);
            }
        }
    }
    (edges, all)
}

/// Strongly connected components of more than one file (Tarjan).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, (usize, usize)>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let i = t.index.len();
        t.index.insert(v, (i, i));
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let low = t.index[w].1.min(t.index[v].1);
                t.index.get_mut(v).unwrap().1 = low;
            } else if t.on.contains(w) {
                let low = t.index[w].0.min(t.index[v].1);
                t.index.get_mut(v).unwrap().1 = low;
            }
        }
        if t.index[v].0 == t.index[v].1 {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t = T { edges, index: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn src_dir() -> PathBuf {
    // CAMSIG_STRUCTURE_SRC measures another tree (an older checkout, to compare).
    std::env::var_os("CAMSIG_STRUCTURE_SRC").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let (edges, all) = graph(&src_dir());
    let arrows: usize = edges.values().map(BTreeSet::len).sum();
    let mut sizes: Vec<(usize, String)> = all.values().map(|m| (std::fs::read_to_string(file_of(&m.path)).map_or(0, |t| t.lines().count()), m.path.join("::"))).collect();
    sizes.sort_by(|a, b| b.cmp(a));
    println!("{} files, {arrows} arrows; largest: {:?}", all.len(), &sizes[..6.min(sizes.len())]);
    let found = circles(&edges);
    let told: Vec<String> = found.iter().map(|c| c.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" <-> ")).collect();
    assert!(found.is_empty(), "import circles: {told:#?}");
}

fn file_of(module: &[String]) -> PathBuf {
    let src = src_dir();
    if module == ["<main>"] {
        return src.join("main.rs");
    }
    if module.is_empty() {
        return src.join("lib.rs");
    }
    let flat = src.join(module.join("/") + ".rs");
    if flat.exists() { flat } else { src.join(module.join("/")).join("mod.rs") }
}

#[test]
fn the_reader_sees_paths_as_written() {
    let mut out = Vec::new();
    expand("a::{b,c::{d,e as f},self}", &mut Vec::new(), &mut out);
    let joined: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::d", "a::c::e", "a"]);
    let inline = paths("fn f() { crate::x::y::z(); let _ = v.w::<u8>(); }");
    assert!(inline.iter().any(|p| p.join("::") == "crate::x::y::z"));
}

//! A program for `commit.lua` or `read.lua`: opcodes with their arguments,
//! where key arguments name an entry of KEYS (declared, so the scripts stay
//! valid on a Redis Cluster once the keys of one step share a slot).

use std::collections::{BTreeMap, HashMap};

use super::keys::Shard;

#[derive(Debug, Default, Clone)]
pub struct Program {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    args: Vec<Vec<u8>>,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an instruction.
    pub fn op(&mut self, name: &str) -> &mut Self {
        self.args.push(name.as_bytes().to_vec());
        self
    }

    /// A key argument (declared once in KEYS).
    pub fn key(&mut self, key: String) -> &mut Self {
        let n = self.keys.len();
        let i = *self.index.entry(key.clone()).or_insert_with(|| n);
        if i == n {
            self.keys.push(key);
        }
        self.args.push((i + 1).to_string().into_bytes());
        self
    }

    pub fn arg(&mut self, a: impl ToString) -> &mut Self {
        self.args.push(a.to_string().into_bytes());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// As kept in an outbox entry, for another shard to run.
    pub fn to_json(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        serde_json::json!({"k": self.keys, "a": args}).to_string()
    }

    /// An outbox entry's program, run once: `once` (the entry's id `entry`
    /// against the last one relayed from shard `from`, in `relayed`, a key
    /// put last) before everything it holds.
    pub fn relay(json: &str, relayed: String, from: Shard, entry: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Kept {
            k: Vec<String>,
            a: Vec<String>,
        }
        let kept: Kept = serde_json::from_str(json).ok()?;
        let mut p = Program { keys: kept.k, ..Program::default() };
        for (i, k) in p.keys.iter().enumerate() {
            p.index.insert(k.clone(), i);
        }
        p.op("once").key(relayed).arg(from).arg(entry);
        p.args.extend(kept.a.into_iter().map(String::into_bytes));
        Some(p)
    }
}

/// A step's programs, one per shard it writes to.
#[derive(Debug, Default)]
pub struct Programs {
    by: BTreeMap<Shard, Program>,
    /// On a Redis Cluster: each program starts by saying so (`SPUBLISH`).
    sharded: bool,
}

impl Programs {
    pub fn new(sharded: bool) -> Self {
        Self { by: BTreeMap::new(), sharded }
    }

    /// Shard `n`'s program.
    pub fn at(&mut self, n: Shard) -> &mut Program {
        let sharded = self.sharded;
        self.by.entry(n).or_insert_with(|| {
            let mut p = Program::new();
            if sharded {
                p.op("sharded");
            }
            p
        })
    }

    /// `home`'s program (empty if it has none) and the others that write something.
    pub fn split(mut self, home: Shard) -> (Program, Vec<(Shard, Program)>) {
        let main = self.by.remove(&home).unwrap_or_default();
        (main, self.by.into_iter().filter(|(_, p)| !p.keys.is_empty()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_declared_once_and_named_by_index() {
        let mut p = Program::new();
        p.op("feq").key("a".into()).arg("v").arg(3);
        p.op("hdel").key("b".into()).arg("x");
        p.op("hincr").key("a".into()).arg("rev");
        assert_eq!(p.keys(), ["a", "b"]);
        let args: Vec<String> = p.args().iter().map(|a| String::from_utf8(a.clone()).unwrap()).collect();
        assert_eq!(args, ["feq", "1", "v", "3", "hdel", "2", "x", "hincr", "1", "rev"]);
    }

    #[test]
    fn a_relayed_program_runs_once_first_with_its_keys_where_they_were() {
        let mut p = Program::new();
        p.op("hdel").key("a".into()).arg("x");
        let r = Program::relay(&p.to_json(), "rel".into(), 3, "1-0").unwrap();
        assert_eq!(r.keys(), ["a", "rel"]);
        let args: Vec<String> = r.args().iter().map(|a| String::from_utf8(a.clone()).unwrap()).collect();
        assert_eq!(args, ["once", "2", "3", "1-0", "hdel", "1", "x"]);
    }
}

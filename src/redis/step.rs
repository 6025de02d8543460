//! A program for `commit.lua` or `read.lua`: opcodes with their arguments,
//! where key arguments name an entry of KEYS (declared, so the scripts stay
//! valid on a Redis Cluster once the keys of one step share a slot).

use std::collections::HashMap;

#[derive(Debug, Default)]
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
}

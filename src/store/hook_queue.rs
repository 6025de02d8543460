//! The embedded store's webhook queue: what a Redis stream with one consumer
//! group per receiver gives many nodes (`crate::webhooks`), for one node,
//! in memory. Entries leave once every receiver group has taken them.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{DeadHook, HookEntry};

/// Dead letters kept; past it the oldest go.
pub const MAX_DEAD: usize = 10_000;

#[derive(Default)]
struct Group {
    /// The last entry handed out.
    last: u64,
    /// Handed out and not acked yet.
    pending: BTreeSet<u64>,
}

#[derive(Default)]
pub struct HookQueue {
    next: u64,
    entries: BTreeMap<u64, HookEntry>,
    groups: HashMap<String, Group>,
    dead: BTreeMap<u64, (HookEntry, DeadHook)>,
    /// Entries dropped past the backlog bound.
    pub dropped: u64,
}

impl HookQueue {
    pub fn push(&mut self, subject: &str, body: &str, only: Option<String>, max_backlog: usize) {
        self.next += 1;
        let id = self.next;
        self.entries.insert(id, HookEntry { id: id.to_string(), subject: subject.to_owned(), body: body.to_owned(), only });
        while self.entries.len() > max_backlog {
            self.entries.pop_first();
            self.dropped += 1;
        }
    }

    pub fn read(&mut self, group: &str, count: usize, take_over: bool) -> Vec<HookEntry> {
        let g = self.groups.entry(group.to_owned()).or_default();
        let ids: Vec<u64> = if take_over {
            g.pending.iter().take(count).copied().collect()
        } else {
            let ids: Vec<u64> = self.entries.range(g.last + 1..).take(count).map(|(id, _)| *id).collect();
            if let Some(last) = ids.last() {
                g.last = *last;
            }
            g.pending.extend(&ids);
            ids
        };
        // Pending entries dropped past the backlog bound are gone for good.
        let last = g.last;
        g.pending.retain(|id| self.entries.contains_key(id) || *id > last);
        ids.iter().filter_map(|id| self.entries.get(id).cloned()).collect()
    }

    pub fn ack(&mut self, group: &str, ids: &[String]) {
        if let Some(g) = self.groups.get_mut(group) {
            for id in ids.iter().filter_map(|i| i.parse::<u64>().ok()) {
                g.pending.remove(&id);
            }
        }
    }

    pub fn bury(&mut self, group: &str, url: &str, e: &HookEntry, error: &str, attempts: u32, now: DateTime<Utc>) {
        self.ack(group, std::slice::from_ref(&e.id));
        self.next += 1;
        let webhook = serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null);
        let dead = DeadHook { id: self.next.to_string(), url: url.to_owned(), attempts, error: error.to_owned(), dead_at: now.to_rfc3339_opts(SecondsFormat::Millis, true), webhook };
        let mut kept = e.clone();
        kept.only = Some(group.to_owned());
        self.dead.insert(self.next, (kept, dead));
        while self.dead.len() > MAX_DEAD {
            self.dead.pop_first();
        }
    }

    /// Drops the entries every group in `groups` has taken.
    pub fn trim(&mut self, groups: &[String]) {
        let keep_from = groups
            .iter()
            .map(|name| self.groups.get(name).map_or(0, |g| g.pending.first().copied().unwrap_or(g.last + 1)))
            .min()
            .unwrap_or(0);
        while self.entries.first_key_value().is_some_and(|(id, _)| *id < keep_from) {
            self.entries.pop_first();
        }
    }

    pub fn dead(&self, limit: usize) -> Vec<DeadHook> {
        self.dead.values().rev().take(limit).map(|(_, d)| d.clone()).collect()
    }

    pub fn replay(&mut self, id: &str, max_backlog: usize) -> bool {
        let Some((e, _)) = id.parse::<u64>().ok().and_then(|id| self.dead.remove(&id)) else { return false };
        self.push(&e.subject, &e.body, e.only, max_backlog);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_reads_everything_once_and_entries_go_when_all_took_them() {
        let mut q = HookQueue::default();
        q.push("a", "1", None, 10);
        q.push("a", "2", None, 10);
        let g1 = q.read("g1", 10, false);
        assert_eq!(g1.len(), 2);
        assert!(q.read("g1", 10, false).is_empty());
        assert_eq!(q.read("g1", 10, true).len(), 2, "not acked: taken over again");
        q.ack("g1", &["1".into(), "2".into()]);
        assert!(q.read("g1", 10, true).is_empty());
        q.trim(&["g1".into(), "g2".into()]);
        assert_eq!(q.read("g2", 10, false).len(), 2, "g2 has not taken them yet");
        q.ack("g2", &["1".into(), "2".into()]);
        q.trim(&["g1".into(), "g2".into()]);
        assert!(q.entries.is_empty());
    }

    #[test]
    fn a_replayed_dead_letter_is_for_its_group_only() {
        let mut q = HookQueue::default();
        q.push("a", "{}", None, 10);
        let e = q.read("g1", 1, false).remove(0);
        q.bury("g1", "http://x", &e, "500", 8, Utc::now());
        let d = q.dead(10);
        assert_eq!(d.len(), 1);
        assert!(q.replay(&d[0].id, 10));
        assert!(!q.replay(&d[0].id, 10));
        let again = q.read("g1", 10, false);
        assert_eq!(again[0].only.as_deref(), Some("g1"));
    }
}

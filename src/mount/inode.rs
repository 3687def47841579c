//! Inode numbers for nodes, with the kernel's lookup counts.
//!
//! A node keeps its number while the kernel holds a reference to it (lookups not yet
//! forgotten), so the same path always has the same inode while it is in use; once forgotten,
//! the number is released and the path gets a fresh one next time. Identity lives here; stat
//! data (sizes, times) is cached elsewhere with its own expiry.
//!
//! The table is bounded by what the kernel holds: a number handed out without a lookup count
//! (a plain `readdir` entry, a listing's snapshot) is kept only among the last
//! [`UNREFERENCED_KEPT`] such numbers, so a `find` over a registry of a million tags does not
//! grow the daemon forever. The kernel never uses such a number to ask for the node (it looks
//! the name up), and an entry READDIRPLUS hands to the kernel is counted by its node
//! ([`InodeTable::add_lookup_of`]), so it is back even if it was reclaimed in between.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::tree::Node;

pub const ROOT_INO: u64 = 1;

/// Most inodes kept without a kernel reference; older ones are reclaimed first.
pub const UNREFERENCED_KEPT: usize = 8192;

#[derive(Debug)]
struct Entry {
    node: Node,
    lookups: u64,
}

#[derive(Debug)]
struct Table {
    by_ino: HashMap<u64, Entry>,
    by_node: HashMap<Node, u64>,
    next: u64,
    /// Inodes allocated without a lookup count, oldest first (some may since have been
    /// looked up or removed: those are skipped when reclaiming).
    unreferenced: VecDeque<u64>,
}

/// The inode table; all methods take `&self`.
#[derive(Debug)]
pub struct InodeTable {
    inner: Mutex<Table>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut by_ino = HashMap::new();
        let mut by_node = HashMap::new();
        by_ino.insert(
            ROOT_INO,
            Entry {
                node: Node::Root,
                lookups: 1,
            },
        );
        by_node.insert(Node::Root, ROOT_INO);
        InodeTable {
            inner: Mutex::new(Table {
                by_ino,
                by_node,
                next: ROOT_INO + 1,
                unreferenced: VecDeque::new(),
            }),
        }
    }
}

impl InodeTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the maps inconsistent (each update is a
        // pair of inserts or removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node behind an inode number.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.lock().by_ino.get(&ino).map(|e| e.node.clone())
    }

    /// The inode of `node`, counting one kernel lookup (allocated if new).
    pub fn lookup(&self, node: &Node) -> u64 {
        self.get_or_insert(node, 1)
    }

    /// The inode of `node` for a listing without READDIRPLUS (no lookup counted): an existing
    /// number, or a fresh one that stays until looked up and forgotten.
    pub fn peek(&self, node: &Node) -> u64 {
        self.get_or_insert(node, 0)
    }

    /// [`InodeTable::peek`] for many nodes under one lock (a listing of thousands).
    pub fn peek_all(&self, nodes: &[Node]) -> Vec<u64> {
        let mut t = self.lock();
        nodes.iter().map(|n| t.get_or_insert(n, 0)).collect()
    }

    fn get_or_insert(&self, node: &Node, lookups: u64) -> u64 {
        self.lock().get_or_insert(node, lookups)
    }

    /// Counts one more kernel reference to an existing inode.
    pub fn add_lookup(&self, ino: u64) {
        if let Some(e) = self.lock().by_ino.get_mut(&ino) {
            e.lookups += 1;
        }
    }

    /// Counts one more kernel reference to inode `ino` of `node` (an entry READDIRPLUS handed
    /// to the kernel). Were the number reclaimed since the listing gave it out, it is taken
    /// again for `node`: the kernel now holds it.
    pub fn add_lookup_of(&self, ino: u64, node: &Node) {
        let mut t = self.lock();
        if let Some(e) = t.by_ino.get_mut(&ino) {
            e.lookups += 1;
            return;
        }
        if ino == ROOT_INO || ino >= t.next {
            return;
        }
        t.by_node.entry(node.clone()).or_insert(ino);
        t.by_ino.insert(
            ino,
            Entry {
                node: node.clone(),
                lookups: 1,
            },
        );
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.lock();
        let gone = match t.by_ino.get_mut(&ino) {
            Some(e) => {
                e.lookups = e.lookups.saturating_sub(n);
                e.lookups == 0
            }
            None => false,
        };
        if gone {
            t.remove(ino);
        }
    }

    /// Number of inodes held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Drops `ino`; its node's number too, unless the node has another one by now.
    fn remove(&mut self, ino: u64) {
        if let Some(e) = self.by_ino.remove(&ino) {
            if self.by_node.get(&e.node) == Some(&ino) {
                self.by_node.remove(&e.node);
            }
        }
    }

    /// Reclaims the oldest inodes without a kernel reference beyond [`UNREFERENCED_KEPT`].
    fn reclaim(&mut self) {
        while self.unreferenced.len() > UNREFERENCED_KEPT {
            let Some(ino) = self.unreferenced.pop_front() else {
                break;
            };
            if self.by_ino.get(&ino).is_some_and(|e| e.lookups == 0) {
                self.remove(ino);
            }
        }
    }

    fn get_or_insert(&mut self, node: &Node, lookups: u64) -> u64 {
        if let Some(&ino) = self.by_node.get(node) {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.lookups += lookups;
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_node.insert(node.clone(), ino);
        self.by_ino.insert(
            ino,
            Entry {
                node: node.clone(),
                lookups,
            },
        );
        if lookups == 0 {
            self.unreferenced.push_back(ino);
            self.reclaim();
        }
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_node_same_inode_until_forgotten() {
        let t = InodeTable::default();
        let a = t.lookup(&Node::Images);
        assert_eq!(t.lookup(&Node::Images), a);
        assert_eq!(t.node(a), Some(Node::Images));
        t.forget(a, 1);
        assert_eq!(t.node(a), Some(Node::Images), "one reference left");
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        let b = t.lookup(&Node::Images);
        assert_ne!(a, b, "numbers are not reused");
        t.forget(ROOT_INO, 10);
        assert_eq!(t.node(ROOT_INO), Some(Node::Root));
    }

    fn tag(i: usize) -> Node {
        let repo: crate::names::RepoRef = crate::names::RepoRef::parse_full("library/big").unwrap();
        Node::Tag(repo, format!("t{i}").parse().unwrap())
    }

    /// Issue 17 item 7: listings of many more names than are kept leave the table bounded;
    /// what the kernel holds stays, and forgetting it frees it.
    #[test]
    fn inodes_without_a_kernel_reference_are_reclaimed() {
        let t = InodeTable::default();
        let held = t.lookup(&tag(0));
        let nodes: Vec<Node> = (1..=3 * UNREFERENCED_KEPT).map(tag).collect();
        let inos = t.peek_all(&nodes);
        let newest: Vec<u64> = (0..3 * UNREFERENCED_KEPT)
            .map(|i| t.peek(&tag(100_000 + i)))
            .collect();
        assert!(
            t.len() <= UNREFERENCED_KEPT + 2,
            "{} inodes after listing {} names",
            t.len(),
            6 * UNREFERENCED_KEPT
        );
        assert_eq!(t.node(held), Some(tag(0)), "a looked-up inode stays");
        assert_eq!(t.node(inos[0]), None, "the oldest unreferenced one is gone");
        // The newest are still there, with their numbers.
        let last = newest.len() - 1;
        assert_eq!(t.peek(&tag(100_000 + last)), newest[last]);
        // READDIRPLUS handed a reclaimed number to the kernel: it is its node's again.
        t.add_lookup_of(inos[0], &nodes[0]);
        assert_eq!(t.node(inos[0]), Some(nodes[0].clone()));
        assert_eq!(
            t.lookup(&nodes[0]),
            inos[0],
            "the same number for the same node"
        );
        for i in 0..5 * UNREFERENCED_KEPT {
            t.peek(&tag(900_000 + i));
        }
        assert_eq!(
            t.node(inos[0]),
            Some(nodes[0].clone()),
            "held by the kernel"
        );
        // Forgetting frees it.
        t.forget(inos[0], 2);
        assert_eq!(t.node(inos[0]), None);
        t.forget(held, 1);
        assert_eq!(t.node(held), None);
        assert!(t.len() <= UNREFERENCED_KEPT + 2, "{}", t.len());
    }
}

//! Inode numbers for nodes, with the kernel's lookup counts.
//!
//! A node keeps its number while the kernel holds a reference to it (lookups not yet
//! forgotten), so the same path always has the same inode while it is in use; once forgotten,
//! the number is released and the path gets a fresh one next time. Identity lives here; stat
//! data (sizes, times) is cached elsewhere with its own expiry.

use std::collections::HashMap;
use std::sync::Mutex;

use super::tree::Node;

pub const ROOT_INO: u64 = 1;

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
            if let Some(e) = t.by_ino.remove(&ino) {
                t.by_node.remove(&e.node);
            }
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
}

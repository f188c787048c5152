//! An Ethereum Merkle-Patricia trie kept in memory between blocks, for the standard-pipeline
//! baseline: each node keeps its encoding, so a block's root re-hashes only the paths its
//! changed keys lie on, as a node with an incremental state root does. Without it the
//! baseline would re-hash every account at every block, which at 10 M accounts is a strawman.
//!
//! Node encoding is alloy-trie's ([`LeafNodeRef`], [`ExtensionNodeRef`], [`BranchNodeRef`]);
//! tests check the roots against alloy-trie's `HashBuilder` over the same entries.

use alloy_primitives::{B256, keccak256};
use alloy_trie::{
    EMPTY_ROOT_HASH, Nibbles, TrieMask,
    nodes::{BranchNodeRef, ExtensionNodeRef, LeafNodeRef, RlpNode},
};

/// A trie over 32-byte keys (already hashed, as Ethereum's secure tries use them).
#[derive(Debug, Default)]
pub struct Trie {
    root: Option<Box<Slot>>,
    len: usize,
}

#[derive(Debug)]
struct Slot {
    node: Node,
    /// The node's encoding reference (`rlp(node)` or its hash) once computed; `None` when the
    /// node or something below it changed since.
    rlp: Option<RlpNode>,
}

#[derive(Debug)]
enum Node {
    /// The rest of the key (nibbles) and the value.
    Leaf(Vec<u8>, Vec<u8>),
    /// A shared run of nibbles and the branch below it.
    Extension(Vec<u8>, Box<Slot>),
    /// One child per nibble (keys all have the same length, so a branch holds no value).
    Branch(Box<[Option<Box<Slot>>; 16]>),
}

fn slot(node: Node) -> Box<Slot> {
    Box::new(Slot { node, rlp: None })
}

fn nibbles(key: &B256) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, byte) in key.iter().enumerate() {
        out[2 * i] = byte >> 4;
        out[2 * i + 1] = byte & 0x0f;
    }
    out
}

fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Trie {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `key` to `value` (an RLP encoding; must not be empty).
    pub fn insert(&mut self, key: &B256, value: Vec<u8>) {
        debug_assert!(!value.is_empty());
        let path = nibbles(key);
        let mut added = false;
        self.root = Some(insert(self.root.take(), &path, value, &mut added));
        self.len += usize::from(added);
    }

    /// Removes `key`; nothing changes if it is absent.
    pub fn remove(&mut self, key: &B256) {
        let path = nibbles(key);
        let mut removed = false;
        if let Some(root) = self.root.take() {
            self.root = remove(root, &path, &mut removed);
        }
        self.len -= usize::from(removed);
    }

    /// The root hash, re-hashing only the nodes changed since the last call.
    pub fn root(&mut self) -> B256 {
        let Some(root) = &mut self.root else { return EMPTY_ROOT_HASH };
        let mut buf = Vec::with_capacity(600);
        let rlp = encode(root, &mut buf);
        rlp.as_hash().unwrap_or_else(|| keccak256(rlp.as_ref()))
    }
}

fn insert(at: Option<Box<Slot>>, path: &[u8], value: Vec<u8>, added: &mut bool) -> Box<Slot> {
    let Some(mut at) = at else {
        *added = true;
        return slot(Node::Leaf(path.to_vec(), value));
    };
    at.rlp = None;
    let node = std::mem::replace(&mut at.node, Node::Leaf(Vec::new(), Vec::new()));
    at.node = match node {
        Node::Leaf(rest, old) => {
            if rest == path {
                Node::Leaf(rest, value)
            } else {
                *added = true;
                let c = common(&rest, path);
                let mut children: Box<[Option<Box<Slot>>; 16]> = Box::default();
                children[rest[c] as usize] = Some(slot(Node::Leaf(rest[c + 1..].to_vec(), old)));
                children[path[c] as usize] = Some(slot(Node::Leaf(path[c + 1..].to_vec(), value)));
                wrap(&path[..c], Node::Branch(children))
            }
        }
        Node::Extension(shared, child) => {
            let c = common(&shared, path);
            if c == shared.len() {
                Node::Extension(shared, insert(Some(child), &path[c..], value, added))
            } else {
                *added = true;
                let mut children: Box<[Option<Box<Slot>>; 16]> = Box::default();
                let below = if c + 1 == shared.len() {
                    child
                } else {
                    slot(Node::Extension(shared[c + 1..].to_vec(), child))
                };
                children[shared[c] as usize] = Some(below);
                children[path[c] as usize] = Some(slot(Node::Leaf(path[c + 1..].to_vec(), value)));
                wrap(&path[..c], Node::Branch(children))
            }
        }
        Node::Branch(mut children) => {
            let i = path[0] as usize;
            children[i] = Some(insert(children[i].take(), &path[1..], value, added));
            Node::Branch(children)
        }
    };
    at
}

/// `node` under an extension of `shared` nibbles, or `node` itself when there are none.
fn wrap(shared: &[u8], node: Node) -> Node {
    if shared.is_empty() { node } else { Node::Extension(shared.to_vec(), slot(node)) }
}

/// `node` with `prefix` put in front of its path (what is left when a branch above it goes).
fn prefixed(prefix: &[u8], mut at: Box<Slot>) -> Box<Slot> {
    at.rlp = None;
    let node = std::mem::replace(&mut at.node, Node::Leaf(Vec::new(), Vec::new()));
    at.node = match node {
        Node::Leaf(rest, value) => Node::Leaf([prefix, &rest].concat(), value),
        Node::Extension(shared, child) => Node::Extension([prefix, &shared].concat(), child),
        branch @ Node::Branch(_) => Node::Extension(prefix.to_vec(), slot(branch)),
    };
    at
}

fn remove(mut at: Box<Slot>, path: &[u8], removed: &mut bool) -> Option<Box<Slot>> {
    match &mut at.node {
        Node::Leaf(rest, _) => {
            if rest.as_slice() == path {
                *removed = true;
                return None;
            }
            Some(at)
        }
        Node::Extension(shared, _) => {
            if !path.starts_with(shared) {
                return Some(at);
            }
            let n = shared.len();
            let Node::Extension(shared, child) =
                std::mem::replace(&mut at.node, Node::Leaf(Vec::new(), Vec::new()))
            else {
                unreachable!()
            };
            let child = remove(child, &path[n..], removed);
            if !*removed {
                at.node = Node::Extension(shared, child.expect("an unchanged child stays"));
                return Some(at);
            }
            // A branch below an extension has two or more children before a removal, so at
            // least one after it.
            child.map(|c| prefixed(&shared, c))
        }
        Node::Branch(children) => {
            let i = path[0] as usize;
            let Some(child) = children[i].take() else { return Some(at) };
            children[i] = remove(child, &path[1..], removed);
            if !*removed {
                return Some(at);
            }
            at.rlp = None;
            let (first, second) = {
                let mut left = (0..16).filter(|j| children[*j].is_some());
                (left.next(), left.next())
            };
            match (first, second) {
                (None, _) => None,
                (Some(only), None) => {
                    let child = children[only].take().expect("present");
                    Some(prefixed(&[only as u8], child))
                }
                _ => Some(at),
            }
        }
    }
}

/// The node's encoding reference, computing those below it that changed.
fn encode(at: &mut Slot, buf: &mut Vec<u8>) -> RlpNode {
    if let Some(rlp) = &at.rlp {
        return rlp.clone();
    }
    let rlp = match &mut at.node {
        Node::Leaf(rest, value) => {
            let key = Nibbles::from_nibbles_unchecked(rest);
            buf.clear();
            LeafNodeRef::new(&key, value).rlp(buf)
        }
        Node::Extension(shared, child) => {
            let child = encode(child, buf);
            let key = Nibbles::from_nibbles_unchecked(shared);
            buf.clear();
            ExtensionNodeRef::new(&key, &child).rlp(buf)
        }
        Node::Branch(children) => {
            let mut stack = Vec::with_capacity(16);
            let mut mask = TrieMask::default();
            for (i, child) in children.iter_mut().enumerate() {
                if let Some(child) = child {
                    stack.push(encode(child, buf));
                    mask.set_bit(i as u8);
                }
            }
            buf.clear();
            BranchNodeRef::new(&stack, mask).rlp(buf)
        }
    };
    at.rlp = Some(rlp.clone());
    rlp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use alloy_primitives::U256;

    use super::*;

    fn reference(entries: &BTreeMap<B256, Vec<u8>>) -> B256 {
        let mut hb = alloy_trie::HashBuilder::default();
        for (key, value) in entries {
            hb.add_leaf(Nibbles::unpack(key), value);
        }
        hb.root()
    }

    /// Random inserts, updates and removals (keys sharing long prefixes included), with the
    /// root checked against alloy-trie's after every step of a batch and across batches.
    #[test]
    fn roots_match_alloy_trie_through_inserts_updates_and_removals() {
        let mut trie = Trie::new();
        let mut model = BTreeMap::new();
        assert_eq!(trie.root(), EMPTY_ROOT_HASH);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..300 {
            for _ in 0..(next() % 20) {
                // Keys from a small set, with shared prefixes, so that updates, removals of
                // present keys and branch collapses all happen.
                let mut key = B256::ZERO;
                key[0] = (next() % 3) as u8;
                key[1] = (next() % 4) as u8 * 0x11;
                key[31] = (next() % 8) as u8;
                if next() % 3 == 0 {
                    trie.remove(&key);
                    model.remove(&key);
                } else {
                    let value = alloy_rlp::encode(U256::from(next() % 1000 + 1));
                    trie.insert(&key, value.clone());
                    model.insert(key, value);
                }
            }
            if round % 2 == 0 {
                assert_eq!(trie.root(), reference(&model), "round {round}");
            }
            assert_eq!(trie.len(), model.len());
        }
        for key in model.keys().copied().collect::<Vec<_>>() {
            trie.remove(&key);
            model.remove(&key);
            assert_eq!(trie.root(), reference(&model));
        }
        assert!(trie.is_empty());
    }

    #[test]
    fn random_keys_match_alloy_trie() {
        let mut trie = Trie::new();
        let mut model = BTreeMap::new();
        for i in 0..2000u64 {
            let key = keccak256(i.to_be_bytes());
            let value = alloy_rlp::encode(U256::from(i + 1));
            trie.insert(&key, value.clone());
            model.insert(key, value);
        }
        assert_eq!(trie.root(), reference(&model));
        for i in (0..2000u64).step_by(3) {
            let key = keccak256(i.to_be_bytes());
            trie.remove(&key);
            model.remove(&key);
        }
        trie.remove(&keccak256(b"absent"));
        assert_eq!(trie.root(), reference(&model));
    }
}

//! The transaction pool: stateful admission checks, and selection for the next mini-block by
//! effective tip across senders and by nonce within a sender.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, hash_map::Entry},
    sync::Arc,
};

use alloy_consensus::Transaction;
use alloy_primitives::{Address, B256, U256};
use memstate::MemState;
use parking_lot::Mutex;

use crate::{
    config::PoolConfig,
    tx::{PooledTx, TxError},
};

struct Pending {
    tx: Arc<PooledTx>,
    seq: u64,
}

struct SenderTxs {
    /// The nonce the sender's next executable transaction must carry.
    next_nonce: u64,
    txs: BTreeMap<u64, Pending>,
}

#[derive(Default)]
struct Inner {
    senders: HashMap<Address, SenderTxs>,
    by_hash: HashMap<B256, Arc<PooledTx>>,
    seq: u64,
}

/// Pending transactions. Intake inserts under a short lock; the builder selects and then
/// removes what it included, so a transaction stays findable until its receipt exists.
pub struct Pool {
    config: PoolConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("len", &self.len()).finish()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Self {
        Self { config, inner: Mutex::new(Inner::default()) }
    }

    /// Number of transactions waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().by_hash.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A waiting transaction by hash.
    pub fn get(&self, hash: &B256) -> Option<Arc<PooledTx>> {
        self.inner.lock().by_hash.get(hash).cloned()
    }

    /// The nonce the sender's next transaction would take, counting those waiting in order.
    pub fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let inner = self.inner.lock();
        let mut next = state_nonce;
        if let Some(s) = inner.senders.get(sender) {
            while s.txs.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// Admits a transaction after the checks that need state: nonce window, balance, EOA
    /// sender, fee cap against the base fee, duplicates and replacement price.
    pub fn insert(
        &self,
        tx: Arc<PooledTx>,
        state: &MemState,
        base_fee: u64,
    ) -> Result<B256, TxError> {
        let sender = tx.sender;
        let account = state.account(&sender).unwrap_or(memstate::AccountData {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: memstate::KECCAK_EMPTY,
        });
        let nonce = tx.nonce();
        if nonce < account.nonce {
            return Err(TxError::NonceTooLow { next: account.nonce, nonce });
        }
        if nonce > account.nonce.saturating_add(self.config.max_nonce_gap) {
            return Err(TxError::NonceTooHigh {
                next: account.nonce,
                nonce,
                max_gap: self.config.max_nonce_gap,
            });
        }
        if account.code_hash != memstate::KECCAK_EMPTY {
            let delegated =
                state.code_by_hash(&account.code_hash).is_some_and(|code| code.is_eip7702());
            if !delegated {
                return Err(TxError::SenderNotEoa { sender, code_hash: account.code_hash });
            }
        }
        let fee_cap = tx.envelope.max_fee_per_gas();
        if fee_cap < u128::from(base_fee) {
            return Err(TxError::FeeCapTooLow { sender, fee_cap, base_fee });
        }
        let want = tx.max_cost();
        if account.balance < want {
            return Err(TxError::InsufficientFunds { sender, have: account.balance, want });
        }

        let mut inner = self.inner.lock();
        if inner.by_hash.contains_key(&tx.hash) {
            return Err(TxError::AlreadyKnown);
        }
        let full = inner.by_hash.len() >= self.config.capacity;
        let seq = inner.seq;
        inner.seq += 1;
        let bump = self.config.price_bump_percent;
        let Inner { senders, by_hash, .. } = &mut *inner;
        let queue = match senders.entry(sender) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if full {
                    return Err(TxError::PoolFull);
                }
                e.insert(SenderTxs { next_nonce: account.nonce, txs: BTreeMap::new() })
            }
        };
        // The state may have moved on since this sender's queue was made.
        queue.next_nonce = queue.next_nonce.max(account.nonce);
        match queue.txs.entry(nonce) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let old = &e.get().tx.envelope;
                let needed = |v: u128| v.saturating_mul(100 + u128::from(bump)) / 100;
                let new_tip = tx.envelope.max_priority_fee_per_gas().unwrap_or(fee_cap);
                let old_tip = old.max_priority_fee_per_gas().unwrap_or(old.max_fee_per_gas());
                if fee_cap < needed(old.max_fee_per_gas()) || new_tip < needed(old_tip) {
                    return Err(TxError::ReplacementUnderpriced);
                }
                by_hash.remove(&e.get().tx.hash);
                e.insert(Pending { tx: tx.clone(), seq });
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                if full {
                    return Err(TxError::PoolFull);
                }
                e.insert(Pending { tx: tx.clone(), seq });
            }
        }
        by_hash.insert(tx.hash, tx.clone());
        Ok(tx.hash)
    }

    /// True if `tx` belongs to the priority lane: its sender or target is listed, or its tip
    /// reaches `pool.priority_min_tip`.
    pub fn is_priority(&self, tx: &PooledTx, base_fee: u64) -> bool {
        let c = &self.config;
        c.priority_senders.contains(&tx.sender)
            || tx.envelope.to().is_some_and(|to| c.priority_targets.contains(&to))
            || (c.priority_min_tip > 0
                && tx.effective_tip(base_fee) >= u128::from(c.priority_min_tip))
    }

    /// The best executable transactions for the next mini-block: the priority lane first
    /// ([`Pool::is_priority`]), then the rest; within a lane, highest effective tip first
    /// (earliest arrival among equals); each sender's in nonce order (so a priority
    /// transaction waits behind its sender's earlier ones), within `gas` and `max`. They stay
    /// in the pool until [`Pool::remove`] is called for them.
    pub fn select(&self, base_fee: u64, mut gas: u64, max: usize) -> Vec<Arc<PooledTx>> {
        let inner = self.inner.lock();
        let rank = |tx: &PooledTx| (self.is_priority(tx, base_fee), tx.effective_tip(base_fee));
        let mut heap = BinaryHeap::new();
        for (sender, queue) in &inner.senders {
            if let Some(first) = queue.txs.get(&queue.next_nonce) {
                heap.push((rank(&first.tx), Reverse(first.seq), *sender, queue.next_nonce));
            }
        }
        let mut picked = Vec::new();
        while let Some((_, _, sender, mut nonce)) = heap.pop() {
            let queue = &inner.senders[&sender];
            // Take this sender's run while it stays the best candidate.
            while let Some(p) = queue.txs.get(&nonce) {
                if picked.len() >= max {
                    return picked;
                }
                if p.tx.envelope.max_fee_per_gas() < u128::from(base_fee) || p.tx.gas_limit() > gas
                {
                    break;
                }
                gas -= p.tx.gas_limit();
                picked.push(p.tx.clone());
                nonce += 1;
                if let Some(next) = queue.txs.get(&nonce) {
                    let next_rank = rank(&next.tx);
                    if heap.peek().is_some_and(|top| top.0 > next_rank) {
                        heap.push((next_rank, Reverse(next.seq), sender, nonce));
                        break;
                    }
                }
            }
        }
        picked
    }

    /// Removes transactions that were executed (`included`, advancing their senders' nonces)
    /// or found invalid at execution (`dropped`).
    pub fn remove(&self, included: &[Arc<PooledTx>], dropped: &[Arc<PooledTx>]) {
        let mut inner = self.inner.lock();
        let Inner { senders, by_hash, .. } = &mut *inner;
        for tx in included {
            if let Some(queue) = senders.get_mut(&tx.sender) {
                queue.next_nonce = queue.next_nonce.max(tx.nonce() + 1);
            }
        }
        for tx in included.iter().chain(dropped) {
            by_hash.remove(&tx.hash);
            let Entry::Occupied(mut e) = senders.entry(tx.sender) else { continue };
            let queue = e.get_mut();
            if queue.txs.get(&tx.nonce()).is_some_and(|p| p.tx.hash == tx.hash) {
                queue.txs.remove(&tx.nonce());
            }
            // Anything below the next nonce can never execute now (a replacement that raced
            // its original's execution).
            while let Some(entry) = queue.txs.first_entry() {
                if *entry.key() >= queue.next_nonce {
                    break;
                }
                by_hash.remove(&entry.remove().tx.hash);
            }
            if queue.txs.is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy_consensus::TxEip1559;
    use alloy_primitives::{Bytes, TxKind};
    use memstate::{GenesisAccount, MemState};

    use super::*;
    use crate::tx::{
        decode_and_check,
        tests::{rules, signed},
    };

    fn tx(key: usize, nonce: u64, fee: u128, tip: u128) -> Arc<PooledTx> {
        let raw = signed(
            key,
            TxEip1559 {
                chain_id: 31337,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: fee,
                max_priority_fee_per_gas: tip,
                to: TxKind::Call(Address::repeat_byte(9)),
                value: U256::from(nonce),
                access_list: Default::default(),
                input: Bytes::new(),
            },
        );
        Arc::new(decode_and_check(raw, &rules()).unwrap())
    }

    fn state() -> MemState {
        let alloc = crate::dev::DEV_ACCOUNTS
            .iter()
            .map(|(a, _)| {
                (*a, GenesisAccount { balance: U256::from(10u64.pow(18)), ..Default::default() })
            })
            .collect();
        MemState::from_genesis(&alloc)
    }

    #[test]
    fn selects_by_tip_across_senders_and_by_nonce_within_one() {
        let pool = Pool::new(PoolConfig::default());
        let state = state();
        // Sender 0: a cheap nonce 0 then an expensive nonce 1; sender 1: a medium one.
        for t in [tx(0, 1, 100, 50), tx(0, 0, 100, 1), tx(1, 0, 100, 10), tx(2, 0, 100, 30)] {
            pool.insert(t, &state, 10).unwrap();
        }
        let picked = pool.select(10, u64::MAX, 100);
        let order: Vec<(Address, u64)> = picked.iter().map(|t| (t.sender, t.nonce())).collect();
        let a = |k: usize| crate::dev::DEV_ACCOUNTS[k].0;
        assert_eq!(order, vec![(a(2), 0), (a(1), 0), (a(0), 0), (a(0), 1)]);
        // The gas budget stops selection; a count limit too.
        assert_eq!(pool.select(10, 50_000, 100).len(), 2);
        assert_eq!(pool.select(10, u64::MAX, 1).len(), 1);
    }

    #[test]
    fn the_priority_lane_goes_first() {
        let a = |k: usize| crate::dev::DEV_ACCOUNTS[k].0;
        // Sender 3 is critical; every transaction to 0x09.. is not, unless listed.
        let config = PoolConfig { priority_senders: vec![a(3)], ..Default::default() };
        let pool = Pool::new(config);
        let state = state();
        for t in [tx(0, 0, 100, 50), tx(3, 0, 100, 1), tx(3, 1, 100, 1), tx(1, 0, 100, 30)] {
            pool.insert(t, &state, 10).unwrap();
        }
        let order: Vec<(Address, u64)> =
            pool.select(10, u64::MAX, 100).iter().map(|t| (t.sender, t.nonce())).collect();
        assert_eq!(order, vec![(a(3), 0), (a(3), 1), (a(0), 0), (a(1), 0)]);

        // By target and by tip.
        let by_target = Pool::new(PoolConfig {
            priority_targets: vec![Address::repeat_byte(9)],
            ..Default::default()
        });
        assert!(by_target.is_priority(&tx(0, 0, 100, 1), 10));
        let by_tip = Pool::new(PoolConfig { priority_min_tip: 40, ..Default::default() });
        assert!(by_tip.is_priority(&tx(0, 0, 100, 50), 10));
        assert!(!by_tip.is_priority(&tx(0, 0, 100, 30), 10));
    }

    #[test]
    fn gaps_wait_and_removal_advances_the_sender() {
        let pool = Pool::new(PoolConfig::default());
        let state = state();
        let (first, third) = (tx(0, 0, 100, 1), tx(0, 2, 100, 1));
        pool.insert(first.clone(), &state, 10).unwrap();
        pool.insert(third.clone(), &state, 10).unwrap();
        assert_eq!(pool.select(10, u64::MAX, 100).len(), 1, "nonce 2 waits behind the gap");
        assert_eq!(pool.pending_nonce(&first.sender, 0), 1);
        pool.remove(std::slice::from_ref(&first), &[]);
        assert_eq!(pool.len(), 1);
        assert!(pool.select(10, u64::MAX, 100).is_empty());
        pool.insert(tx(0, 1, 100, 1), &state, 10).unwrap();
        assert_eq!(pool.select(10, u64::MAX, 100).len(), 2);
        assert_eq!(pool.pending_nonce(&first.sender, 1), 3);
    }

    #[test]
    fn replacement_needs_the_bump_and_duplicates_are_known() {
        let pool = Pool::new(PoolConfig::default());
        let state = state();
        let original = tx(0, 0, 100, 10);
        pool.insert(original.clone(), &state, 10).unwrap();
        assert_eq!(pool.insert(original, &state, 10), Err(TxError::AlreadyKnown));
        assert_eq!(
            pool.insert(tx(0, 0, 109, 11), &state, 10),
            Err(TxError::ReplacementUnderpriced)
        );
        let better = tx(0, 0, 110, 11);
        pool.insert(better.clone(), &state, 10).unwrap();
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.select(10, u64::MAX, 10)[0].hash, better.hash);
    }

    #[test]
    fn stateful_checks_use_the_state() {
        let pool = Pool::new(PoolConfig { max_nonce_gap: 2, capacity: 2, ..Default::default() });
        let state = state();
        assert!(matches!(
            pool.insert(tx(0, 3, 100, 1), &state, 10),
            Err(TxError::NonceTooHigh { .. })
        ));
        assert!(matches!(
            pool.insert(tx(0, 0, 5, 1), &state, 10),
            Err(TxError::FeeCapTooLow { .. })
        ));
        let rich = tx(0, 0, 10u128.pow(15), 1);
        assert!(matches!(pool.insert(rich, &state, 10), Err(TxError::InsufficientFunds { .. })));
        pool.insert(tx(0, 0, 100, 1), &state, 10).unwrap();
        pool.insert(tx(1, 0, 100, 1), &state, 10).unwrap();
        assert_eq!(pool.insert(tx(2, 0, 100, 1), &state, 10), Err(TxError::PoolFull));
    }
}

//! Ethereum's Merkle-Patricia state root over the in-memory state: a conformance check against
//! Ethereum test vectors, not the sequencer's root (that is NOMT's).

use alloy_primitives::{B256, keccak256};
use alloy_trie::{TrieAccount, root};

use crate::state::MemState;

impl MemState {
    /// The Ethereum MPT state root of the whole state.
    pub fn mpt_root(&self) -> B256 {
        let mut accounts = Vec::with_capacity(self.account_count());
        self.for_each_account(|address, account| {
            let storage_root = root::storage_root_unsorted(
                account.storage().map(|(slot, value)| (keccak256(B256::from(*slot)), *value)),
            );
            accounts.push((
                keccak256(address),
                TrieAccount {
                    nonce: account.nonce,
                    balance: account.balance,
                    storage_root,
                    code_hash: account.code_hash(),
                },
            ));
        });
        root::state_root_unsorted(accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_state_has_the_empty_trie_root() {
        assert_eq!(MemState::new().mpt_root(), alloy_trie::EMPTY_ROOT_HASH);
    }
}

//! Decoding untrusted diff messages never panics, never allocates past the declared limits,
//! and leaves the codec's index unchanged when it fails.
#![no_main]

use std::sync::OnceLock;

use alloy_primitives::{Address, U256};
use libfuzzer_sys::fuzz_target;
use memstate::{AccountData, AccountDiff, DiffCodec, KeyIndex, MemState, StateDiff};

/// A small state with accounts and slots, so that messages can refer to known keys.
fn state() -> &'static (MemState, KeyIndex) {
    static STATE: OnceLock<(MemState, KeyIndex)> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut diff = StateDiff::default();
        for i in 0..64u8 {
            diff.accounts.insert(
                Address::with_last_byte(i),
                AccountDiff {
                    info: Some(AccountData {
                        nonce: u64::from(i),
                        balance: U256::from(i) << 100,
                        code_hash: memstate::KECCAK_EMPTY,
                    }),
                    storage_cleared: false,
                    storage: (0..u64::from(i % 8)).map(|s| (U256::from(s), U256::from(s + 1))).collect(),
                },
            );
        }
        let state = MemState::new();
        state.apply(&diff);
        let index = KeyIndex::from_state(&state);
        (state, index)
    })
}

fuzz_target!(|data: &[u8]| {
    let (state, index) = state();
    let mut codec = DiffCodec::new(index.clone());
    if codec.decode(data, state).is_err() {
        assert_eq!(codec.index().account_count(), index.account_count());
    }
});

//! Genesis state from a geth-style `alloc` map.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, U64, U256, keccak256};
use revm::state::Bytecode;
use serde::Deserialize;

use crate::{
    diff::{AccountData, AccountDiff, StateDiff},
    state::MemState,
};

/// One account of a genesis `alloc` (geth's format; numbers as hex or decimal strings).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisAccount {
    /// Balance in wei.
    #[serde(default)]
    pub balance: U256,
    /// Nonce.
    #[serde(default)]
    pub nonce: Option<U64>,
    /// Contract code.
    #[serde(default)]
    pub code: Option<Bytes>,
    /// Storage slots (keys and values as hex quantities or 32-byte hex).
    #[serde(default)]
    pub storage: Option<BTreeMap<U256, U256>>,
}

/// The `alloc` map: address → account.
pub type GenesisAlloc = BTreeMap<Address, GenesisAccount>;

/// A genesis file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The JSON does not parse as an alloc map (or a genesis with an `alloc` field).
    #[error("genesis alloc is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses either a bare `alloc` map or a whole geth genesis file holding one.
pub fn parse_alloc(json: &str) -> Result<GenesisAlloc, GenesisError> {
    #[derive(Deserialize)]
    struct Genesis {
        alloc: GenesisAlloc,
    }
    let value: serde_json::Value = serde_json::from_str(json)?;
    if value.get("alloc").is_some() {
        Ok(serde_json::from_value::<Genesis>(value)?.alloc)
    } else {
        Ok(serde_json::from_value(value)?)
    }
}

impl MemState {
    /// A state holding exactly the accounts of `alloc`.
    pub fn from_genesis(alloc: &GenesisAlloc) -> Self {
        Self::from_diff(&genesis_diff(alloc))
    }

    /// A state holding exactly what `diff` creates from an empty state.
    pub fn from_diff(diff: &StateDiff) -> Self {
        Self::from_diff_in(crate::Layout::default(), diff)
    }

    /// As [`MemState::from_diff`], laid out as asked.
    pub fn from_diff_in(layout: crate::Layout, diff: &StateDiff) -> Self {
        let state = MemState::with_layout(layout);
        let _new_state_wipes_nothing = state.apply(diff);
        state
    }
}

/// The diff that creates `alloc` from an empty state.
pub fn genesis_diff(alloc: &GenesisAlloc) -> StateDiff {
    let mut diff = StateDiff::default();
    for (address, account) in alloc {
        let code_hash = match &account.code {
            Some(code) if !code.is_empty() => {
                let hash = keccak256(code);
                diff.codes.insert(hash, Bytecode::new_raw(code.clone()));
                hash
            }
            _ => crate::KECCAK_EMPTY,
        };
        let storage = account
            .storage
            .iter()
            .flatten()
            .map(|(k, v)| (*k, *v))
            .filter(|(_, v)| !v.is_zero())
            .collect();
        diff.accounts.insert(
            *address,
            AccountDiff {
                info: Some(AccountData {
                    nonce: account.nonce.unwrap_or_default().to(),
                    balance: account.balance,
                    code_hash,
                }),
                storage_cleared: true,
                storage,
            },
        );
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_geth_alloc_and_whole_genesis() {
        let alloc = r#"{"0x1000000000000000000000000000000000000001":{"balance":"0x10","nonce":"0x2",
            "code":"0x6001","storage":{"0x01":"0x02"}},
            "2000000000000000000000000000000000000002":{"balance":"1000"}}"#;
        let parsed = parse_alloc(alloc).unwrap();
        let genesis = format!(r#"{{"config":{{}},"alloc":{alloc}}}"#);
        assert_eq!(parse_alloc(&genesis).unwrap(), parsed);
        let state = MemState::from_genesis(&parsed);
        let a: Address = "0x1000000000000000000000000000000000000001".parse().unwrap();
        let b: Address = "0x2000000000000000000000000000000000000002".parse().unwrap();
        assert_eq!(state.account(&a).unwrap().nonce, 2);
        assert_eq!(state.account(&a).unwrap().balance, U256::from(16));
        assert_eq!(state.storage(&a, &U256::from(1)), U256::from(2));
        assert_eq!(state.code_at(&a).as_ref(), &[0x60, 0x01]);
        assert_eq!(state.account(&b).unwrap().balance, U256::from(1000));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_alloc("{\"0x12\": 5}").is_err());
        assert!(parse_alloc("not json").is_err());
    }
}

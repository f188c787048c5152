//! `bench memory`: random reads over a large state in huge pages against the same state in
//! plain pages, and the bytes an account and a storage slot take.
//!
//! Page kinds are fixed per process (the node arenas are), so each kind is measured in its own
//! child process of the same invocation (`bench memory-child`), one after the other, with the
//! same seed and the same reads. The baseline is plain 4 KiB pages; the ratio is the baseline's
//! time per read over the kind's (> 1: the kind is faster).

use std::time::Instant;

use alloy_primitives::{Address, U256};
use memstate::{AccountData, AccountDiff, Layout, MemState, StateDiff};
use numa::{ArenaSettings, HugePages, PageKind};

/// What one child measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChildResult {
    /// Page policy asked for.
    pub asked: String,
    /// Page kinds the arena actually mapped, with bytes.
    pub mapped: Vec<(String, u64)>,
    /// Accounts in the state.
    pub accounts: u64,
    /// Storage slots in the state.
    pub slots: u64,
    /// Arena bytes per account (tables included, at their load factor).
    pub bytes_per_account: f64,
    /// Arena bytes per storage slot.
    pub bytes_per_slot: f64,
    /// Seconds to build the state.
    pub build_s: f64,
    /// Nanoseconds per random account read, one per run.
    pub account_read_ns: Vec<f64>,
    /// Nanoseconds per random storage read, one per run.
    pub slot_read_ns: Vec<f64>,
}

/// splitmix64: a cheap, well-mixed map from an index to 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The address of account `i`: random-looking, as real (hashed) addresses are.
pub fn address(seed: u64, i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&mix(seed ^ i).to_le_bytes());
    bytes[8..16].copy_from_slice(&mix(seed ^ i ^ 0xA5A5).to_le_bytes());
    bytes[16..].copy_from_slice(&(i as u32).to_le_bytes());
    Address::from(bytes)
}

const SLOTS_PER_ACCOUNT: u64 = 10;

/// Account `j`: nonce and balance `j`, no code, the given slots.
fn account_diff(j: u64, storage: std::collections::BTreeMap<U256, U256>) -> AccountDiff {
    AccountDiff {
        info: Some(AccountData {
            nonce: j,
            balance: U256::from(j),
            code_hash: memstate::KECCAK_EMPTY,
        }),
        storage_cleared: false,
        storage,
    }
}

/// Builds the state and times random reads under `policy` (run inside a child process).
pub fn child(
    policy: HugePages,
    accounts: u64,
    slots: u64,
    reads: u64,
    runs: usize,
    seed: u64,
) -> Result<ChildResult, String> {
    if let Err(conflict) =
        numa::configure(ArenaSettings { huge_pages: policy, region_bytes: 512 << 20, bind: true })
        && conflict.current.huge_pages != policy
    {
        return Err(conflict.to_string());
    }
    let state = MemState::with_layout(Layout { shards: 64, nodes: vec![0] });
    let started = Instant::now();
    let chunk = 500_000;
    let mut i = 0;
    while i < accounts {
        let diff = StateDiff {
            accounts: (i..(i + chunk).min(accounts))
                .map(|j| (address(seed, j), account_diff(j, Default::default())))
                .collect(),
            ..Default::default()
        };
        state.apply(&diff);
        i += chunk;
    }
    let after_accounts = state.memory_report().arena_bytes;
    // Slots: SLOTS_PER_ACCOUNT each on the first accounts.
    let holders = slots / SLOTS_PER_ACCOUNT;
    let mut i = 0;
    while i < holders {
        let accounts = (i..(i + chunk / SLOTS_PER_ACCOUNT).min(holders)).map(|j| {
            let storage = (0..SLOTS_PER_ACCOUNT)
                .map(|s| (U256::from(mix(j * 31 + s)), U256::from(j + s + 1)))
                .collect();
            (address(seed, j), account_diff(j, storage))
        });
        let diff = StateDiff { accounts: accounts.collect(), ..Default::default() };
        state.apply(&diff);
        i += chunk / SLOTS_PER_ACCOUNT;
    }
    let build_s = started.elapsed().as_secs_f64();
    let report = state.memory_report();
    let slots = report.slots;

    let mut account_read_ns = Vec::new();
    let mut slot_read_ns = Vec::new();
    for run in 0..runs as u64 {
        // Account reads: random accounts; the nonce checksum proves every read found its
        // account (and keeps the reads from being optimised away).
        let mut x = mix(seed ^ run ^ 0x1234);
        let mut expected = 0u64;
        let mut sum = 0u64;
        let t = Instant::now();
        for _ in 0..reads {
            x = mix(x);
            let j = x % accounts;
            expected = expected.wrapping_add(j);
            sum = sum.wrapping_add(state.account(&address(seed, j)).map_or(u64::MAX, |a| a.nonce));
        }
        account_read_ns.push(t.elapsed().as_nanos() as f64 / reads as f64);
        if sum != expected {
            return Err(format!("account reads returned wrong data ({sum} != {expected})"));
        }
        if holders > 0 {
            let mut x = mix(seed ^ run ^ 0x5678);
            let mut expected = U256::ZERO;
            let mut sum = U256::ZERO;
            let t = Instant::now();
            for _ in 0..reads {
                x = mix(x);
                let j = x % holders;
                let s = (x >> 40) % SLOTS_PER_ACCOUNT;
                expected += U256::from(j + s + 1);
                sum += state.storage(&address(seed, j), &U256::from(mix(j * 31 + s)));
            }
            slot_read_ns.push(t.elapsed().as_nanos() as f64 / reads as f64);
            if sum != expected {
                return Err("storage reads returned wrong data".into());
            }
        }
    }
    let arena = report.arenas.first().cloned().unwrap_or_default();
    Ok(ChildResult {
        asked: policy_name(policy).into(),
        mapped: arena.mapped.iter().map(|(k, b)| (k.as_str().to_string(), *b)).collect(),
        accounts: report.accounts,
        slots,
        bytes_per_account: after_accounts as f64 / accounts.max(1) as f64,
        bytes_per_slot: (report.arena_bytes.saturating_sub(after_accounts)) as f64
            / slots.max(1) as f64,
        build_s,
        account_read_ns,
        slot_read_ns,
    })
}

/// `off`, `thp`, `2m`, `1g`, `auto`.
pub fn policy_name(policy: HugePages) -> &'static str {
    match policy {
        HugePages::Auto => "auto",
        HugePages::Gib1 => "1g",
        HugePages::Mib2 => "2m",
        HugePages::Thp => "thp",
        HugePages::Off => "off",
    }
}

/// Parses a policy name.
pub fn parse_policy(name: &str) -> Result<HugePages, String> {
    Ok(match name {
        "auto" => HugePages::Auto,
        "1g" => HugePages::Gib1,
        "2m" => HugePages::Mib2,
        "thp" => HugePages::Thp,
        "off" | "plain" => HugePages::Off,
        other => return Err(format!("unknown page policy {other:?} (off, thp, 2m, 1g, auto)")),
    })
}

/// The kind the arena mostly got, for labels.
pub fn main_kind(result: &ChildResult) -> String {
    result
        .mapped
        .iter()
        .max_by_key(|(_, b)| *b)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| PageKind::Plain.as_str().into())
}

/// 2 MiB pages a child will want for `accounts` and `slots`: a generous estimate of the state
/// plus the growth regions (512 MiB, doubling to 4 GiB).
pub fn pages_wanted(accounts: u64, slots: u64) -> u64 {
    let bytes = accounts * 256 + slots * 96;
    let mut mapped = 0u64;
    let mut region = 512u64 << 20;
    let mut n = 0;
    while mapped < bytes * 2 {
        mapped += region;
        n += 1;
        if n <= 3 {
            region *= 2;
        }
    }
    mapped / (2 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_reproducible() {
        let a: std::collections::HashSet<_> = (0..100_000).map(|i| address(7, i)).collect();
        assert_eq!(a.len(), 100_000);
        assert_eq!(address(7, 5), address(7, 5));
        assert_ne!(address(7, 5), address(8, 5));
    }

    #[test]
    fn a_small_child_run_reads_back_what_it_built() {
        // Whatever pages this test process's arenas already use.
        let r = child(numa::settings().huge_pages, 20_000, 5_000, 10_000, 2, 3).unwrap();
        assert_eq!(r.accounts, 20_000);
        assert_eq!(r.slots, 5_000);
        assert_eq!(r.account_read_ns.len(), 2);
        assert!(r.bytes_per_account > 50.0 && r.bytes_per_account < 1_000.0, "{r:?}");
        assert!(r.bytes_per_slot > 32.0, "{r:?}");
        assert!(!r.mapped.is_empty());
    }
}

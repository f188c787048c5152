//! Single-contract differential tests: each program runs in revm's interpreter and as compiled
//! code, and the results (kind, gas, refund, output, logs, state) must be identical.

mod common;
use common::*;
use revm::primitives::U256;
use revm::primitives::hardfork::SpecId;

fn check(hex_code: &str, input: &str, gas: u64) {
    let code = hex::decode(hex_code).unwrap();
    let input = hex::decode(input).unwrap();
    for spec in [SpecId::CANCUN, SpecId::PRAGUE, SpecId::OSAKA, SpecId::BERLIN, SpecId::BYZANTIUM] {
        let db = db(&[(TARGET, code.clone())]);
        let a = interpret(db.clone(), spec, tx(TARGET, input.clone(), gas, 0));
        let b = compiled(db, spec, tx(TARGET, input.clone(), gas, 0), eager());
        if let Err(e) = same(&a, &b) {
            panic!("{hex_code} under {spec:?}: {e}");
        }
        let hash = revm::primitives::keccak256(&code);
        assert!(eager().ready(hash, spec).is_some(), "{hex_code} was not compiled for {spec:?}");
    }
}

#[test]
fn arithmetic_and_return() {
    // 2 + 3 stored at 0 and returned
    check("600260030160005260206000f3", "", 100_000);
    // DIV, SDIV, MOD, SMOD, ADDMOD, MULMOD, SIGNEXTEND, EXP; results stored and returned
    check(
        "6007600a0460005260076000036003056020526007600a066040526003600019076060526005600760090860805260056007600909\
         60a052600060ff0b60c0526003600a0a60e05261010060 00f3"
            .replace(' ', "")
            .as_str(),
        "",
        100_000,
    );
}

#[test]
fn comparisons_bits_and_shifts() {
    check(
        "600160021060005260016002116020526001600003600112604052600160000360011360605260056005146080\
         52600015 60a05260001960c0526001601f1a60e052600160ff1b61010052600160ff1c6101205260016000036004\
         1d610140526101606000f3"
            .replace(' ', "")
            .as_str(),
        "",
        200_000,
    );
}

#[test]
fn jumps_static_dynamic_and_invalid() {
    // static PUSH+JUMP over an INVALID to a JUMPDEST, then STOP
    check("600456fe5b00", "", 100_000);
    // dynamic jump: target computed by ADD
    check("6002600201565b00", "", 100_000);
    check("600360020156fe5b00", "", 100_000);
    // jump into PUSH data is invalid
    check("6003565b00", "", 100_000);
    // JUMPI taken and not taken
    check("6001600657fe5b600060085700", "", 100_000);
}

#[test]
fn loops_memory_and_calldata() {
    // sum 1..=100 in a loop, result in memory, returned
    check(
        "6000606460005b8115601a57818101906001900390600456 5b60005260206000f3"
            .replace(' ', "")
            .as_str(),
        "",
        1_000_000,
    );
    // copy calldata to memory, keccak it, return the hash
    check(
        "366000600037366000206000526020 6000f3".replace(' ', "").as_str(),
        "deadbeef0102",
        100_000,
    );
    // MSTORE8 and MLOAD past memory end (expansion through the slow path), MSIZE
    check("60ff6040536000516020526059516040525960605260806000f3", "", 100_000);
}

#[test]
fn out_of_gas_everywhere() {
    let code =
        "6000606460005b8115601a57818101906001900390600456 5b60005260206000f3".replace(' ', "");
    for gas in [21_000, 21_005, 21_010, 21_050, 21_200, 21_500, 22_000, 23_000] {
        check(&code, "", gas);
    }
}

#[test]
fn stack_errors() {
    // underflow: ADD on an empty stack
    check("01", "", 100_000);
    // overflow: an endless loop of PUSH1 0
    check("5b60006000600056", "", 1_000_000);
    // falls off the end
    check("6001", "", 100_000);
}

#[test]
fn storage_logs_and_revert() {
    // SSTORE, SLOAD, LOG1, then RETURN
    check("602a6001556001546000526001600052602060006000a160206000f3", "", 200_000);
    // SSTORE then REVERT with data
    check("602a60015560016000526020 6000fd".replace(' ', "").as_str(), "", 200_000);
    // SSTORE with just over the sentry
    check("602a600155", "", 21_000 + 6 + 2300);
}

#[test]
fn compiled_code_actually_runs() {
    let rt = jit::JitRuntime::start(jit::JitConfig::eager(), None);
    let code = hex::decode("600260030160005260206000f3").unwrap();
    let db = db(&[(TARGET, code)]);
    let out = compiled(db, SpecId::CANCUN, tx(TARGET, vec![], 100_000, 0), rt.clone()).unwrap();
    assert!(out.0.is_success());
    let stats = rt.stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert_eq!(stats.frames_compiled, 1, "{stats:?}");
    assert_eq!(stats.frames_interpreted, 0, "{stats:?}");
}

#[test]
fn memory_growth_is_charged_and_refused_as_revm_does() {
    // MSTORE at 2^32 (MemoryOOG), at 2^64 (beyond usize: InvalidOperandOOG), MLOAD at 2^255,
    // MSTORE8 just below 4 GiB.
    check("60016401000000005200", "", 100_000);
    check("600168010000000000000000005200", "", 100_000);
    check("7f80000000000000000000000000000000000000000000000000000000000000005100", "", 100_000);
    check("60ff64ffffffffe05300", "", 100_000);
    // A growing MSTORE (33 words), then MSIZE returned: every gas limit around the point where
    // the expansion stops being affordable.
    for gas in 21_100..21_140 {
        check("6001610400525960005260206000f3", "", gas);
    }
}

#[test]
fn a_slot_read_after_a_call_sees_what_the_child_wrote() {
    // Stores 1 in slot 0 and reads it; calls itself with one byte of calldata, which stores
    // 2 there; then reads slot 0 twice and returns the sum, 4. A stale cached read would
    // give 2.
    let code = "36602a5760016000556000545060006000600160006000305af15060005460005401\
                60005260206000f35b600260005500";
    check(code, "", 200_000);
    let db = db(&[(TARGET, hex::decode(code).unwrap())]);
    let out = compiled(db, SpecId::CANCUN, tx(TARGET, vec![], 200_000, 0), eager()).unwrap();
    assert_eq!(out.0.output().map(|o| o[31]), Some(4), "{:?}", out.0);
}

#[test]
fn a_slot_read_after_a_call_is_this_contracts_own() {
    // Stores 1 in slot 0 and reads it; calls another contract, which stores 2 in its own slot
    // 0; then reads slot 0 twice and returns the sum: 2. A cache entry kept across the call
    // (whose key names no contract) would give 4.
    let code = hex::decode(
        "600160005560005450600060006000600060007330000000000000000000000000000000000000035af150\
         6000546000540160005260206000f3",
    )
    .unwrap();
    let other = revm::primitives::address!("0x3000000000000000000000000000000000000003");
    let child = hex::decode("600260005500").unwrap();
    for spec in [SpecId::CANCUN, SpecId::BERLIN, SpecId::BYZANTIUM] {
        let db = db(&[(TARGET, code.clone()), (other, child.clone())]);
        let a = interpret(db.clone(), spec, tx(TARGET, vec![], 200_000, 0));
        let b = compiled(db, spec, tx(TARGET, vec![], 200_000, 0), eager());
        same(&a, &b).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        let (result, _) = b.unwrap();
        assert_eq!(result.output().map(|o| o[31]), Some(2), "{result:?}");
    }
}

#[test]
fn division_at_every_operand_width() {
    // DIV, SDIV, MOD and SMOD over operands on both sides of the compiled code's 64- and
    // 128-bit fast paths, of both signs, zero and the signed minimum; every result stored
    // and returned.
    let m = |v: u128| U256::from(v);
    let neg = |v: U256| v.wrapping_neg();
    let values = [
        U256::ZERO,
        m(1),
        m(7),
        m(u64::MAX as u128),
        m(1 << 64),
        m((1 << 64) + 1),
        m((1 << 127) + 5),
        m(u128::MAX),
        m(u128::MAX) + m(1),
        U256::from(1) << 255,
        U256::MAX,
        neg(m(7)),
        neg(m(u64::MAX as u128)),
        neg(m(1 << 64)),
        neg(m(u128::MAX)),
        (U256::from(1) << 255) - m(1),
    ];
    for op in [0x04u8, 0x05, 0x06, 0x07] {
        let mut code = Vec::new();
        let mut at = 0u16;
        for a in values {
            for d in values {
                code.push(0x7f);
                code.extend(d.to_be_bytes::<32>());
                code.push(0x7f);
                code.extend(a.to_be_bytes::<32>());
                code.extend([op, 0x61]);
                code.extend(at.to_be_bytes());
                code.push(0x52);
                at += 32;
            }
        }
        code.extend([0x61]);
        code.extend(at.to_be_bytes());
        code.extend([0x60, 0x00, 0xf3]);
        check(&hex::encode(&code), "", 1_000_000);
    }
}

//! Differential fuzzing: random and mutated bytecode, two contracts that call each other (and
//! themselves), random gas limits. revm's interpreter and the JIT must agree on the result,
//! gas, refund, output, logs and every state change.

mod common;
use common::*;
use proptest::prelude::*;
use revm::bytecode::opcode as op;
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address, address};

const OTHER: Address = address!("0x3000000000000000000000000000000000000003");

#[derive(Clone, Debug)]
enum Piece {
    /// PUSH1 of a small value (offsets, sizes, booleans).
    Small(u8),
    /// PUSH32 of any value.
    Word([u8; 32]),
    /// Any opcode byte at all (unknown ones halt; PUSHes swallow what follows).
    Raw(u8),
    /// One of the opcodes the compiler lowers natively or through helpers, weighted.
    Op(u8),
    /// A JUMPDEST.
    Dest,
    /// PUSH2 <pc of the k-th JUMPDEST (or a bad target)> then JUMP or JUMPI.
    Jump(usize, bool),
    /// A call to the other contract, to this one, or to a precompile, of some kind.
    Call(u8, u8),
    /// RETURN or REVERT of a small memory range.
    Exit(bool, u8),
}

fn common_op() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![
        op::ADD,
        op::MUL,
        op::SUB,
        op::DIV,
        op::SDIV,
        op::MOD,
        op::SMOD,
        op::ADDMOD,
        op::MULMOD,
        op::EXP,
        op::SIGNEXTEND,
        op::LT,
        op::GT,
        op::SLT,
        op::SGT,
        op::EQ,
        op::ISZERO,
        op::AND,
        op::OR,
        op::XOR,
        op::NOT,
        op::BYTE,
        op::SHL,
        op::SHR,
        op::SAR,
        op::KECCAK256,
        op::ADDRESS,
        op::BALANCE,
        op::CALLER,
        op::CALLVALUE,
        op::CALLDATALOAD,
        op::CALLDATASIZE,
        op::CALLDATACOPY,
        op::CODESIZE,
        op::CODECOPY,
        op::RETURNDATASIZE,
        op::RETURNDATACOPY,
        op::GAS,
        op::PC,
        op::MSIZE,
        op::POP,
        op::MLOAD,
        op::MSTORE,
        op::MSTORE8,
        op::SLOAD,
        op::SSTORE,
        op::TLOAD,
        op::TSTORE,
        op::MCOPY,
        op::PUSH0,
        op::DUP1,
        op::DUP2,
        op::DUP4,
        op::DUP16,
        op::SWAP1,
        op::SWAP2,
        op::SWAP16,
        op::LOG0,
        op::LOG2,
        op::SELFBALANCE,
        op::EXTCODESIZE,
        op::EXTCODEHASH,
        op::BLOCKHASH,
        op::NUMBER,
        op::CLZ,
    ])
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => any::<u8>().prop_map(|v| Piece::Small(v % 72)),
        1 => any::<[u8; 32]>().prop_map(Piece::Word),
        1 => any::<u8>().prop_map(Piece::Raw),
        8 => common_op().prop_map(Piece::Op),
        2 => Just(Piece::Dest),
        2 => (0usize..6, any::<bool>()).prop_map(|(k, c)| Piece::Jump(k, c)),
        1 => (0u8..4, 0u8..3).prop_map(|(kind, to)| Piece::Call(kind, to)),
        1 => (any::<bool>(), 0u8..64).prop_map(|(r, n)| Piece::Exit(r, n)),
    ]
}

/// Assembles pieces; jump targets are resolved after layout (k-th JUMPDEST, or pc 1 when
/// there is none, which is not a JUMPDEST).
fn assemble(pieces: &[Piece], me: Address) -> Vec<u8> {
    let mut code = Vec::new();
    let mut dests = Vec::new();
    let mut fixups = Vec::new();
    for p in pieces {
        match p {
            Piece::Small(v) => code.extend([op::PUSH1, *v]),
            Piece::Word(w) => {
                code.push(op::PUSH32);
                code.extend(w);
            }
            Piece::Raw(b) => code.push(*b),
            Piece::Op(o) => code.push(*o),
            Piece::Dest => {
                dests.push(code.len());
                code.push(op::JUMPDEST);
            }
            Piece::Jump(k, cond) => {
                if *cond {
                    code.extend([op::PUSH1, 1]);
                }
                fixups.push((code.len() + 1, *k));
                code.extend([op::PUSH2, 0, 0, if *cond { op::JUMPI } else { op::JUMP }]);
            }
            Piece::Call(kind, to) => {
                let target = match to {
                    0 => OTHER,
                    1 => me,
                    _ => address!("0x0000000000000000000000000000000000000002"),
                };
                // retSize retOffset argsSize argsOffset [value] address gas
                code.extend([op::PUSH1, 32, op::PUSH1, 0, op::PUSH1, 36, op::PUSH1, 0]);
                let call =
                    [op::CALL, op::CALLCODE, op::DELEGATECALL, op::STATICCALL][*kind as usize];
                if call == op::CALL || call == op::CALLCODE {
                    code.extend([op::PUSH1, 0]);
                }
                code.push(op::PUSH20);
                code.extend(target.as_slice());
                code.extend([op::GAS, call]);
            }
            Piece::Exit(revert, n) => {
                code.extend([
                    op::PUSH1,
                    *n,
                    op::PUSH1,
                    0,
                    if *revert { op::REVERT } else { op::RETURN },
                ]);
            }
        }
    }
    for (at, k) in fixups {
        let target = dests.get(k % dests.len().max(1)).copied().unwrap_or(1) as u16;
        code[at..at + 2].copy_from_slice(&target.to_be_bytes());
    }
    code
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn interpreter_and_jit_agree(
        a in prop::collection::vec(piece(), 1..60),
        b in prop::collection::vec(piece(), 1..40),
        input in prop::collection::vec(any::<u8>(), 0..68),
        gas in 21_000u64..400_000,
        spec in prop::sample::select(vec![SpecId::CANCUN, SpecId::PRAGUE, SpecId::OSAKA, SpecId::ISTANBUL]),
    ) {
        let code_a = assemble(&a, TARGET);
        let code_b = assemble(&b, OTHER);
        let db = db(&[(TARGET, code_a.clone()), (OTHER, code_b.clone())]);
        let x = interpret(db.clone(), spec, tx(TARGET, input.clone(), gas, 7));
        let y = compiled(db, spec, tx(TARGET, input, gas, 7), eager());
        if let Err(e) = same(&x, &y) {
            return Err(TestCaseError::fail(format!(
                "{e}\n A = {}\n B = {}\n spec {spec:?} gas {gas}",
                hex::encode(&code_a),
                hex::encode(&code_b)
            )));
        }
    }

    /// Mutations of a real contract (the loop of the opcode tests): flipped bytes anywhere.
    #[test]
    fn mutated_code_agrees(
        flips in prop::collection::vec((0usize..40, any::<u8>()), 1..4),
        gas in 21_000u64..300_000,
    ) {
        let mut code = hex::decode("6000606460005b8115601a57818101906001900390600456 5b60005260206000f3".replace(' ', "")).unwrap();
        for (at, byte) in flips {
            let i = at % code.len();
            code[i] = byte;
        }
        let db = db(&[(TARGET, code.clone())]);
        let x = interpret(db.clone(), SpecId::CANCUN, tx(TARGET, vec![], gas, 0));
        let y = compiled(db, SpecId::CANCUN, tx(TARGET, vec![], gas, 0), eager());
        if let Err(e) = same(&x, &y) {
            return Err(TestCaseError::fail(format!("{e}\n code = {}", hex::encode(&code))));
        }
    }
}

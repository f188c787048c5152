# The two commands of the README. Both install what is missing first.
CARGO ?= cargo
ARGS ?=

.PHONY: run test bootstrap contracts

bootstrap:
	@bash scripts/bootstrap.sh

## Build and start the sequencer in dev mode (chain 31337, ten funded dev accounts, RPC on
## 127.0.0.1:8545). Extra flags: make run ARGS="--rpc-addr 127.0.0.1:9545"
run: bootstrap
	$(CARGO) run --release -p sequencer --bin sequencer -- --dev $(ARGS)

## The whole test suite (unit, end-to-end against the real binary, conformance vectors).
test: bootstrap
	$(CARGO) test --workspace --all-targets
	$(CARGO) run --release -p bench --bin bench -- statetest tests/fixtures/GeneralStateTests
	$(CARGO) run --release -p bench --bin bench -- statetest --parallel tests/fixtures/GeneralStateTests
	$(CARGO) run --release -p bench --bin bench -- statetest --jit tests/fixtures/GeneralStateTests
	$(CARGO) run --release -p bench --bin bench -- blocktest tests/fixtures/BlockchainTests

## Rebuild the Solidity contracts the tests and benchmarks use (needs npm; not part of test).
contracts:
	@bash scripts/build-contracts.sh

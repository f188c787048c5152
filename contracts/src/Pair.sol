// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice A constant-product pool (x * y = k, 0.3% fee) over two internal balances: the core of
/// a Uniswap-V2 swap without the token transfers, so one swap reads two reserves and writes the
/// two reserves and the trader's two balances. The AMM benchmark's contract.
contract Pair {
    uint256 public reserve0; // slot 0
    uint256 public reserve1; // slot 1
    mapping(address => uint256) public balance0; // slot 2
    mapping(address => uint256) public balance1; // slot 3

    event Swap(address indexed trader, uint256 amountIn, uint256 amountOut, bool zeroForOne);

    constructor(uint256 r0, uint256 r1) {
        reserve0 = r0;
        reserve1 = r1;
    }

    /// @notice Sells `amountIn` of one side for the other; reverts if it would give less than
    /// `minOut` or the trader lacks `amountIn`.
    function swap(uint256 amountIn, bool zeroForOne, uint256 minOut) external returns (uint256 amountOut) {
        (uint256 rIn, uint256 rOut) = zeroForOne ? (reserve0, reserve1) : (reserve1, reserve0);
        uint256 inWithFee = amountIn * 997;
        amountOut = (inWithFee * rOut) / (rIn * 1000 + inWithFee);
        require(amountOut >= minOut, "slippage");
        if (zeroForOne) {
            balance0[msg.sender] -= amountIn;
            balance1[msg.sender] += amountOut;
            reserve0 = rIn + amountIn;
            reserve1 = rOut - amountOut;
        } else {
            balance1[msg.sender] -= amountIn;
            balance0[msg.sender] += amountOut;
            reserve1 = rIn + amountIn;
            reserve0 = rOut - amountOut;
        }
        emit Swap(msg.sender, amountIn, amountOut, zeroForOne);
    }
}

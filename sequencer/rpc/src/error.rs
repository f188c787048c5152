//! JSON-RPC errors, with geth's codes and messages.

use alloy_primitives::Bytes;
use jsonrpsee::types::ErrorObjectOwned;

/// geth's code for most server-side failures.
pub const SERVER_ERROR: i32 = -32000;
/// Invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;
/// geth's code for a reverted call.
pub const REVERTED: i32 = 3;

/// Errors of the read and call methods.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Parameters that do not make sense.
    #[error("{0}")]
    InvalidParams(String),
    /// State of a block this node no longer keeps.
    #[error(
        "historical state not available: block {0} is behind the head; this node keeps only the newest state"
    )]
    HistoricalState(u64),
    /// The block does not exist.
    #[error("block not found")]
    BlockNotFound,
    /// A simulated transaction was refused before execution.
    #[error("{0}")]
    Execution(String),
    /// A simulated transaction halted.
    #[error("execution halted: {0}")]
    Halt(String),
    /// A log query over too many blocks.
    #[error("query exceeds max block range {0}")]
    LogRange(u64),
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(err: RpcError) -> Self {
        let code = match err {
            RpcError::InvalidParams(_) => INVALID_PARAMS,
            _ => SERVER_ERROR,
        };
        ErrorObjectOwned::owned(code, err.to_string(), None::<()>)
    }
}

/// geth's revert error: code 3, "execution reverted[: reason]", data = the revert output.
pub fn revert_error(output: &Bytes) -> ErrorObjectOwned {
    let message = match decode_revert_reason(output) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    ErrorObjectOwned::owned(REVERTED, message, Some(output.to_string()))
}

/// The string of a Solidity `Error(string)` revert, if that is what `output` is.
pub fn decode_revert_reason(output: &[u8]) -> Option<String> {
    const ERROR_SELECTOR: [u8; 4] = [0x08, 0xc3, 0x79, 0xa0];
    let body = output.strip_prefix(&ERROR_SELECTOR)?;
    let word = |at: usize| -> Option<usize> {
        let w = body.get(at..at + 32)?;
        if w[..24].iter().any(|b| *b != 0) {
            return None;
        }
        Some(u64::from_be_bytes(w[24..].try_into().ok()?) as usize)
    };
    let offset = word(0)?;
    let len = word(offset)?;
    let start = offset.checked_add(32)?;
    let text = body.get(start..start.checked_add(len)?)?;
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_error_string_and_refuses_garbage() {
        // Error("nope")
        let data = alloy_primitives::hex::decode(
            "08c379a0\
             0000000000000000000000000000000000000000000000000000000000000020\
             0000000000000000000000000000000000000000000000000000000000000004\
             6e6f706500000000000000000000000000000000000000000000000000000000",
        )
        .unwrap();
        assert_eq!(decode_revert_reason(&data).as_deref(), Some("nope"));
        assert_eq!(decode_revert_reason(&data[..40]), None);
        assert_eq!(decode_revert_reason(&[1, 2, 3]), None);
        let err = revert_error(&Bytes::from(data));
        assert_eq!(err.code(), 3);
        assert_eq!(err.message(), "execution reverted: nope");
    }
}

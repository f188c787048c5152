//! Errors of submission, with geth's codes and messages. The read methods' errors are the
//! `chain-rpc` crate's ([`chain_rpc::error`]).

use jsonrpsee::types::ErrorObjectOwned;

pub use chain_rpc::error::*;

use crate::{node::SubmitError, tx::TxError};

/// A refused transaction: -32000 with the reason, as geth.
pub fn tx_error(err: TxError) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(SERVER_ERROR, err.to_string(), None::<()>)
}

/// A failed realtime submission.
pub fn submit_error(err: SubmitError) -> ErrorObjectOwned {
    match err {
        SubmitError::Rejected(err) => tx_error(err),
        other => ErrorObjectOwned::owned(SERVER_ERROR, other.to_string(), None::<()>),
    }
}

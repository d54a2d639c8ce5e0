//! The right to be forgotten, outside the request path: erasure receipts
//! (what a caller keeps as proof) and the erasure ledger (what makes an
//! erasure outlive a backup restore).
//!
//! Both hold subjects only as keyed hashes; neither ever holds a subject
//! id, a token's value or a key. The erasure itself (destroying the DEK,
//! deleting records, purging files) is the vault's and the store's.

pub mod ledger;
pub mod receipt;

pub use ledger::{ErasureLedger, LedgerError, LedgerLocation};
pub use receipt::{AtReturn, Guarantees, Receipt, ReceiptError, SignedReceipt};

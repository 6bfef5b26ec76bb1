//! Crash points for the kill tests: with `PLUMLINE_FAILPOINT=<name>` in the
//! environment the process aborts, as a `kill -9` would (no destructor
//! runs), when it reaches that step of the commit protocol. The variable
//! is read once; unset, a crash point costs one comparison.
//!
//! Points, in protocol order: `claimed` (claim taken, nothing staged),
//! `part-uploaded` (first part of a multipart upload sent), `staged` (the
//! day's file complete but not visible), `committed` (file visible, state
//! not written), `recorded` (state written, claim not released).

use std::sync::OnceLock;

pub(crate) fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if POINT.get_or_init(|| std::env::var("PLUMLINE_FAILPOINT").ok()).as_deref() == Some(name) {
        tracing::error!(point = name, "PLUMLINE_FAILPOINT reached: aborting");
        std::process::abort();
    }
}

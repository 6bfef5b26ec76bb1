//! One module per subcommand: its clap `Args` and a `run`.
//!
//! Also the value parsers flags share, so a bad value is a usage error that
//! names its flag before anything runs.

use std::num::NonZeroUsize;

use plumline_api::PageSize;

pub mod calls;
pub mod completions;
pub mod demo;
pub mod export;
pub mod exporter;
pub mod man;
pub mod sim;
pub mod verify;

/// A page size the API accepts (1..=10000).
pub fn page_size(value: &str) -> Result<PageSize, String> {
    let n: u32 = value.trim().parse().map_err(|_| format!("`{value}` is not a whole number"))?;
    PageSize::new(n).map_err(|e| e.to_string())
}

/// A count of at least one (requests or days in flight).
pub fn at_least_one(value: &str) -> Result<NonZeroUsize, String> {
    let n: usize = value.trim().parse().map_err(|_| format!("`{value}` is not a whole number"))?;
    NonZeroUsize::new(n).ok_or_else(|| "must be at least 1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_parsers() {
        assert_eq!(page_size("10000"), Ok(PageSize::MAX));
        for (bad, needle) in [("0", "page size 0"), ("10001", "1 to 10000"), ("x", "whole number")] {
            let err = page_size(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert_eq!(at_least_one("3").map(NonZeroUsize::get), Ok(3));
        assert!(at_least_one("0").expect_err("0").contains("at least 1"));
        assert!(at_least_one("-1").is_err());
    }
}

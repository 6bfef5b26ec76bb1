//! A typed client for Plum Fuse's "Get Call Logs" API.
//!
//! `GET {base}/calls/{start}/{end}?number=&limit=&offset=` with HTTP Basic
//! auth, answering JSON or XML pages that each carry `total_calls`.
//!
//! - [`model`]: [`Call`], [`CallType`], [`CallPage`].
//! - [`wire`]: tolerant JSON and XML decoding.
//! - [`Client`]: one page per call, retries, a request budget; [`PageSource`]
//!   is the seam the export pipeline and the exporter page through.
//!
//! This crate knows nothing of Arrow, Parquet, Prometheus or the CLI.

mod client;
mod error;
pub mod model;
mod query;
mod retry;
mod secret;
pub mod wire;

use std::future::Future;
use std::time::Duration;

pub use client::{Client, ClientBuilder, DEFAULT_BASE_URL, is_loopback_url};
pub use error::{ApiError, ConfigError, QueryError, error_chain};
pub use model::{Call, CallPage, CallType};
pub use query::{CallQuery, DEFAULT_LIMIT, MAX_LIMIT, PageRequest, PageSize, validate_limit};
pub use retry::RetryPolicy;
pub use secret::{Credentials, DeveloperKey};
pub use wire::WireFormat;

/// The longest call expected: the API lists a call only once it has ended,
/// but indexes it by its start, so a window is complete only once its end
/// is this far in the past. The export's settle margin and the exporter's
/// reach-back both default to it.
pub const LONGEST_CALL: Duration = Duration::from_secs(4 * 3600);

/// Calls per page for whole-range reads (`export`, `calls --all`, the
/// exporter's polls): the vendor's own sample asks for 10000, the largest
/// `limit` it accepts. Servers that cap it lower are followed.
pub const BULK_PAGE_SIZE: u32 = MAX_LIMIT;

/// Something that answers one page of a call-log query.
///
/// [`Client`] is the real one; tests and benches implement it to fake the
/// API. Implementations retry as they see fit: an error returned here is
/// final for that page.
pub trait PageSource: Send + Sync {
    /// Fetches one page.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; nothing is left half done.
    fn fetch_page(&self, request: &PageRequest) -> impl Future<Output = Result<CallPage, ApiError>> + Send;
}

impl<T: PageSource + ?Sized> PageSource for std::sync::Arc<T> {
    fn fetch_page(&self, request: &PageRequest) -> impl Future<Output = Result<CallPage, ApiError>> + Send {
        (**self).fetch_page(request)
    }
}

impl<T: PageSource + ?Sized> PageSource for &T {
    fn fetch_page(&self, request: &PageRequest) -> impl Future<Output = Result<CallPage, ApiError>> + Send {
        (**self).fetch_page(request)
    }
}

/// Walks every page of `query`, `limit` calls at a time, in order.
///
/// Stops at the first empty page or once `offset` reaches the latest
/// `total_calls`. Holds one page in memory at a time.
///
/// # Cancel safety
/// Dropping the stream stops paging; pages already yielded stay valid.
pub fn all_pages<S: PageSource>(
    source: S,
    query: CallQuery,
    limit: u32,
) -> impl futures::Stream<Item = Result<CallPage, ApiError>> + Send {
    futures::stream::unfold(Some((source, 0u64)), move |state| {
        let query = query.clone();
        async move {
            let (source, offset) = state?;
            let request = match query.page(limit, offset) {
                Ok(request) => request,
                Err(e) => return Some((Err(e), None)),
            };
            match source.fetch_page(&request).await {
                Ok(page) => {
                    if page.calls.is_empty() && offset > 0 {
                        return None;
                    }
                    let next = offset + page.calls.len() as u64;
                    let more = !page.calls.is_empty() && next < page.total_calls;
                    Some((Ok(page), more.then_some((source, next))))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}

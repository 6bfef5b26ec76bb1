//! Workspace end-to-end tests: one binary, one module per area.
//!
//! Tests that need tools from outside Rust (pyarrow and `DuckDB` in a venv, an
//! S3-compatible server, Prometheus) find them through environment variables
//! that `cargo xtask ci` sets after installing them; see [`util::external_tool`].

mod lake;
mod prometheus;
mod util;

//! Workspace end-to-end tests: one binary, one module per area.
//!
//! Tests that need tools from outside Rust (pyarrow, `DuckDB`, Polars, Spark,
//! moto and the Azure SDK in a venv, Azurite, Prometheus) find them through
//! environment variables that `cargo xtask ci` sets after installing them; see
//! [`util::external_tool`]. Tests that run the CLI take the `plumline` binary
//! that `cargo test --workspace` builds; see [`util::plumline_bin`].

mod azure;
mod lake;
mod prometheus;
mod util;

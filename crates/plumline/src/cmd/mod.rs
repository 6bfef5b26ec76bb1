//! One module per subcommand: its clap `Args` and an async `run`.

pub mod calls;
pub mod demo;
pub mod export;
pub mod exporter;
pub mod sim;

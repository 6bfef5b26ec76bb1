//! [`SimError`]: what can stop a simulator from starting or serving.

use std::io;
use std::net::SocketAddr;

/// An error starting or running the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The listening socket could not be opened.
    #[error(
        "cannot listen on {addr}: is another process using that port? pick another port, or port 0 for any free one"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The listener failed after it was opened (e.g. reading its address).
    #[error("the simulator's listener failed")]
    Listener(#[source] io::Error),
    /// The configuration cannot be served.
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
}

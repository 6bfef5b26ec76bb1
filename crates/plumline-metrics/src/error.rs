//! [`MetricsError`]: everything that can stop the exporter.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use plumline_api::ApiError;

/// An error that stops the exporter (or keeps it from starting).
///
/// API failures during polling are *not* errors of this type: the poller
/// reports them in the metrics (`plum_fuse_up`, the request counters) and
/// tries again. The one exception is [`MetricsError::Unauthorized`] on the
/// very first poll, where failing fast is kinder than serving zeros.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}{}", bind_hint(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A configuration value is out of range; nothing was started.
    #[error("invalid exporter configuration: {field} {reason}")]
    InvalidConfig {
        /// The [`PollerConfig`](crate::PollerConfig) field (or the
        /// [`BasicAuth`](crate::BasicAuth) part) at fault, e.g. `interval`.
        field: &'static str,
        /// What is wrong with it, e.g. `must be greater than zero`.
        reason: String,
    },
    /// A TLS certificate or key file could not be read or holds no usable
    /// PEM item; nothing was started.
    #[error("cannot load the TLS {what} from {}", path.display())]
    TlsFile {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file named in the configuration.
        path: PathBuf,
        /// The I/O or PEM error, or what the file lacks.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The TLS certificate and key were read but cannot serve together
    /// (the key is not the certificate's, or its type is unsupported).
    #[error("cannot use the TLS certificate {} with the private key {}", cert_file.display(), key_file.display())]
    TlsKeyPair {
        /// The certificate file.
        cert_file: PathBuf,
        /// The private key file.
        key_file: PathBuf,
        /// What rustls said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The very first poll was refused for bad credentials.
    #[error("the first poll{} was refused", number.as_deref().map(|n| format!(" for number {n}")).unwrap_or_default())]
    Unauthorized {
        /// The number queried (`None`: all numbers).
        number: Option<String>,
        /// The API's answer.
        #[source]
        source: ApiError,
    },
    /// The Prometheus registry refused a metric or could not encode.
    #[error("metrics registry error")]
    Prometheus(#[from] prometheus::Error),
    /// Accepting connections failed for good.
    #[error("the metrics server failed")]
    Serve(#[source] io::Error),
}

fn bind_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            " (the address is already in use: stop the other process or choose another address)"
        }
        io::ErrorKind::AddrNotAvailable => " (no local interface has this address: check it)",
        io::ErrorKind::PermissionDenied => {
            " (permission denied: ports below 1024 need privileges; choose another port)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_say_what_to_do() {
        let addr: SocketAddr = ([127, 0, 0, 1], 9877).into();
        let cases = [
            (io::ErrorKind::AddrInUse, "already in use"),
            (io::ErrorKind::AddrNotAvailable, "no local interface"),
            (io::ErrorKind::PermissionDenied, "permission denied"),
        ];
        for (kind, needle) in cases {
            let err = MetricsError::Bind { addr, source: io::Error::from(kind) };
            let text = err.to_string();
            assert!(text.contains("127.0.0.1:9877") && text.contains(needle), "{text}");
        }
    }
}

//! [`DeveloperKey`]: the one secret we hold.

use std::fmt;

/// The account's developer key (the Basic-auth password).
///
/// `Debug` and `Display` print `[redacted]`, so the key cannot reach a log
/// line, an error message or a panic through formatting. The only way to
/// read it is [`DeveloperKey::expose`], used when building the request.
#[derive(Clone, PartialEq, Eq)]
pub struct DeveloperKey(String);

impl DeveloperKey {
    /// Wraps a key.
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        DeveloperKey(key.into())
    }

    /// The key itself; call only where it must go on the wire.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeveloperKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeveloperKey([redacted])")
    }
}

impl fmt::Display for DeveloperKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for DeveloperKey {
    fn from(value: String) -> Self {
        DeveloperKey(value)
    }
}

/// Email and developer key for HTTP Basic auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The Fuse account's email (the Basic-auth user).
    pub email: String,
    /// The developer key (the Basic-auth password).
    pub developer_key: DeveloperKey,
}

impl Credentials {
    /// Email and key together.
    #[must_use]
    pub fn new(email: impl Into<String>, developer_key: impl Into<String>) -> Self {
        Credentials { email: email.into(), developer_key: DeveloperKey::new(developer_key) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_formats() {
        let creds = Credentials::new("ops@example.com", "s3cr3t-key");
        assert!(!format!("{creds:?}").contains("s3cr3t"));
        assert!(!format!("{}", creds.developer_key).contains("s3cr3t"));
        assert_eq!(creds.developer_key.expose(), "s3cr3t-key");
    }
}

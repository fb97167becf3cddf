//! Errors of connecting and of creating or opening objects on a server.

/// Why a connection, or the creation or opening of a queue, lock, event or value, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The server could not be reached, or refused the call (wrong password, no permission).
    #[error("Redis unavailable: {reason}")]
    Unavailable {
        /// What the client reported.
        reason: String,
    },
    /// A bad URL, name, prefix or setting.
    #[error("invalid argument: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// `open` of a name nothing was created under.
    #[error("no {kind} named {name:?} on the server")]
    NotFound {
        /// What was looked for (`queue`, `value`).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The name exists with another kind, element type, capacity or format version.
    #[error("{name:?} exists with {what} {found:?}, not {expected:?}")]
    Mismatch {
        /// The name.
        name: String,
        /// What differs (`kind`, `type`, `capacity`, `version`).
        what: &'static str,
        /// What this call asked for.
        expected: String,
        /// What the server holds.
        found: String,
    },
    /// A stored value failed its HMAC check or could not be decoded as the requested type.
    #[error("value could not be read: {reason}")]
    Unreadable {
        /// What went wrong.
        reason: String,
    },
    /// The object was created with an auth key and this connection has none, or the
    /// reverse: its entries could not be checked, so it is not opened.
    #[error("{name:?} {reason}")]
    AuthMismatch {
        /// The name.
        name: String,
        /// Which way round.
        reason: &'static str,
    },
}

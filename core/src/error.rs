//! The core crate's error type.

/// Errors of configuration and input validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is wrong; `field` is its dotted path.
    #[error("bad configuration{}: {message}", if field.is_empty() { String::new() } else { format!(" at `{field}`") })]
    Config {
        /// Dotted path of the field (`signals[0].windows[1].granularity`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A record given by a client is invalid.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

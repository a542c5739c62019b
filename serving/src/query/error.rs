//! Why a ranking request was refused. Every error names the query parameter it is about and
//! carries a stable snake_case code; all of them are the caller's mistake (HTTP 400).

use std::fmt;

/// A ranking request that cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// A parameter tidal does not know (a typo, usually).
    UnknownParameter {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter of a feature this version does not serve yet (`cohort`, `user`, `q`...).
    UnsupportedParameter {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A value that does not parse or is out of range.
    InvalidParameter {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// `profile=` names neither a built-in nor a declared profile.
    UnknownProfile {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A personalised profile (`for_you`, `following`), not available yet.
    UnsupportedProfile {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A signal type the schema does not declare.
    UnknownSignal {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A window a used signal type does not declare.
    UndeclaredWindow {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A half-life a used signal type does not declare.
    UndeclaredHalfLife {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// `limit` above the maximum.
    LimitTooLarge {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// A cursor tidal did not hand out.
    InvalidCursor {
        /// The parameter.
        param: String,
        /// What is wrong.
        message: String,
    },
}

impl QueryError {
    /// The stable error code answered in `{"error": {"code": ..}}`.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::UnknownParameter { .. } => "unknown_parameter",
            QueryError::UnsupportedParameter { .. } => "unsupported_parameter",
            QueryError::InvalidParameter { .. } => "invalid_parameter",
            QueryError::UnknownProfile { .. } => "unknown_profile",
            QueryError::UnsupportedProfile { .. } => "unsupported_profile",
            QueryError::UnknownSignal { .. } => "unknown_signal",
            QueryError::UndeclaredWindow { .. } => "undeclared_window",
            QueryError::UndeclaredHalfLife { .. } => "undeclared_half_life",
            QueryError::LimitTooLarge { .. } => "limit_too_large",
            QueryError::InvalidCursor { .. } => "invalid_cursor",
        }
    }

    fn parts(&self) -> (&str, &str) {
        match self {
            QueryError::UnknownParameter { param, message }
            | QueryError::UnsupportedParameter { param, message }
            | QueryError::InvalidParameter { param, message }
            | QueryError::UnknownProfile { param, message }
            | QueryError::UnsupportedProfile { param, message }
            | QueryError::UnknownSignal { param, message }
            | QueryError::UndeclaredWindow { param, message }
            | QueryError::UndeclaredHalfLife { param, message }
            | QueryError::LimitTooLarge { param, message }
            | QueryError::InvalidCursor { param, message } => (param, message),
        }
    }

    /// The query parameter the error is about.
    pub fn param(&self) -> &str {
        self.parts().0
    }

    /// The human-readable explanation (also the `Display` text).
    pub fn message(&self) -> &str {
        self.parts().1
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for QueryError {}

/// Shorthand constructors used by the parser.
pub(crate) fn invalid(param: &str, message: impl Into<String>) -> QueryError {
    QueryError::InvalidParameter {
        param: param.into(),
        message: message.into(),
    }
}

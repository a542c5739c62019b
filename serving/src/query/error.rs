//! Why a ranking request was refused. Every error names the query parameter it is about and
//! carries a stable snake_case code; all of them are the caller's mistake (HTTP 400).

/// What kind of mistake a [`QueryError`] is; each has a stable code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// A parameter tidal does not know (a typo, usually).
    UnknownParameter,
    /// A parameter of a feature this version does not serve.
    UnsupportedParameter,
    /// A value that does not parse or is out of range.
    InvalidParameter,
    /// `profile=` names neither a built-in nor a declared profile.
    UnknownProfile,
    /// A profile this version does not serve.
    UnsupportedProfile,
    /// A signal type the schema does not declare.
    UnknownSignal,
    /// A window a used signal type does not declare.
    UndeclaredWindow,
    /// A half-life a used signal type does not declare.
    UndeclaredHalfLife,
    /// `limit` above the maximum.
    LimitTooLarge,
    /// A cursor tidal did not hand out.
    InvalidCursor,
    /// `cohort=` names a dimension the schema does not declare.
    UnknownDimension,
    /// A parameter given more than once (which one was meant cannot be told).
    RepeatedParameter,
}

impl QueryErrorKind {
    /// The stable error code answered in `{"error": {"code": ..}}`.
    pub fn code(self) -> &'static str {
        match self {
            QueryErrorKind::UnknownParameter => "unknown_parameter",
            QueryErrorKind::UnsupportedParameter => "unsupported_parameter",
            QueryErrorKind::InvalidParameter => "invalid_parameter",
            QueryErrorKind::UnknownProfile => "unknown_profile",
            QueryErrorKind::UnsupportedProfile => "unsupported_profile",
            QueryErrorKind::UnknownSignal => "unknown_signal",
            QueryErrorKind::UndeclaredWindow => "undeclared_window",
            QueryErrorKind::UndeclaredHalfLife => "undeclared_half_life",
            QueryErrorKind::LimitTooLarge => "limit_too_large",
            QueryErrorKind::InvalidCursor => "invalid_cursor",
            QueryErrorKind::UnknownDimension => "unknown_dimension",
            QueryErrorKind::RepeatedParameter => "repeated_parameter",
        }
    }
}

/// A ranking request that cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// What kind of mistake.
    pub kind: QueryErrorKind,
    /// The query parameter it is about.
    pub param: String,
    /// The human-readable explanation (also the `Display` text).
    pub message: String,
}

/// The first name that `names` holds twice, if any.
pub fn repeated<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

impl QueryError {
    /// The error for parameter `name` given more than once.
    pub fn repeated(name: &str) -> QueryError {
        QueryError::new(
            QueryErrorKind::RepeatedParameter,
            name,
            format!("{name}: given more than once; give each parameter once"),
        )
    }

    /// An error of `kind` about `param`.
    pub fn new(kind: QueryErrorKind, param: &str, message: impl Into<String>) -> QueryError {
        QueryError {
            kind,
            param: param.into(),
            message: message.into(),
        }
    }

    /// The stable error code answered in `{"error": {"code": ..}}`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The query parameter the error is about.
    pub fn param(&self) -> &str {
        &self.param
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// An invalid value of `param`.
pub(crate) fn invalid(param: &str, message: impl Into<String>) -> QueryError {
    QueryError::new(QueryErrorKind::InvalidParameter, param, message)
}

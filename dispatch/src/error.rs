//! Errors of the dispatch service, each with the HTTP status it answers with.

use doorstep_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("too many requests: retry in {0} s")]
    TooManyRequests(u64),
    #[error("the body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request's body did not arrive in time; send it again")]
    Timeout,
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("storage: {0}")]
    Storage(#[from] crate::store::db::StorageError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl DispatchError {
    /// The HTTP status for this error: the caller's mistakes are 4xx, ours are 500.
    pub fn status(&self) -> u16 {
        match self {
            DispatchError::BadRequest(_) => 400,
            DispatchError::Unauthorized(_) => 401,
            DispatchError::Forbidden(_) => 403,
            DispatchError::NotFound(_) => 404,
            DispatchError::MethodNotAllowed => 405,
            DispatchError::Conflict(_) => 409,
            DispatchError::Timeout => 408,
            DispatchError::TooLarge(_) => 413,
            DispatchError::TooManyRequests(_) => 429,
            DispatchError::Core(
                CoreError::InvalidInput { .. } | CoreError::BatchRejected(_) | CoreError::MalformedCode,
            ) => 400,
            DispatchError::Core(_) | DispatchError::Storage(_) | DispatchError::Io(_) => 500,
        }
    }
}

pub type Result<T, E = DispatchError> = std::result::Result<T, E>;

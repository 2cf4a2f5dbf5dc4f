//! The one place where internal errors become HTTP statuses and error codes.

use crate::host::ModuleError;
use crate::modules::ModulesError;
use crate::room::RoomError;
use hyper::StatusCode;
use outpost_proto::api::ErrorBody;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Precise message.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", m)
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong admin token (Authorization: Bearer ...)")
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", m)
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    /// 413.
    pub fn too_large(got: u64, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("body of {got} bytes is over the limit of {limit} bytes"),
        )
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.message.clone(), code: self.code.to_string() }
    }
}

impl From<ModulesError> for ApiError {
    fn from(e: ModulesError) -> Self {
        match e {
            ModulesError::Invalid(m) => {
                let code = match m {
                    ModuleError::NotWasm => "not-wasm",
                    ModuleError::CoreModule => "not-a-component",
                    ModuleError::Invalid(_) => "invalid-component",
                    ModuleError::WrongWorld(_) => "wrong-world",
                };
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, m.to_string())
            }
            ModulesError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "unknown-module", e.to_string()),
            ModulesError::Io(_) => Self::internal(e.to_string()),
        }
    }
}

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> Self {
        let (status, code) = match &e {
            RoomError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            RoomError::Exists(_) => (StatusCode::CONFLICT, "room-exists"),
            RoomError::Faulted { .. } => (StatusCode::CONFLICT, "room-faulted"),
            RoomError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            RoomError::Guest(_) => (StatusCode::INTERNAL_SERVER_ERROR, "module-fault"),
            RoomError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "node-full"),
            RoomError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            RoomError::WorkerGone => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, e.to_string())
    }
}

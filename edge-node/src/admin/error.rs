//! The one place where internal errors become HTTP statuses and error codes.

use crate::host::ModuleError;
use crate::modules::ModulesError;
use crate::room::RoomError;
use hyper::StatusCode;

/// An error reply: the shared shape of every API's errors.
pub type ApiError = outpost_net::http::HttpError;

/// 401 for the admin API.
pub fn unauthorized() -> ApiError {
    ApiError::unauthorized("missing or wrong admin token (Authorization: Bearer ...)")
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
            RoomError::Moving(_) => (StatusCode::CONFLICT, "room-moving"),
            RoomError::WorkerGone => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, e.to_string())
    }
}

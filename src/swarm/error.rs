//! [`SwarmError`]: every failure of the Docker Engine API, with the object, the operation and
//! Docker's own message.

/// Errors of the Swarm client.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The address is malformed or the daemon does not answer at all.
    #[error("cannot connect to Docker at {address}: {message}")]
    Connect { address: String, message: String },
    /// The object does not exist (HTTP 404).
    #[error("Docker {op} of {object}: not found ({message})")]
    NotFound {
        op: &'static str,
        object: String,
        message: String,
    },
    /// The object exists already, or is still used by another (HTTP 409 / "in use").
    #[error("Docker {op} of {object}: conflict ({message})")]
    Conflict {
        op: &'static str,
        object: String,
        message: String,
    },
    /// A service update kept losing the race against other writers of the service.
    #[error("Docker {op} of {object}: update out of sequence {attempts} times in a row")]
    OutOfSequence {
        op: &'static str,
        object: String,
        attempts: u32,
    },
    /// This daemon is not a Swarm manager (HTTP 503 on Swarm endpoints).
    #[error("Docker {op} of {object}: this daemon is not a Swarm manager ({message})")]
    NotManager {
        op: &'static str,
        object: String,
        message: String,
    },
    /// Any other error Docker returned, or a transport failure.
    #[error("Docker {op} of {object} failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Api {
        op: &'static str,
        object: String,
        status: Option<u16>,
        message: String,
    },
    /// Docker answered with something this client cannot use (e.g. no id in a create response).
    #[error("Docker {op} of {object}: unexpected answer: {message}")]
    Unexpected {
        op: &'static str,
        object: String,
        message: String,
    },
}

impl SwarmError {
    /// Maps a bollard error of operation `op` on `object`.
    pub fn from_bollard(op: &'static str, object: &str, e: bollard::errors::Error) -> SwarmError {
        use bollard::errors::Error as B;
        let object = object.to_string();
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => SwarmError::NotFound {
                    op,
                    object,
                    message,
                },
                409 => SwarmError::Conflict {
                    op,
                    object,
                    message,
                },
                503 if message.contains("not a swarm manager") || message.contains("swarm") => {
                    SwarmError::NotManager {
                        op,
                        object,
                        message,
                    }
                }
                // Removing a config or secret a service still uses is a 400/500 "in use".
                _ if message.contains("is in use") => SwarmError::Conflict {
                    op,
                    object,
                    message,
                },
                s => SwarmError::Api {
                    op,
                    object,
                    status: Some(s),
                    message,
                },
            },
            other => SwarmError::Api {
                op,
                object,
                status: None,
                message: other.to_string(),
            },
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SwarmError::NotFound { .. })
    }

    /// True for a conflict (name taken, object in use).
    pub fn is_conflict(&self) -> bool {
        matches!(self, SwarmError::Conflict { .. })
    }

    /// True for Swarm's answer to a stale version index (retry on a fresh read).
    pub fn is_out_of_sequence(&self) -> bool {
        match self {
            SwarmError::Api { message, .. } => message.contains("update out of sequence"),
            SwarmError::OutOfSequence { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn maps_docker_answers_to_kinds() {
        let e =
            SwarmError::from_bollard("inspect", "service x", server(404, "service x not found"));
        assert!(e.is_not_found());
        let e = SwarmError::from_bollard(
            "update",
            "service x",
            server(
                500,
                "rpc error: code = Unknown desc = update out of sequence",
            ),
        );
        assert!(e.is_out_of_sequence());
        assert!(e.to_string().contains("HTTP 500"), "{e}");
        let e = SwarmError::from_bollard(
            "remove",
            "config c",
            server(
                400,
                "rpc error: code = InvalidArgument desc = config 'c' is in use by the following service: s",
            ),
        );
        assert!(e.is_conflict());
        let e = SwarmError::from_bollard(
            "inspect",
            "swarm",
            server(
                503,
                "This node is not a swarm manager. Use \"docker swarm init\"",
            ),
        );
        assert!(matches!(e, SwarmError::NotManager { .. }));
    }
}

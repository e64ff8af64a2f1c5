//! What can go wrong in a `ringmqctl` run, and the exit code each maps to (README's table).

use std::fmt;

/// Exit codes: rabbitmqctl's where it has one (EX_USAGE, EX_UNAVAILABLE, sysexits.h).
pub const EXIT_OK: i32 = 0;
/// 404 and every other error the broker or the local side reports.
pub const EXIT_ERROR: i32 = 1;
/// 401/403: the credentials were refused or the user lacks the tag the call needs.
pub const EXIT_AUTH: i32 = 2;
/// EX_USAGE: unknown verb, missing argument, unknown column.
pub const EXIT_USAGE: i32 = 64;
/// EX_UNAVAILABLE: no answer from the management API (refused, timed out, not HTTP).
pub const EXIT_UNAVAILABLE: i32 = 69;

#[derive(Debug)]
pub enum CtlError {
    /// The command line is wrong; the text says how.
    Usage(String),
    /// No HTTP answer from `url`.
    Unreachable { url: String, reason: String },
    /// 401 or 403 from the API.
    Auth {
        status: u16,
        user: String,
        reason: String,
    },
    /// 404: `what` names the object looked for.
    NotFound { what: String },
    /// Any other non-2xx answer, with the API's own reason.
    Api { status: u16, reason: String },
    /// Local trouble: a file that cannot be read or written, an answer that is not JSON.
    Other(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable { .. } => EXIT_UNAVAILABLE,
            CtlError::Auth { .. } => EXIT_AUTH,
            CtlError::NotFound { .. } | CtlError::Api { .. } | CtlError::Other(_) => EXIT_ERROR,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Usage(text) => write!(f, "Error: {text}"),
            CtlError::Unreachable { url, reason } => write!(
                f,
                "Error: unable to perform an operation on the broker at {url}: {reason}. \
                 Is it running, and is --url (or RINGMQCTL_URL) its management API?"
            ),
            CtlError::Auth {
                status: 401,
                user,
                reason,
            } => write!(
                f,
                "Error: authentication failed for user '{user}' (401: {reason}). \
                 Check --username/--password (or RINGMQCTL_USERNAME/RINGMQCTL_PASSWORD)."
            ),
            CtlError::Auth {
                status,
                user,
                reason,
            } => write!(
                f,
                "Error: user '{user}' is not allowed to do this ({status}: {reason})"
            ),
            CtlError::NotFound { what } => write!(f, "Error: {what} does not exist (404)"),
            CtlError::Api { status, reason } => {
                write!(f, "Error: the broker answered {status}: {reason}")
            }
            CtlError::Other(text) => write!(f, "Error: {text}"),
        }
    }
}

//! AMQP reply codes (the spec's constants) as sent in connection.close and channel.close.

pub const REPLY_SUCCESS: u16 = 200;
pub const CONTENT_TOO_LARGE: u16 = 311;
pub const NO_ROUTE: u16 = 312;
pub const NO_CONSUMERS: u16 = 313;
pub const CONNECTION_FORCED: u16 = 320;
pub const INVALID_PATH: u16 = 402;
pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_FOUND: u16 = 404;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
pub const FRAME_ERROR: u16 = 501;
pub const SYNTAX_ERROR: u16 = 502;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const RESOURCE_ERROR: u16 = 506;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;

/// The constant's name as RabbitMQ prefixes its close reply texts ("NOT_FOUND - no queue 'q'").
pub fn reply_text(code: u16) -> &'static str {
    match code {
        REPLY_SUCCESS => "REPLY_SUCCESS",
        CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
        NO_ROUTE => "NO_ROUTE",
        NO_CONSUMERS => "NO_CONSUMERS",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        INVALID_PATH => "INVALID_PATH",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        RESOURCE_ERROR => "RESOURCE_ERROR",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

/// Hard errors close the whole connection; soft errors (3xx, 403-406) close only the channel.
/// Unknown codes count as hard: when in doubt, the connection is the safe scope.
pub fn is_hard_error(code: u16) -> bool {
    !matches!(
        code,
        REPLY_SUCCESS
            | CONTENT_TOO_LARGE
            | NO_ROUTE
            | NO_CONSUMERS
            | ACCESS_REFUSED
            | NOT_FOUND
            | RESOURCE_LOCKED
            | PRECONDITION_FAILED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_and_soft_classes_match_the_spec() {
        for soft in [311, 312, 313, 403, 404, 405, 406] {
            assert!(!is_hard_error(soft), "{soft}");
        }
        for hard in [320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541] {
            assert!(is_hard_error(hard), "{hard}");
        }
        assert_eq!(reply_text(NOT_FOUND), "NOT_FOUND");
        assert_eq!(reply_text(999), "UNKNOWN");
    }
}

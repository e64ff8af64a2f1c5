//! Codec errors. Each carries what a close reply text needs and maps to one AMQP reply code.

use super::reply_code;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    // ---- frame level: 501 FRAME_ERROR ----
    #[error("unknown frame type {frame_type}")]
    BadFrameType { frame_type: u8 },
    #[error("frame end octet is {found:#04x}, expected 0xce")]
    MissingFrameEnd { found: u8 },
    /// `size` is the whole frame (header + payload + end octet) as declared by the peer.
    #[error("frame size {size} exceeds frame_max {max}")]
    FrameTooLarge { size: u64, max: u32 },
    #[error("heartbeat frame with a {size}-byte payload")]
    BadHeartbeat { size: u32 },
    #[error("{frame} frame payload of {size} bytes is shorter than its fixed header")]
    ShortFramePayload { frame: &'static str, size: usize },

    // ---- argument and field syntax: 502 SYNTAX_ERROR ----
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unknown field value type {type_letter:#04x}")]
    BadFieldType { type_letter: u8 },
    #[error("string is not valid UTF-8")]
    BadUtf8,
    #[error("field tables/arrays nested deeper than {max}")]
    NestingTooDeep { max: usize },
    #[error("{extra} unexpected bytes after the method arguments")]
    TrailingBytes { extra: usize },
    #[error("content header property flags {flags:#06x} name an unknown property")]
    UnknownProperty { flags: u16 },
    #[error("more than {max} content header property flag words")]
    TooManyPropertyFlagWords { max: usize },

    // ---- 540 NOT_IMPLEMENTED (RabbitMQ answers unknown methods the same way) ----
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },

    // ---- 505 UNEXPECTED_FRAME ----
    /// Only basic (60) carries content; a header for any other class cannot follow a method.
    #[error("content header for class {class_id}, which has no content")]
    UnexpectedContentClass { class_id: u16 },
}

impl ProtocolError {
    pub fn reply_code(&self) -> u16 {
        match self {
            ProtocolError::BadFrameType { .. }
            | ProtocolError::MissingFrameEnd { .. }
            | ProtocolError::FrameTooLarge { .. }
            | ProtocolError::BadHeartbeat { .. }
            | ProtocolError::ShortFramePayload { .. } => reply_code::FRAME_ERROR,
            ProtocolError::Truncated { .. }
            | ProtocolError::BadFieldType { .. }
            | ProtocolError::BadUtf8
            | ProtocolError::NestingTooDeep { .. }
            | ProtocolError::TrailingBytes { .. }
            | ProtocolError::UnknownProperty { .. }
            | ProtocolError::TooManyPropertyFlagWords { .. } => reply_code::SYNTAX_ERROR,
            ProtocolError::UnknownMethod { .. } => reply_code::NOT_IMPLEMENTED,
            ProtocolError::UnexpectedContentClass { .. } => reply_code::UNEXPECTED_FRAME,
        }
    }
}

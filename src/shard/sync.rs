//! The executor-local wake-up primitives live in `crate::sync` (the cluster node uses them too).

pub use crate::sync::{oneshot, Notify, OneshotReceiver, OneshotSender};

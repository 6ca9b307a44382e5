//! The spool: a durable queue for verified webhooks the state store could not take. IM never
//! retries an after-event callback and WeChat gives up after three tries, so an event that
//! passed its checks while the store was throttled or unreachable is kept here (Amazon SQS in
//! AWS, a file of its own locally) and applied later by a consumer, through the same code as a
//! first delivery. The port knows messages only as text; what they hold is the handlers'.
//!
//! Semantics are SQS's standard queue: at-least-once delivery; a received message is hidden
//! for a while and comes back unless deleted; [`Spool::retry_after`] sets when; a message
//! received more than [`MAX_RECEIVES`] times is moved to the dead-letter queue instead.

#[cfg(feature = "embedded")]
mod embedded;
#[cfg(feature = "spool")]
mod sqs;

use std::fmt;

use async_trait::async_trait;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedSpool;
#[cfg(feature = "spool")]
pub use sqs::SqsSpool;

/// Receives after which a message goes to the dead-letter queue (the template's
/// `maxReceiveCount`). With the default first pause of 30 s doubling to 15 minutes, that is
/// about two and a half hours of tries.
pub const MAX_RECEIVES: u32 = 15;

/// The longest pause between two tries of one message.
pub const MAX_RETRY_SECS: u32 = 900;

/// How long a received message stays hidden before it may be received again (the template's
/// `VisibilityTimeout`): longer than a consumer takes for a batch.
pub const VISIBILITY_SECS: u32 = 360;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spool unavailable: {0}")]
pub struct SpoolError(pub String);

/// A message as received: its body, the handle that deletes it or reschedules it, and how many
/// times it has been received (1 on the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub handle: String,
    pub body: String,
    pub receive_count: u32,
}

#[async_trait]
pub trait Spool: Send + Sync + fmt::Debug {
    /// Keeps a message durably (acknowledged only once it is).
    async fn send(&self, body: &str) -> Result<(), SpoolError>;
    /// Up to `max` messages that are due, each hidden for [`VISIBILITY_SECS`].
    async fn receive(&self, max: usize) -> Result<Vec<Received>, SpoolError>;
    /// Removes a message that was applied.
    async fn delete(&self, handle: &str) -> Result<(), SpoolError>;
    /// Makes a received message due again in `secs`.
    async fn retry_after(&self, handle: &str, secs: u32) -> Result<(), SpoolError>;
    /// Where it keeps messages, for logs and the serve banner (never a secret).
    fn describe(&self) -> String;
}

/// The pause before a message received `receive_count` times is tried again: `first`, doubling
/// per receive, at most [`MAX_RETRY_SECS`].
pub fn backoff_secs(first: u32, receive_count: u32) -> u32 {
    let doublings = receive_count.saturating_sub(1).min(16);
    first
        .max(1)
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_fifteen_minutes() {
        let pauses: Vec<u32> = (1..=7).map(|n| backoff_secs(30, n)).collect();
        assert_eq!(pauses, [30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(backoff_secs(30, 100), 900);
        assert_eq!(backoff_secs(0, 1), 1);
        let total: u32 = (1..MAX_RECEIVES).map(|n| backoff_secs(30, n)).sum();
        assert!(total >= 2 * 3600, "{total}");
    }
}

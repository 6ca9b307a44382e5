//! What a verified WeChat push leads to, decided before anything is written: the writes to
//! commit with its dedupe marker, the passive reply, and the decision to log.

use crate::store::Write;

/// What a push came to, logged and counted by [`Decision::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    LedgerPopup,
    LedgerChange,
    DeliveryRecorded,
    FollowerWelcomed,
    FollowerLeft,
    ForwardedToAgent,
    KeptNoAgentConfigured,
    /// A menu click or QR scan opened a reply allowance, and did nothing else.
    AllowanceOpened,
    /// A mini-program user entered the customer-service session.
    SessionEntered,
    IgnoredEvent,
    IgnoredUnknown,
    Accepted,
    /// A retry of a delivery already applied: nothing was done again.
    Duplicate,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::LedgerPopup => "ledger_popup",
            Decision::LedgerChange => "ledger_change",
            Decision::DeliveryRecorded => "delivery_recorded",
            Decision::FollowerWelcomed => "follower_welcomed",
            Decision::FollowerLeft => "follower_left",
            Decision::ForwardedToAgent => "forwarded_to_agent",
            Decision::KeptNoAgentConfigured => "kept_no_agent_configured",
            Decision::AllowanceOpened => "allowance_opened",
            Decision::SessionEntered => "session_entered",
            Decision::IgnoredEvent => "ignored_event",
            Decision::IgnoredUnknown => "ignored_unknown",
            Decision::Accepted => "accepted",
            Decision::Duplicate => "duplicate",
        }
    }
}

/// What a push leads to: writes applied atomically with the dedupe marker, and the passive
/// reply text (if any).
#[derive(Debug)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub reply: Option<String>,
    pub decision: Decision,
}

impl Plan {
    pub fn nothing(decision: Decision) -> Plan {
        Plan {
            writes: vec![],
            reply: None,
            decision,
        }
    }

    pub fn writes(writes: Vec<Write>, decision: Decision) -> Plan {
        Plan {
            writes,
            reply: None,
            decision,
        }
    }
}

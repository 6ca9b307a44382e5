//! WeChat's customer-service reply allowance: `cgi-bin/message/custom/send` is accepted only
//! inside an allowance opened by the user's own action, and allowances do not add up: each new
//! action resets the count to that action's limit and the validity to that action's length.
//!
//! Where the figures come from:
//! - Official account, since 12 June 2023 (rolled out to existing accounts by about August
//!   2023): a message from the user opens 5 replies for 48 hours (it was 20); a menu click
//!   (`click`, `scancode_push`, `scancode_waitmsg`), a follow or a parametric QR scan opens 3
//!   for 1 minute. Source: WeChat's announcement of 2023-05-30 as reported by IT之家, and the
//!   chatalog mirror of the customer-service message doc.
//! - Mini program (the current mirror of the mini-program customer-service message doc): a
//!   message from the user opens 5 replies for 48 hours; entering the customer-service session
//!   (`user_enter_tempsession`, from `<button open-type="contact">`) opens 2 for 1 minute. The
//!   older doc said 3 / 48 h and 1 / 1 min.
//!
//! A reply WeChat refuses answers 45015 (the allowance has expired, or the user unfollowed) or
//! 45047 (its count is used up).

/// The user's action that opened the allowance in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Official account: a message from the follower.
    OaMessage,
    /// Official account: a follow (with or without a QR scene).
    OaFollow,
    /// Official account: a menu click (`click`, `scancode_push`, `scancode_waitmsg`).
    OaMenu,
    /// Official account: a parametric QR code scanned by a follower (`SCAN`).
    OaScan,
    /// Mini program: a message from the user in the customer-service session.
    MpMessage,
    /// Mini program: the user entered the customer-service session (`user_enter_tempsession`).
    MpSession,
}

const MINUTE: i64 = 60;
const HOURS_48: i64 = 48 * 3600;

impl Opening {
    pub const ALL: [Opening; 6] = [
        Opening::OaMessage,
        Opening::OaFollow,
        Opening::OaMenu,
        Opening::OaScan,
        Opening::MpMessage,
        Opening::MpSession,
    ];

    /// How many customer-service replies WeChat allows after this action.
    pub fn replies(self) -> i64 {
        match self {
            Opening::OaMessage | Opening::MpMessage => 5,
            Opening::OaFollow | Opening::OaMenu | Opening::OaScan => 3,
            Opening::MpSession => 2,
        }
    }

    /// For how many seconds after the action they may be sent.
    pub fn valid_secs(self) -> i64 {
        match self {
            Opening::OaMessage | Opening::MpMessage => HOURS_48,
            Opening::OaFollow | Opening::OaMenu | Opening::OaScan | Opening::MpSession => MINUTE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Opening::OaMessage => "message",
            Opening::OaFollow => "follow",
            Opening::OaMenu => "menu",
            Opening::OaScan => "scan",
            Opening::MpMessage => "mp_message",
            Opening::MpSession => "mp_session",
        }
    }

    pub fn parse(s: &str) -> Option<Opening> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The action in words, for the agent.
    pub fn describe(self) -> &'static str {
        match self {
            Opening::OaMessage | Opening::MpMessage => "their last message",
            Opening::OaFollow => "their follow",
            Opening::OaMenu => "their menu click",
            Opening::OaScan => "their QR-code scan",
            Opening::MpSession => "their entering the customer-service session",
        }
    }

    /// The official-account menu events that open an allowance (the `Event` value as pushed;
    /// WeChat spells the click event `CLICK`).
    pub fn oa_menu_event(event: &str) -> bool {
        matches!(
            event.to_ascii_lowercase().as_str(),
            "click" | "scancode_push" | "scancode_waitmsg"
        )
    }
}

/// Words for a length of time, for the agent ("48 hours", "1 minute").
pub fn describe_secs(secs: i64) -> String {
    match secs {
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_are_wechats() {
        assert_eq!(
            (
                Opening::OaMessage.replies(),
                Opening::OaMessage.valid_secs()
            ),
            (5, 172_800)
        );
        for o in [Opening::OaFollow, Opening::OaMenu, Opening::OaScan] {
            assert_eq!((o.replies(), o.valid_secs()), (3, 60));
        }
        assert_eq!(
            (
                Opening::MpSession.replies(),
                Opening::MpSession.valid_secs()
            ),
            (2, 60)
        );
        for o in Opening::ALL {
            assert_eq!(Opening::parse(o.as_str()), Some(o));
        }
        assert!(Opening::oa_menu_event("CLICK") && Opening::oa_menu_event("scancode_waitmsg"));
        assert!(!Opening::oa_menu_event("VIEW"), "a link opens no allowance");
        assert_eq!(describe_secs(172_800), "48 hours");
        assert_eq!(describe_secs(60), "1 minute");
    }
}

//! A WeChat app as the protocol sees it: which kind, its appid and its push credentials.

use std::fmt;

use super::crypto::MessageCrypto;
use crate::protocol::secret::Secret;

/// Which WeChat app a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppKind {
    /// Mini program.
    Mp,
    /// Official account.
    Oa,
}

impl AppKind {
    pub const ALL: [AppKind; 2] = [AppKind::Mp, AppKind::Oa];

    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Mp => "mp",
            AppKind::Oa => "oa",
        }
    }

    pub fn parse(s: &str) -> Option<AppKind> {
        match s {
            "mp" => Some(AppKind::Mp),
            "oa" => Some(AppKind::Oa),
            _ => None,
        }
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct WechatApp {
    pub kind: AppKind,
    pub appid: String,
    pub secret: Secret,
    pub token: Secret,
    /// The EncodingAESKey as configured; kept only so that the log tests can look for it.
    pub aes_key: Option<Secret>,
    /// Present when an EncodingAESKey is configured (compatible and safe modes).
    pub crypto: Option<MessageCrypto>,
    /// Whether a push without `encrypt_type=aes` is accepted. Without an AES key that is the only
    /// mode; with one it is refused unless `WECHAT_*_ALLOW_PLAINTEXT` is set, because the
    /// plaintext `signature` does not cover the body and would let anyone holding one push URL
    /// post any body (a downgrade from safe mode).
    pub allow_plaintext: bool,
}

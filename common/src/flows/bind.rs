//! Store a proven binding: an IM user (proven by its UserSig) and the openid WeChat gave for a
//! fresh `wx.login` code, both directions in one transaction with the code's used-marker, so a
//! replayed request binds nothing.

use crate::app::App;
use crate::config::AppKind;
use crate::records::binding::{self, Binding};
use crate::records::login_code;
use crate::store::{StoreError, Txn, TxnError};

/// The named writes of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The login code's used-marker.
    Code,
    /// A direction of the binding, conditional on what was read.
    Binding,
}

/// Why nothing was bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The login code was used before.
    CodeUsed,
    /// Another request bound this user or openid at the same moment.
    Conflict,
    Store(StoreError),
}

/// Binds `user_id` to `openid` for the mini program; returns the binding it replaced, if the
/// user was bound to another openid.
pub async fn bind(
    app: &App,
    appid: &str,
    code: &str,
    user_id: &str,
    openid: &str,
    unionid: Option<&str>,
) -> Result<Option<Binding>, Refused> {
    let now = app.now();
    let store = &*app.store;
    let (writes, previous) =
        binding::bind_writes(store, user_id, AppKind::Mp, openid, unionid, now)
            .await
            .map_err(Refused::Store)?;
    let mut txn = Txn::new();
    for w in writes {
        txn.named(Guard::Binding, w);
    }
    txn.named(Guard::Code, login_code::used(appid, code, now));
    match txn.commit(store).await {
        Ok(()) => Ok(previous),
        Err(TxnError::Condition(Some(Guard::Code))) => Err(Refused::CodeUsed),
        Err(TxnError::Condition(_)) => Err(Refused::Conflict),
        Err(TxnError::Store(e)) => Err(Refused::Store(e)),
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::bench;

    #[tokio::test]
    async fn a_login_code_binds_once() {
        let b = bench(&[]);
        assert_eq!(
            bind(&b.app, "wxapp", "code1", "u1", "o1", None).await,
            Ok(None)
        );
        assert_eq!(
            bind(&b.app, "wxapp", "code1", "u2", "o2", None).await,
            Err(Refused::CodeUsed)
        );
        let moved = bind(&b.app, "wxapp", "code2", "u1", "o3", None)
            .await
            .unwrap();
        assert_eq!(moved.map(|p| p.openid), Some("o1".to_owned()));
        let now = binding::by_user(&*b.app.store, "u1", AppKind::Mp)
            .await
            .unwrap();
        assert_eq!(now.map(|p| p.openid), Some("o3".to_owned()));
    }
}

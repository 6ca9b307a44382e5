//! An operator's subscribe message ("your work order is done"): queued as an outbox job, so the
//! same rules hold as for offline notifications (validated data, one credit spent per send,
//! retries with backoff, an end state), and read back by its id.

use tracing::info;

use crate::app::App;
use crate::records::binding;
use crate::records::delivery::{self, Reported};
use crate::records::outbox::{self, AdminSend, Job, OutboxItem, Status};
use crate::store::StoreError;

/// Who a send is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    UserId(String),
    Openid(String),
}

/// Why a send was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The IM user has no openid binding for the app.
    NotBound,
    /// The idempotency key was used for a different request.
    IdempotencyConflict,
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// A queued (or replayed) send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: String,
    pub status: Status,
}

/// Queues `send` (its `openid` and `fingerprint` are filled in here) for `to`. With an
/// idempotency key, the same request again answers the first one's state; a different request
/// under the same key is refused.
pub async fn submit(
    app: &App,
    to: &Recipient,
    mut send: AdminSend,
    idempotency_key: Option<&str>,
    fingerprint: impl Fn(&str) -> String,
) -> Result<Queued, Refused> {
    send.openid = match to {
        Recipient::Openid(o) => o.clone(),
        Recipient::UserId(u) => match binding::by_user(&*app.store, u, send.app).await? {
            Some(b) => b.openid,
            None => return Err(Refused::NotBound),
        },
    };
    send.fingerprint = fingerprint(&send.openid);
    let id = match idempotency_key {
        Some(k) => outbox::id_for(&["send", k]),
        None => outbox::random_id(),
    };
    let fingerprint = send.fingerprint.clone();
    let job = outbox::enqueue(&id, &Job::Send(send), app.queueing());
    match app.store.transact(job.writes().into()).await {
        Ok(()) => Ok(Queued {
            id,
            status: Status::Queued,
        }),
        Err(StoreError::ConditionFailed { .. }) => match outbox::read(&*app.store, &id).await? {
            Some(OutboxItem {
                status,
                job: Job::Send(first),
                ..
            }) if first.fingerprint == fingerprint => {
                info!(outbox_id = %id, decision = "idempotent_replay");
                Ok(Queued { id, status })
            }
            _ => Err(Refused::IdempotencyConflict),
        },
        Err(e) => Err(e.into()),
    }
}

/// A send as `GET /notify/{id}` shows it: the job, and WeChat's delivery report once it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendState {
    pub item: OutboxItem,
    pub send: AdminSend,
    pub reported: Option<Reported>,
}

/// The send with this id (`None` when there is none, or the id is another kind of job's).
pub async fn state(app: &App, id: &str) -> Result<Option<SendState>, StoreError> {
    let Some(item) = outbox::read(&*app.store, id).await? else {
        return Ok(None);
    };
    let Job::Send(send) = item.job.clone() else {
        return Ok(None);
    };
    let reported = match &item.msgid {
        Some(msgid) => delivery::reported(&*app.store, send.app, msgid).await?,
        None => None,
    };
    Ok(Some(SendState {
        item,
        send,
        reported,
    }))
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::config::AppKind;
    use crate::flows::testing::{TEMPLATE, bench};

    fn send(data: &str) -> AdminSend {
        AdminSend {
            app: AppKind::Mp,
            openid: String::new(),
            template_id: TEMPLATE.into(),
            data: data.into(),
            fingerprint: String::new(),
            requested_by: "ops".into(),
            user_id: None,
            page: None,
            miniprogram_state: None,
            lang: None,
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_replays_the_same_request_and_refuses_another() {
        let b = bench(&[]);
        let to = Recipient::Openid("o1".into());
        let fp = |d: &'static str| move |o: &str| format!("{o}|{d}");
        let a = submit(&b.app, &to, send("a"), Some("k1"), fp("a"))
            .await
            .unwrap();
        let again = submit(&b.app, &to, send("a"), Some("k1"), fp("a"))
            .await
            .unwrap();
        assert_eq!(a.id, again.id);
        assert_eq!(
            submit(&b.app, &to, send("b"), Some("k1"), fp("b")).await,
            Err(Refused::IdempotencyConflict)
        );
        let st = state(&b.app, &a.id).await.unwrap().unwrap();
        assert_eq!(
            (st.send.openid.as_str(), st.item.status),
            ("o1", Status::Queued)
        );
        assert_eq!(
            submit(
                &b.app,
                &Recipient::UserId("nobody".into()),
                send("c"),
                None,
                fp("c")
            )
            .await,
            Err(Refused::NotBound)
        );
    }
}

//! Deduplication of WeChat's retries (5 s timeout, 3 tries). The marker is written in the same
//! transaction as the effect: a retry after a failed write finds no marker and is processed; a
//! retry after success finds it and replays the recorded reply without repeating the effect.

use sha1::{Digest, Sha1};

use crate::protocol::wechat::message::{Event, Message, MessageKind};
use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, TTL_ATTR, Table, Write};

/// What identifies one delivery. MsgId alone has collided in the wild, so messages use
/// MsgId + FromUserName + CreateTime; events use FromUserName + CreateTime + Event plus what
/// distinguishes two events of the same second (EventKey, or the List's templates/msgids).
pub fn delivery_key(msg: &Message) -> String {
    let mut key = format!("{}|{}|", msg.from_user, msg.create_time);
    match &msg.kind {
        MessageKind::Event(ev) => {
            key.push_str("evt|");
            key.push_str(msg.event_name().unwrap_or(""));
            match ev {
                Event::SubscribeMsgPopup(items) | Event::SubscribeMsgChange(items) => {
                    for it in items {
                        key.push('|');
                        key.push_str(&it.template_id);
                        key.push(':');
                        key.push_str(&it.status);
                    }
                }
                Event::SubscribeMsgSent(items) => {
                    for it in items {
                        key.push('|');
                        key.push_str(&it.msg_id);
                    }
                }
                Event::Subscribe { event_key, .. } | Event::Scan { event_key, .. } => {
                    key.push('|');
                    key.push_str(event_key.as_deref().unwrap_or(""));
                }
                _ => {}
            }
        }
        _ => {
            key.push_str("msg|");
            key.push_str(msg.msg_type());
            key.push('|');
            key.push_str(msg.msg_id.as_deref().unwrap_or(""));
        }
    }
    key
}

pub fn digest(key: &str) -> String {
    hex::encode(Sha1::digest(key.as_bytes()))
}

/// The marker put, conditional on no live marker. `reply` is the passive reply text the first
/// delivery answered with, replayed to a retry whose first answer WeChat never received.
pub fn marker(scope: &str, key: &str, now: i64, ttl: i64, reply: Option<&str>) -> Write {
    let item = Item::new(keys::dedupe(scope, &digest(key)), keys::ONE)
        .with("at", now)
        .with(TTL_ATTR, now + ttl)
        .with_opt("reply", reply);
    Write::put(Table::State, item).when(Cond::NotExists)
}

/// The passive reply the first delivery of `key` answered with, if it had one.
pub async fn recorded_reply(
    store: &dyn Store,
    scope: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(Table::State, &keys::dedupe(scope, &digest(key)), keys::ONE)
        .await?
        .and_then(|m| m.s("reply").map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wechat::message::parse_message;

    #[test]
    fn distinct_events_in_one_second_get_distinct_keys() {
        let a = parse_message(br#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","MsgID":"1","ErrorCode":0,"ErrorStatus":"success"}}"#).unwrap();
        let b = parse_message(br#"{"ToUserName":"gh","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","MsgID":"2","ErrorCode":0,"ErrorStatus":"success"}}"#).unwrap();
        assert_ne!(delivery_key(&a), delivery_key(&b));
        assert_eq!(delivery_key(&a), delivery_key(&a.clone()));
    }

    #[test]
    fn messages_key_on_msgid_sender_and_time() {
        let m = parse_message(b"<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>42</MsgId></xml>").unwrap();
        assert_eq!(delivery_key(&m), "o1|5|msg|text|42");
        assert_eq!(digest("x").len(), 40);
    }
}

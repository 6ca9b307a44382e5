//! One module per stored record: its key, its attributes, how it is read, and the writes that
//! create or change it. Flows combine these writes; nothing above this layer names an attribute.

pub mod binding;
pub mod conversation;
pub mod dedupe;
pub mod delivery;
pub mod due;
pub mod keys;
pub mod kf_burst;
pub mod login_code;
pub mod notice;
pub mod notify_window;
pub mod outbox;
pub mod presence;
pub mod subscription;
pub mod token;
pub mod waiting;

use crate::store::StoreError;

/// A stored record that lacks a required attribute, or holds one of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: attribute {attr} {problem}")]
pub struct RecordError {
    pub key: String,
    pub attr: String,
    pub problem: String,
}

impl RecordError {
    pub fn new(key: String, attr: &str, problem: &str) -> Self {
        RecordError {
            key,
            attr: attr.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Attribute reads that name the record when something required is missing.
pub(crate) mod read {
    use super::RecordError;
    use crate::config::AppKind;
    use crate::store::Item;

    fn missing(i: &Item, attr: &str, problem: &str) -> RecordError {
        RecordError::new(format!("{}/{}", i.pk, i.sk), attr, problem)
    }

    pub fn s(i: &Item, attr: &str) -> Result<String, RecordError> {
        i.s(attr)
            .map(str::to_owned)
            .ok_or_else(|| missing(i, attr, "is missing (a string is required)"))
    }

    pub fn opt_s(i: &Item, attr: &str) -> Option<String> {
        i.s(attr).map(str::to_owned)
    }

    pub fn app(i: &Item, attr: &str) -> Result<AppKind, RecordError> {
        AppKind::parse(&s(i, attr)?).ok_or_else(|| missing(i, attr, "is not mp or oa"))
    }
}

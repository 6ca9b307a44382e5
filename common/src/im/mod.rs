//! Tencent Cloud IM: UserSig, callbacks and the REST API.

pub mod callback;
pub mod rest;
pub mod usersig;

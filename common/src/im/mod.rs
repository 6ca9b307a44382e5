//! Tencent Cloud IM: UserSig, callbacks and the REST API.

pub mod usersig;

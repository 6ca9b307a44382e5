//! The wire protocols of WeChat and Tencent IM: signatures, crypto, message models, the template
//! data rules and the API clients' request/answer formats. Pure: no `App`, no store.

pub mod im;
pub mod secret;
pub mod wechat;

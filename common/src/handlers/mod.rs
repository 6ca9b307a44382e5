//! The handlers: plain async functions `(request, &App) -> response` shared by the Lambda
//! binaries, the local command line and the tests.

pub mod admin;
pub mod bind;
pub mod im;
mod input;
pub mod wechat;

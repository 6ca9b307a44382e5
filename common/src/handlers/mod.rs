//! The handlers: plain async functions `(request, &App) -> response` shared by the Lambda
//! binaries, the local command line and the tests.

pub mod im;
pub mod wechat;

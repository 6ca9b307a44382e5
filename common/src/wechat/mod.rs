//! WeChat: push signatures and crypto, the message model, passive replies.

pub mod api;
pub mod crypto;
pub mod message;
pub mod push;
pub mod reply;
pub mod signature;
pub mod token;
pub mod xml;

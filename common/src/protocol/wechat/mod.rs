//! WeChat: push signatures and crypto, the message model, passive replies, subscribe-message
//! template rules, and the API client.

pub mod allowance;
pub mod api;
pub mod app;
pub mod crypto;
pub mod keyword;
pub mod media;
pub mod message;
pub mod push;
pub mod render;
pub mod reply;
pub mod signature;
pub mod xml;

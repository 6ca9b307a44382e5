//! Offline notifications: the IM-side decision, template data rules, and the merged delivery.

pub mod deliver;
pub mod keyword;
pub mod policy;
pub mod render;
pub mod send;

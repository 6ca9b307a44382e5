//! Notifications: template data rules and rendering.

pub mod keyword;
pub mod render;

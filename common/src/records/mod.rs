//! One module per stored record: its key, its attributes, how it is read, and the writes that
//! create or change it. Flows combine these writes; nothing above this layer names an attribute.

pub mod binding;
pub mod dedupe;
pub mod due;
pub mod keys;
pub mod notify_window;
pub mod outbox;
pub mod presence;
pub mod subscription;
pub mod token;

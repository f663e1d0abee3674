pub mod harness;
pub mod kafka;
pub mod tools;

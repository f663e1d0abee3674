pub mod harness;
pub mod kafka;
pub mod readback;
pub mod tools;

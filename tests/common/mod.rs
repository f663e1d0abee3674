pub mod harness;
pub mod tools;

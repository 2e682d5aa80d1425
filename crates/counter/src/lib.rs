//! The counter's parts, each owning one piece of its state: the windows processor
//! ([`processor`]), its checkpoints in S3 ([`checkpoint`]), the peers' partials it reads back
//! ([`peers`]), the console table ([`table`]), the dashboard ([`dashboard`]) and the emit modes ([`emit`]). `main.rs` wires
//! them to the runtime.

pub mod checkpoint;
pub mod dashboard;
pub mod emit;
pub mod peers;
pub mod processor;
pub mod table;

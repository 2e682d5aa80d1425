//! The counter's parts, each owning one piece of its state: the windows processor
//! ([`processor`]), its checkpoints in S3 ([`checkpoint`]), the peers' partials it reads back
//! ([`peers`]), the console table ([`table`]) and the dashboard ([`dashboard`]). `main.rs` wires
//! them to the runtime.

pub mod checkpoint;
pub mod dashboard;
pub mod peers;
pub mod processor;
pub mod table;

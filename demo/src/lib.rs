//! The demo's parts, as a library: the cast of real programs on a mail
//! server (`cast`, `bins`), the story's steps (`story`) and the benchmark
//! (`bench`). The `demo` binary narrates with them; the adversarial suite
//! (`chaos`) sets up its deployments with them. Like the binary, this
//! library links none of the product's crates: it runs their programs.

pub mod bench;
pub mod bins;
pub mod cast;
pub mod story;

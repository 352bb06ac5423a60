//! tc3-prep's engine: LF-Amazon-1.3M `trn.json` lines in, clean Parquet splits and a report out.
//!
//! Plain Rust throughout; this file only names the modules and what they export. The Python binding lives in
//! `python.rs` behind the `python` feature.

pub mod batch;
pub mod dedup;
mod entities;
pub mod error;
pub mod kinds;
pub mod markers;
pub mod options;
pub mod output;
mod pattern;
pub mod pipeline;
pub mod record;
pub mod source;
pub mod stats;
pub mod text;
pub mod timing;
pub mod unescape;

#[cfg(feature = "python")]
mod python;

pub use error::PrepError;
pub use options::{Dedup, Filters, Options};
pub use pipeline::{run, Progress};
pub use source::Source;
pub use stats::Stats;

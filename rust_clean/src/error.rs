//! The engine's one error type: what went wrong, in words a user can act on.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepError {
    /// A mistake in how the run was asked for (bad option, existing output).
    Usage(String),
    /// The input cannot be read as asked (missing, truncated, corrupt, too many malformed lines).
    Input(String),
    /// Writing the output failed.
    Io(String),
    /// The caller asked to stop (Ctrl-C).
    Interrupted,
}

impl fmt::Display for PrepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepError::Usage(m) | PrepError::Input(m) | PrepError::Io(m) => f.write_str(m),
            PrepError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for PrepError {}

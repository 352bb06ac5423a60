//! The inputs of a run: files (plain or gzip) or standard input, checked before any work and opened by the reader.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::error::PrepError;

/// An input: a file (plain or gzip, told apart by content) or standard input.
#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    Stdin,
}

impl Source {
    pub fn parse(arg: &str) -> Self {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::Path(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".into(),
        }
    }

    /// Bytes in a regular file; `None` for standard input and pipes, whose size is not known in advance.
    pub fn size(&self) -> Option<u64> {
        match self {
            Source::Path(p) => std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len()),
            Source::Stdin => None,
        }
    }

    pub(crate) fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Source::Path(p) => Ok(Box::new(File::open(p)?)),
            Source::Stdin => Ok(Box::new(io::stdin())),
        }
    }

    /// Fails early, naming the file, when an input is missing or unreadable.
    pub fn check(&self) -> Result<(), PrepError> {
        let Source::Path(p) = self else { return Ok(()) };
        let cannot_read = |e: io::Error| PrepError::Usage(format!("cannot read {}: {e}", p.display()));
        match std::fs::metadata(p).map_err(cannot_read)? {
            m if m.is_dir() => Err(PrepError::Usage(format!("{} is a directory, not an input file", p.display()))),
            // A named pipe (or `<(...)`) is opened once, by the reader: opening it here would wait for its
            // writer, and closing it again would end the writer's output before the reader opens it.
            m if !m.is_file() => Ok(()),
            _ => File::open(p).map(drop).map_err(cannot_read),
        }
    }
}

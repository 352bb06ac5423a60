//! Parquet shards of a split, encoded off the ordering thread, and the rejects file written under a temporary name.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::builder::{ArrayBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::record::CleanedRef;
use crate::error::PrepError;

/// Uncompressed text bytes in one shard; a shard is one file of one row group.
pub const SHARD_BYTES: usize = 96 << 20;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("uid", DataType::Utf8, true),
        Field::new("title", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
    ]))
}

/// Rows of the output columns, appended in input order.
pub struct Columns {
    uid: StringBuilder,
    title: StringBuilder,
    description: StringBuilder,
    kind: StringBuilder,
    bytes: usize,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            uid: StringBuilder::new(),
            title: StringBuilder::new(),
            description: StringBuilder::new(),
            kind: StringBuilder::new(),
            bytes: 0,
        }
    }
}

impl Columns {
    pub fn push(&mut self, r: CleanedRef) {
        self.uid.append_option(r.uid);
        self.title.append_value(r.title);
        self.description.append_value(r.description);
        self.kind.append_value(r.kind.name());
        self.bytes += r.uid.map_or(0, str::len) + r.title.len() + r.description.len();
    }

    pub fn len(&self) -> usize {
        self.title.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(&mut self) -> RecordBatch {
        self.bytes = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.uid.finish()),
            Arc::new(self.title.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.kind.finish()),
        ];
        RecordBatch::try_new(schema(), columns).expect("columns match the schema")
    }
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        // Titles and descriptions are nearly all distinct: a dictionary only costs time.
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(usize::MAX))
        .build()
}

pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), PrepError> {
    let io = |e: &dyn std::fmt::Display| PrepError::Io(format!("writing {}: {e}", path.display()));
    let file = File::create(path).map_err(|e| io(&e))?;
    let mut writer = ArrowWriter::try_new(file, schema(), Some(writer_properties())).map_err(|e| io(&e))?;
    writer.write(batch).map_err(|e| io(&e))?;
    writer.close().map_err(|e| io(&e))?;
    Ok(())
}

struct Job {
    path: PathBuf,
    batch: RecordBatch,
}

/// Encodes shards on their own threads, so the ordering thread waits on zstd only when every encoder is busy
/// and a shard is already waiting.
pub struct Encoders {
    jobs: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<Result<(), PrepError>>>,
}

impl Encoders {
    pub fn new(count: usize) -> Self {
        // One shard waits while all are busy: the ordering thread then waits too, instead of memory growing.
        let (tx, rx) = sync_channel::<Job>(1);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..count.max(1))
            .map(|_| {
                let rx: Arc<Mutex<Receiver<Job>>> = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = rx.lock().expect("encoder queue").recv();
                    match job {
                        Ok(job) => write_parquet(&job.path, &job.batch)?,
                        Err(_) => return Ok(()),
                    }
                })
            })
            .collect();
        Encoders { jobs: Some(tx), threads }
    }

    fn submit(&self, path: PathBuf, batch: RecordBatch) -> Result<(), PrepError> {
        let jobs = self.jobs.as_ref().expect("submit before finish");
        jobs.send(Job { path, batch }).map_err(|_| PrepError::Io("a Parquet encoder stopped".into()))
    }

    /// Waits for every shard to be written; the first encoding error wins.
    pub fn finish(mut self) -> Result<(), PrepError> {
        self.jobs.take();
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| Err(PrepError::Io("a Parquet encoder panicked".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// One split's shards: `data/{split}-{k:05}.parquet` while running, renamed to Hub names at the end.
pub struct SplitWriter {
    split: &'static str,
    data_dir: PathBuf,
    columns: Columns,
    shards: usize,
    pub rows: u64,
}

impl SplitWriter {
    pub fn new(split: &'static str, data_dir: &Path) -> Self {
        SplitWriter { split, data_dir: data_dir.to_path_buf(), columns: Columns::default(), shards: 0, rows: 0 }
    }

    fn shard_path(&self, k: usize) -> PathBuf {
        self.data_dir.join(format!("{}-{k:05}.parquet", self.split))
    }

    pub fn push(&mut self, r: CleanedRef, encoders: &Encoders) -> Result<(), PrepError> {
        self.columns.push(r);
        self.rows += 1;
        if self.columns.bytes >= SHARD_BYTES {
            self.flush(encoders)?;
        }
        Ok(())
    }

    fn flush(&mut self, encoders: &Encoders) -> Result<(), PrepError> {
        let path = self.shard_path(self.shards);
        self.shards += 1;
        encoders.submit(path, self.columns.finish())
    }

    /// Flushes the last shard (an empty split still gets one file, so its schema is known), returns the count.
    pub fn close(mut self, encoders: &Encoders) -> Result<Finished, PrepError> {
        if !self.columns.is_empty() || self.shards == 0 {
            self.flush(encoders)?;
        }
        Ok(Finished { split: self.split, data_dir: self.data_dir, shards: self.shards })
    }
}

pub struct Finished {
    split: &'static str,
    data_dir: PathBuf,
    shards: usize,
}

impl Finished {
    /// Renames shards to `{split}-{k:05}-of-{n:05}.parquet` once every one is written.
    pub fn rename_to_hub_names(&self) -> Result<Vec<String>, PrepError> {
        (0..self.shards)
            .map(|k| {
                let name = format!("{}-{k:05}-of-{:05}.parquet", self.split, self.shards);
                let from = self.data_dir.join(format!("{}-{k:05}.parquet", self.split));
                fs::rename(&from, self.data_dir.join(&name))
                    .map_err(|e| PrepError::Io(format!("renaming {}: {e}", from.display())))?;
                Ok(name)
            })
            .collect()
    }
}

/// Readies `dir` for a run's output: created if absent (with `data/` inside), refused if it is a file or a
/// non-empty directory. The engine never deletes anything the caller did not ask it to write: staging the
/// directory and replacing an older output is the caller's (tc3's Python layer, `tc3.outputs`).
pub fn prepare_out_dir(dir: &Path) -> Result<(), PrepError> {
    if dir.is_file() {
        return Err(PrepError::Usage(format!("output {} is a file, not a directory", dir.display())));
    }
    if dir.is_dir() && fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(PrepError::Usage(format!("output directory {} exists and is not empty", dir.display())));
    }
    fs::create_dir_all(dir.join("data")).map_err(|e| PrepError::Io(format!("creating {}: {e}", dir.display())))
}

/// A file written under a temporary name and renamed into place, or removed if never committed.
pub struct StagedFile {
    pub tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedFile {
    pub fn new(dest: &Path) -> Self {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        StagedFile { tmp: PathBuf::from(tmp), dest: dest.to_path_buf(), committed: false }
    }

    pub fn commit(mut self) -> Result<(), PrepError> {
        fs::rename(&self.tmp, &self.dest).map_err(|e| PrepError::Io(format!("writing {}: {e}", self.dest.display())))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_dir_that_is_not_empty_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub").join("thesis.tex"), "years of work").unwrap();
        assert!(matches!(prepare_out_dir(dir), Err(PrepError::Usage(_))));
        assert_eq!(fs::read_to_string(dir.join("sub").join("thesis.tex")).unwrap(), "years of work");
        let fresh = dir.join("fresh");
        prepare_out_dir(&fresh).unwrap();
        assert!(fresh.join("data").is_dir());
    }
}

//! The per-record part of the pipeline over an Arrow batch, for distributed engines (Ray Data
//! `map_batches`, Spark `mapInArrow`, Dask): cleaning and filters, no global dedup, no split.

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::output::Columns;
use crate::record::{clean_fields, Filters, Outcome};
use crate::stats::Stats;
use crate::PrepError;

/// Reads row `i` of an optional string column (Utf8, LargeUtf8 or Utf8View); null reads as `None`.
fn string_at<'a>(column: Option<&'a dyn Array>, i: usize) -> Option<Cow<'a, str>> {
    let column = column?;
    if column.is_null(i) {
        return None;
    }
    Some(Cow::Borrowed(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i),
        DataType::Utf8View => column.as_string_view().value(i),
        _ => unreachable!("checked by string_column"),
    }))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str, required: bool) -> Result<Option<&'a dyn Array>, PrepError> {
    match batch.column_by_name(name) {
        None if required => Err(PrepError::Usage(format!("the batch has no {name:?} column"))),
        None => Ok(None),
        Some(c) if matches!(c.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Ok(Some(c.as_ref())),
        Some(c) => Err(PrepError::Usage(format!("column {name:?} must hold strings, not {}", c.data_type()))),
    }
}

/// Cleans and filters the rows of a batch with `title` and `content` (and optionally `uid`) columns.
/// Returns the kept rows as `uid`, `title`, `description`, and the counts of drops and cleaning rules.
pub fn clean_batch(batch: &RecordBatch, filters: &Filters) -> Result<(RecordBatch, Stats), PrepError> {
    let uid = string_column(batch, "uid", false)?;
    let title = string_column(batch, "title", true)?;
    let content = string_column(batch, "content", true)?;
    let mut kept = Columns::default();
    let mut stats = Stats::default();
    for i in 0..batch.num_rows() {
        stats.records += 1;
        match clean_fields(string_at(uid, i), string_at(title, i), string_at(content, i), filters, false) {
            Outcome::Kept { record, changes } => {
                stats.changed(changes);
                stats.kinds[record.kind as usize] += 1;
                kept.push(&record);
            }
            Outcome::Dropped { reason, changes, .. } => {
                stats.changed(changes);
                stats.dropped[reason as usize] += 1;
            }
            Outcome::Malformed { .. } => unreachable!("fields are already typed"),
        }
    }
    Ok((kept.finish(), stats))
}

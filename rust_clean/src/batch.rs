//! The per-record part of the pipeline over an Arrow batch, for distributed engines (Ray Data
//! `map_batches`, Spark `mapInArrow`, Dask): cleaning and filters, no global dedup, no split.

use std::borrow::Cow;

use std::sync::Arc;

use arrow_array::builder::{FixedSizeBinaryBuilder, FixedSizeListBuilder, UInt32Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{json, Value};

use crate::dedup::{band_keys, exact_key, MinHasher, BAND_COUNT, PERMUTATIONS};
use crate::error::PrepError;
use crate::options::Filters;
use crate::output::Columns;
use crate::record::{clean_fields, Outcome};
use crate::stats::Stats;

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
                stats.written(&record.borrowed());
                kept.push(record.borrowed());
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

/// `clean_batch`'s counts as the Python layer returns them: `rows`, `kept`, and from `stats.json` `dropped`,
/// `cleaned`, `kinds` and `template_markers`.
pub fn counts(stats: &Stats, kept: usize) -> Value {
    let report = stats.to_json();
    json!({
        "rows": stats.records, "kept": kept, "dropped": report["dropped"], "cleaned": report["cleaned"],
        "kinds": report["kinds"], "template_markers": report["template_markers"],
    })
}

/// The dedup keys the engine compares, for rows of `description` (cleaned text, as `clean_batch` returns
/// it), so that an engine can dedup across shards: group by `key` and keep the first row by input
/// position. Columns: `key` (16 bytes, the exact-dedup hash), and with `near` also `bands` (the
/// `BAND_COUNT` LSH band keys: rows sharing one at the same position are candidates) and `signature`
/// (the `PERMUTATIONS` MinHash values: a candidate is a near duplicate when at least `NEAR_THRESHOLD` of
/// them agree). A null description has null keys.
pub fn dedup_keys(batch: &RecordBatch, near: bool, seed: u64) -> Result<RecordBatch, PrepError> {
    let description = string_column(batch, "description", true)?;
    let hasher = near.then(|| MinHasher::new(seed));
    let rows = batch.num_rows();
    let mut key = FixedSizeBinaryBuilder::with_capacity(rows, 16);
    let mut bands = FixedSizeListBuilder::with_capacity(UInt64Builder::new(), BAND_COUNT as i32, rows);
    let mut signature = FixedSizeListBuilder::with_capacity(UInt32Builder::new(), PERMUTATIONS as i32, rows);
    for i in 0..rows {
        let text = string_at(description, i);
        match &text {
            Some(t) => key.append_value(exact_key(t).to_be_bytes()).expect("16 bytes"),
            None => key.append_null(),
        }
        let Some(h) = &hasher else { continue };
        let sig = text.as_deref().map(|t| h.signature(t));
        let mut band_values = [0u64; BAND_COUNT];
        if let Some(s) = &sig {
            band_values.iter_mut().zip(band_keys(s)).for_each(|(dst, k)| *dst = k);
        }
        bands.values().append_slice(&band_values);
        bands.append(sig.is_some());
        signature.values().append_slice(sig.as_ref().map_or(&[0; PERMUTATIONS][..], |s| &s[..]));
        signature.append(sig.is_some());
    }
    let mut fields = vec![Field::new("key", DataType::FixedSizeBinary(16), true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(key.finish())];
    if near {
        let bands = bands.finish();
        let signature = signature.finish();
        fields.push(Field::new("bands", bands.data_type().clone(), true));
        fields.push(Field::new("signature", signature.data_type().clone(), true));
        columns.push(Arc::new(bands));
        columns.push(Arc::new(signature));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema"))
}

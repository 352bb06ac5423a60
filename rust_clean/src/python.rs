//! The thin Python binding (`tc3._rust_clean`): argument conversion, GIL release, errors.
//!
//! No global thread pool or other process-wide state lives here: every run starts its own threads, so
//! the module works the same in a child forked after a run (HF `datasets.map(num_proc=...)`).

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::{batch, compile_patterns, kinds, parse_kinds, pipeline, text, unescape, Dedup, Filters, Options, PrepError as CoreError, Source};

create_exception!(
    _rust_clean,
    EngineError,
    PyException,
    "The engine could not run as asked; args are (message, exit status): 2 for a bad option or output path, 1 for \
     an input that cannot be read (missing, truncated, corrupt, too many malformed lines) or an I/O failure. \
     tc3.prep maps it to tc3.errors.UserError."
);

/// Exit status of a usage mistake and of an input or I/O fault (tc3.errors.USAGE, tc3.errors.INPUT).
const USAGE: u8 = 2;
const INPUT: u8 = 1;

fn to_py(e: CoreError) -> PyErr {
    match e {
        CoreError::Usage(m) => EngineError::new_err((m, USAGE)),
        CoreError::Input(m) | CoreError::Io(m) => EngineError::new_err((m, INPUT)),
        CoreError::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
    }
}

#[allow(clippy::too_many_arguments)]
fn filters(
    min_title_chars: usize,
    max_title_chars: usize,
    min_desc_chars: usize,
    max_desc_chars: usize,
    drop_patterns: &[String],
    drop_kinds: &[String],
    strip_attributed_quotes: bool,
) -> Result<Filters, CoreError> {
    Ok(Filters {
        min_title_chars,
        max_title_chars,
        min_desc_chars,
        max_desc_chars,
        drop_patterns: compile_patterns(drop_patterns)?,
        drop_kinds: parse_kinds(drop_kinds)?,
        strip_attributed_quotes,
    })
}

/// Runs the whole pipeline; returns `stats.json` as a string. `progress(bytes_read, bytes_total,
/// records, kept)` is called a few times a second with the GIL held; Ctrl-C stops the run cleanly.
#[pyfunction]
#[pyo3(signature = (inputs, out_dir, *, val_fraction=0.01, seed=3407, limit=None, sample=None,
    min_title_chars=3, max_title_chars=400, min_desc_chars=40, max_desc_chars=5000, dedup="exact",
    drop_patterns=vec![], drop_kinds=vec![], strip_attributed_quotes=false, rejects=None, max_errors=None, threads=None, card_notes=String::new(), progress=None))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    inputs: Vec<String>,
    out_dir: PathBuf,
    val_fraction: f64,
    seed: u64,
    limit: Option<u64>,
    sample: Option<u64>,
    min_title_chars: usize,
    max_title_chars: usize,
    min_desc_chars: usize,
    max_desc_chars: usize,
    dedup: &str,
    drop_patterns: Vec<String>,
    drop_kinds: Vec<String>,
    strip_attributed_quotes: bool,
    rejects: Option<PathBuf>,
    max_errors: Option<u64>,
    threads: Option<usize>,
    card_notes: String,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    if inputs.is_empty() {
        return Err(EngineError::new_err(("no input given", USAGE)));
    }
    let defaults = Options::default();
    let opts = Options {
        filters: filters(
            min_title_chars,
            max_title_chars,
            min_desc_chars,
            max_desc_chars,
            &drop_patterns,
            &drop_kinds,
            strip_attributed_quotes,
        )
        .map_err(to_py)?,
        val_fraction,
        seed,
        limit,
        sample,
        dedup: Dedup::parse(dedup).map_err(to_py)?,
        rejects,
        max_errors,
        threads: threads.unwrap_or(defaults.threads),
        card_notes,
    };
    let sources: Vec<Source> = inputs.iter().map(|s| Source::parse(s)).collect();
    let mut report = |p: &pipeline::Progress| -> Result<(), CoreError> {
        Python::attach(|py| {
            py.check_signals().map_err(|_| CoreError::Interrupted)?;
            if let Some(cb) = &progress {
                cb.call1(py, (p.bytes_read, p.bytes_total, p.records, p.kept))
                    .map_err(|e| CoreError::Io(format!("progress callback failed: {e}")))?;
            }
            Ok(())
        })
    };
    let stats = py.detach(|| pipeline::run(&sources, &out_dir, &opts, &mut report)).map_err(to_py)?;
    Ok(serde_json::to_string(&stats.to_json()).expect("stats serialize"))
}

/// Cleans and filters one Arrow record batch (`title`, `content`, optional `uid`); no dedup or split.
/// Returns `(batch of uid/title/description/kind, counts as a JSON string)`.
#[pyfunction]
#[pyo3(signature = (batch, *, min_title_chars=3, max_title_chars=400, min_desc_chars=40, max_desc_chars=5000, drop_patterns=vec![],
    drop_kinds=vec![], strip_attributed_quotes=false))]
#[allow(clippy::too_many_arguments)]
fn clean_batch<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    min_title_chars: usize,
    max_title_chars: usize,
    min_desc_chars: usize,
    max_desc_chars: usize,
    drop_patterns: Vec<String>,
    drop_kinds: Vec<String>,
    strip_attributed_quotes: bool,
) -> PyResult<(Bound<'py, PyAny>, String)> {
    let f = filters(min_title_chars, max_title_chars, min_desc_chars, max_desc_chars, &drop_patterns, &drop_kinds, strip_attributed_quotes)
        .map_err(to_py)?;
    let input = RecordBatch::from_pyarrow_bound(batch)?;
    let (kept, stats) = py.detach(|| batch::clean_batch(&input, &f)).map_err(to_py)?;
    let counts = stats.to_json();
    let counts = serde_json::json!({
        "rows": stats.records, "kept": kept.num_rows(), "dropped": counts["dropped"], "cleaned": counts["cleaned"],
        "kinds": counts["kinds"], "template_markers": counts["template_markers"],
    });
    Ok((kept.to_pyarrow(py)?, counts.to_string()))
}

/// The content kind of one cleaned description (docs/cleaning.md, "Content kinds"), for evaluation.
#[pyfunction]
fn classify_kind(description: &str) -> &'static str {
    kinds::classify(description).name()
}

/// The source names credited after quotes in a text, for the invented-attribution measure.
#[pyfunction]
fn attribution_sources(text: &str) -> Vec<String> {
    kinds::attribution_sources(text).into_iter().map(str::to_owned).collect()
}

/// The dedup keys of a batch's `description` column (`batch::dedup_keys`): `key`, and with `near`
/// also `bands` and `signature`.
#[pyfunction]
#[pyo3(signature = (batch, *, near=false, seed=3407))]
fn dedup_keys<'py>(py: Python<'py>, batch: &Bound<'py, PyAny>, near: bool, seed: u64) -> PyResult<Bound<'py, PyAny>> {
    let input = RecordBatch::from_pyarrow_bound(batch)?;
    py.detach(|| batch::dedup_keys(&input, near, seed)).map_err(to_py)?.to_pyarrow(py)
}

/// A title as `tc3-prep` cleans it (docs/cleaning.md rules 1-4: entities, tags, NFC, white space), for text
/// a user types at generation time: the model and the index see what training saw.
#[pyfunction]
fn clean_title(title: &str) -> String {
    text::clean_text(title, &mut text::Changes::default())
}

/// One pass of the engine's character-reference decoding (docs/cleaning.md rule 1), for parity tests.
#[pyfunction]
fn unescape_html(s: &str) -> String {
    unescape::unescape(s).text.into_owned()
}

#[pymodule]
fn _rust_clean(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(clean_batch, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_keys, m)?)?;
    m.add_function(wrap_pyfunction!(unescape_html, m)?)?;
    m.add_function(wrap_pyfunction!(clean_title, m)?)?;
    m.add("EngineError", m.py().get_type::<EngineError>())?;
    m.add_function(wrap_pyfunction!(classify_kind, m)?)?;
    m.add_function(wrap_pyfunction!(attribution_sources, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CLEANING_RULES", text::RULES.to_vec())?;
    m.add("CONTENT_KINDS", kinds::Kind::ALL.map(kinds::Kind::name).to_vec())?;
    m.add("HTML_TAG_NAMES", text::HTML_TAG_NAMES.to_vec())?;
    m.add("HTML_TAG_PATTERN", text::html_tag_pattern())?;
    Ok(())
}

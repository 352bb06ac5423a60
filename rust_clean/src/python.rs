//! The thin Python binding (`tc3._rust_clean`): argument conversion, GIL release, errors.
//!
//! Options cross as one `PrepOptions` wrapping the core's `Options`, so their defaults (`Options::default()`)
//! and their checks (`Options::validate`) stay in the core. No global thread pool or other process-wide state
//! lives here: every run starts its own threads, so the module works the same in a child forked after a run
//! (HF `datasets.map(num_proc=...)`).

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

use crate::error::PrepError as CoreError;
use crate::options::{check_whole, compile_patterns, default_threads, parse_kinds, Dedup, Options};
use crate::source::Source;
use crate::{batch, kinds, pipeline, text, unescape};

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
        CoreError::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
    }
}

/// A report (`stats.json`, batch counts) as Python values: dicts (keys sorted, as in the file), lists, numbers.
fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i)) => i.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => PyList::new(py, items.iter().map(|v| to_python(py, v)).collect::<PyResult<Vec<_>>>()?)?.into_any(),
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_python(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A whole number for the option `name`. A negative one gets the core's message ("--seed must be zero or more,
/// not -1"), which no unsigned type could carry there; one past 2**64 stays Python's OverflowError.
fn whole<T: TryFrom<u64>>(name: &str, value: &Bound<'_, PyAny>) -> PyResult<T> {
    let n = value.extract::<u64>().or_else(|overflow| {
        if let Ok(negative) = value.extract::<i64>() {
            check_whole(name, negative.into()).map_err(to_py)?;
        }
        Err(overflow)
    })?;
    T::try_from(n).map_err(|_| PyOverflowError::new_err("int too big to convert"))
}

/// `whole`, with None for "not set".
fn maybe_whole<T: TryFrom<u64>>(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<T>> {
    if value.is_none() { Ok(None) } else { whole(name, value).map(Some) }
}

/// Sets one option from its keyword; the names are `PrepOptions`'s getters (and `stats.json`'s `options`).
fn set(o: &mut Options, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let f = &mut o.filters;
    match name {
        "val_fraction" => o.val_fraction = value.extract()?,
        "seed" => o.seed = whole(name, value)?,
        "limit" => o.limit = maybe_whole(name, value)?,
        "sample" => o.sample = maybe_whole(name, value)?,
        "min_title_chars" => f.min_title_chars = whole(name, value)?,
        "max_title_chars" => f.max_title_chars = whole(name, value)?,
        "min_desc_chars" => f.min_desc_chars = whole(name, value)?,
        "max_desc_chars" => f.max_desc_chars = whole(name, value)?,
        "dedup" => o.dedup = Dedup::parse(&value.extract::<String>()?).map_err(to_py)?,
        "drop_patterns" => f.drop_patterns = compile_patterns(&value.extract::<Vec<String>>()?).map_err(to_py)?,
        "drop_kinds" => f.drop_kinds = parse_kinds(&value.extract::<Vec<String>>()?).map_err(to_py)?,
        "strip_attributed_quotes" => f.strip_attributed_quotes = value.extract()?,
        "rejects" => o.rejects = value.extract()?,
        "max_errors" => o.max_errors = maybe_whole(name, value)?,
        "threads" => o.threads = maybe_whole(name, value)?.unwrap_or_else(default_threads),
        "card_notes" => o.card_notes = value.extract()?,
        "rule_times" => o.rule_times = value.extract()?,
        other => return Err(PyTypeError::new_err(format!("PrepOptions got an unexpected keyword argument {other:?}"))),
    }
    Ok(())
}

/// The options of a run (`run`, `clean_batch`): keyword arguments over the engine's defaults, checked once here.
/// `PrepOptions()` holds the defaults; each keyword is also a read-only attribute. Mistakes raise EngineError.
#[pyclass(name = "PrepOptions", module = "tc3._rust_clean", frozen, skip_from_py_object)]
struct PrepOptions(Options);

impl PrepOptions {
    fn with(options: Options, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut options = options;
        for (name, value) in kwargs.into_iter().flatten() {
            set(&mut options, &name.extract::<String>()?, &value)?;
        }
        options.validate().map_err(to_py)?;
        Ok(PrepOptions(options))
    }
}

#[pymethods]
impl PrepOptions {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        PrepOptions::with(Options::default(), kwargs)
    }

    /// A copy with the given keywords changed (as `dataclasses.replace`), checked again.
    #[pyo3(signature = (**kwargs))]
    fn replace(&self, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        PrepOptions::with(self.0.clone(), kwargs)
    }

    fn __repr__(&self) -> String {
        format!("PrepOptions({})", self.0.to_json())
    }

    #[getter]
    fn val_fraction(&self) -> f64 {
        self.0.val_fraction
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.0.seed
    }
    #[getter]
    fn limit(&self) -> Option<u64> {
        self.0.limit
    }
    #[getter]
    fn sample(&self) -> Option<u64> {
        self.0.sample
    }
    #[getter]
    fn min_title_chars(&self) -> usize {
        self.0.filters.min_title_chars
    }
    #[getter]
    fn max_title_chars(&self) -> usize {
        self.0.filters.max_title_chars
    }
    #[getter]
    fn min_desc_chars(&self) -> usize {
        self.0.filters.min_desc_chars
    }
    #[getter]
    fn max_desc_chars(&self) -> usize {
        self.0.filters.max_desc_chars
    }
    #[getter]
    fn dedup(&self) -> &'static str {
        self.0.dedup.name()
    }
    #[getter]
    fn drop_patterns(&self) -> Vec<&str> {
        self.0.filters.drop_patterns.iter().map(regex::Regex::as_str).collect()
    }
    #[getter]
    fn drop_kinds(&self) -> Vec<&'static str> {
        self.0.filters.drop_kinds.iter().map(|k| k.name()).collect()
    }
    #[getter]
    fn strip_attributed_quotes(&self) -> bool {
        self.0.filters.strip_attributed_quotes
    }
    #[getter]
    fn rejects(&self) -> Option<PathBuf> {
        self.0.rejects.clone()
    }
    #[getter]
    fn max_errors(&self) -> Option<u64> {
        self.0.max_errors
    }
    #[getter]
    fn threads(&self) -> usize {
        self.0.threads
    }
    #[getter]
    fn card_notes(&self) -> &str {
        &self.0.card_notes
    }
    #[getter]
    fn rule_times(&self) -> bool {
        self.0.rule_times
    }
}

/// Runs the whole pipeline; returns `stats.json` as a dict. `progress(bytes_read, bytes_total, records, kept)`
/// is called a few times a second with the GIL held; Ctrl-C stops the run cleanly.
#[pyfunction]
#[pyo3(signature = (inputs, out_dir, options, *, progress=None))]
fn run<'py>(
    py: Python<'py>,
    inputs: Vec<String>,
    out_dir: PathBuf,
    options: &PrepOptions,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if inputs.is_empty() {
        return Err(EngineError::new_err(("no input given", USAGE)));
    }
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
    let stats = py.detach(|| pipeline::run(&sources, &out_dir, &options.0, &mut report)).map_err(to_py)?;
    to_python(py, &stats.to_json())
}

/// Cleans and filters one Arrow record batch (`title`, `content`, optional `uid`) with `options`' filters; no
/// dedup or split. Returns `(batch of uid/title/description/kind, counts dict)` (`batch::counts`).
#[pyfunction]
fn clean_batch<'py>(py: Python<'py>, batch: &Bound<'py, PyAny>, options: &PrepOptions) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let input = RecordBatch::from_pyarrow_bound(batch)?;
    let (kept, stats) = py.detach(|| batch::clean_batch(&input, &options.0.filters)).map_err(to_py)?;
    Ok((kept.to_pyarrow(py)?, to_python(py, &batch::counts(&stats, kept.num_rows()))?))
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
/// also `bands` and `signature`. `seed` defaults to a run's.
#[pyfunction]
#[pyo3(signature = (batch, *, near=false, seed=None))]
fn dedup_keys<'py>(py: Python<'py>, batch: &Bound<'py, PyAny>, near: bool, seed: Option<u64>) -> PyResult<Bound<'py, PyAny>> {
    let input = RecordBatch::from_pyarrow_bound(batch)?;
    let seed = seed.unwrap_or_else(|| Options::default().seed);
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
    m.add_class::<PrepOptions>()?;
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
    m.add("DEDUP_MODES", Dedup::ALL.map(Dedup::name).to_vec())?;
    m.add("HTML_TAG_NAMES", text::HTML_TAG_NAMES.to_vec())?;
    m.add("HTML_TAG_PATTERN", text::html_tag_pattern())?;
    Ok(())
}

"""Honest before/after numbers: generate for held-out titles with a fine-tuned model and a baseline, each asked the
way that suits it (the model as trained, the baseline in the references' language, and beside it the model's way),
under one setting, and score them: ROUGE-1/2/L, BLEU, chrF, loss/perplexity on the references, length, distinct-2,
loops, stop share, with bootstrap intervals (each metric's definition: `tc3.eval.metrics`).

The code: `tc3.eval.metrics` (the metrics), `tc3.eval.run` (``run_eval``: models, answers, cache) and
`tc3.eval.report` (``report.json``: settings, metrics of each model, every generation; ``report.md``: a table, the
plot, 10 side-by-side examples; ``report.png``: the metric pairs); this module is their stable import path.
"""

from tc3.eval.metrics import (RougeTokenizer, bleu, bootstrap_ci, chrf, distinct_n, has_loop, mean,
                              reference_loss, rouge, rouge_scores, share, text_metrics, unsupported_share, words)
from tc3.eval.report import (CI_KEYS, LABELS, METRIC_LABELS, SMALL_SAMPLE, EvalRun, plot_metrics,
                             render_markdown, shown_metrics, write_report)
from tc3.eval.run import (QUESTION_MODES, asks_for, evaluate_model, generate_kept, run_eval,
                          sample_records, trained_instruction, usable_records)

__all__ = ["CI_KEYS", "LABELS", "METRIC_LABELS", "QUESTION_MODES", "SMALL_SAMPLE", "EvalRun", "RougeTokenizer", "asks_for",
           "bleu", "bootstrap_ci", "chrf", "distinct_n", "evaluate_model", "generate_kept", "has_loop", "mean",
           "plot_metrics", "reference_loss", "render_markdown", "rouge", "rouge_scores", "run_eval", "sample_records",
           "share", "shown_metrics", "text_metrics", "trained_instruction", "unsupported_share", "usable_records",
           "words", "write_report"]

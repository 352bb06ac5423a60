"""Honest before/after numbers: generate for held-out titles with a fine-tuned model and a baseline, each asked the
way that suits it (the model as trained, the baseline in the references' language, and beside it the model's way),
under one setting, and score them.

Metrics (all offline):

* ROUGE-1/2/L: ``rouge-score``, F-measure, averaged over examples (0..1), with :class:`RougeTokenizer` (words of
  any script; Porter stemming of ASCII words as rouge-score does), with a bootstrap interval on ROUGE-L.
* BLEU and chrF: ``sacrebleu`` corpus scores with default settings (0..100).
* Evaluation loss / perplexity: mean token negative log-likelihood of the reference answers given the prompt,
  over the completion tokens the trainer trains on (the reference and the chat template's end-of-turn), and its
  exponential.
* Mean length (words and new tokens), distinct-2 (distinct word bigrams / all word bigrams over all outputs).
* Loops: the share of outputs in which some word 4-gram occurs 3 or more times (:func:`has_loop`): a generation
  caught in a cycle repeats every 4-gram of the cycle, plain prose rarely says the same four words three times.
* Stopped: the share of outputs that ended with an end token before the new-token limit; beside it, the share of
  references longer than the limit (a model that writes as long as the references cannot stop on those) and the
  stop share among the titles whose reference fits; with a bootstrap interval.
* Faithfulness of a grounded answer (:func:`unsupported_share`, used by ``benches/grounded_rouge.py``).

The code: `tc3.eval.metrics` (the metrics), `tc3.eval.run` (``run_eval``: models, answers, cache) and
`tc3.eval.report` (the report); this module is their stable import path. ``run_eval`` writes ``report.json`` (settings, metrics of each model, every generation), ``report.md`` (a table, the
plot, 10 side-by-side examples) and ``report.png`` (the metric pairs).
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

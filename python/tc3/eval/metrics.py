"""The metric functions of tc3-eval, pure (texts in, numbers out) but for `reference_loss`, which runs the model.

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
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the unit of distinct-n and loop detection."""
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------------------------------------------------
# Pure metric functions


# rouge-score's own tokenizer keeps only [a-z0-9]: "descrição" becomes "descri", "o", and Japanese text nothing at
# all, so identical non-English texts scored 0. Runs of letters and digits of any script, CJK ideographs and kana
# one a token (those scripts put no spaces between words); Porter stemming for ASCII words only, as rouge-score
# stems (words longer than 3 characters), so English scores are unchanged.
_ROUGE_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


class RougeTokenizer:
    """rouge-score's Tokenizer interface, Unicode-aware (see above)."""

    def __init__(self):
        from rouge_score.tokenizers import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t
                for t in _ROUGE_TOKEN.findall(text.lower())]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F-measures of each pair (rouge-score with :class:`RougeTokenizer`), one list a metric."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=RougeTokenizer())
    per_pair = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
    return {key: [scores[key].fmeasure for scores in per_pair] for key in ("rouge1", "rouge2", "rougeL")}


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures over the pairs (0..1)."""
    return {key: mean(values) for key, values in rouge_scores(predictions, references).items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0..100), one reference a prediction."""
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus chrF (0..100)."""
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams of all texts (Li et al., 2016); 0 when there are none."""
    total, seen = 0, set()
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def has_loop(text: str, n: int = 4, min_repeats: int = 3) -> bool:
    """Whether some word n-gram occurs ``min_repeats`` times or more: the text went round a cycle."""
    tokens = words(text)
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return bool(counts) and max(counts.values()) >= min_repeats


def unsupported_share(answer: str, sources: Sequence[str]) -> float | None:
    """Faithfulness of a grounded answer: the share of its content words and numbers (distinct, lower-cased,
    `tc3.index.words` minus its stopwords) found in none of ``sources`` (the record and the question).
    0 = every word comes from them; None when the answer has no content word."""
    from tc3.index import STOPWORDS, words

    said = [w for w in dict.fromkeys(words(answer)) if w not in STOPWORDS]
    if not said:
        return None
    known = {w for source in sources for w in words(source)}
    return sum(w not in known for w in said) / len(said)


def bootstrap_ci(values: Sequence[float], seed: int = 0, resamples: int = 1000,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (titles drawn with replacement, seeded): how far the
    mean could move with another sample of the same size. None for fewer than 2 values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


def share(flags: Sequence[bool]) -> float:
    return sum(bool(flag) for flag in flags) / len(flags) if flags else 0.0


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every metric that needs only the texts."""
    scores = rouge(predictions, references)
    return {
        "rouge1": scores["rouge1"],
        "rouge2": scores["rouge2"],
        "rougeL": scores["rougeL"],
        "bleu": bleu(predictions, references),
        "chrf": chrf(predictions, references),
        "mean_words": mean([len(words(p)) for p in predictions]),
        "distinct2": distinct_n(predictions, 2),
        "loop_share": share([has_loop(p) for p in predictions]),
    }


# --------------------------------------------------------------------------------------------------------------------
# Loss on references


# The most float32 logits one loss pass holds (rows x width x vocabulary x 4 bytes), 1 GiB: cross-entropy makes a
# second copy, so a batch of long grounded prompts over a 49k vocabulary (50 x 1,100 x 49,152 x 4 = 10.8 GB, twice)
# would otherwise exhaust a 24 GB host or card.
LOSS_LOGITS_BYTES = 1 << 30


def loss_chunks(examples: list[tuple[list, list]], batch_size: int, vocab_size: int,
                budget: int) -> list[list[tuple[list, list]]]:
    """`examples` (sorted by length) in consecutive chunks of at most `batch_size`, each chunk's padded logits
    (len x longest x vocab_size x 4 bytes) within `budget` bytes; an example over it alone is still one chunk."""
    chunks, chunk, width = [], [], 0
    for example in examples:
        width = max(width, len(example[0]))
        if chunk and (len(chunk) == batch_size or (len(chunk) + 1) * width * vocab_size * 4 > budget):
            chunks.append(chunk)
            chunk, width = [], len(example[0])
        chunk.append(example)
    return chunks + [chunk] if chunk else chunks


def reference_loss(loaded, pairs: Sequence[tuple], instruction: str, batch_size: int = 8,
                   max_length: int = 1024) -> dict[str, float]:
    """Mean token NLL of each reference description given its prompt (a title, or an Ask), and its perplexity.

    The example is encoded as the trainer encodes it (`tc3.prompts.encode_example`): the loss covers the tokens
    after the prompt (the description and the template's end of turn); a reference longer than `max_length` is
    trimmed at a word boundary with its turn closed, never cut off its end token. Batches of at most `batch_size`
    whose logits stay within LOSS_LOGITS_BYTES (`loss_chunks`).
    """
    import torch

    from tc3.generate import as_ask
    from tc3.prompts import encode_example, prompt_messages

    model, tokenizer = loaded.model, loaded.tokenizer
    examples = []
    for item, description in pairs:
        ask = as_ask(item)
        messages = prompt_messages(ask.title, ask.question or instruction, ask.context)
        prompt_ids, completion_ids, _ = encode_example(tokenizer, messages, description, max_length)
        if completion_ids:
            examples.append((prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids))
    examples.sort(key=lambda example: len(example[0]))  # batches of similar lengths: little padding
    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vocab_size = model.config.get_text_config().vocab_size
    for chunk in loss_chunks(examples, batch_size, vocab_size, LOSS_LOGITS_BYTES):
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk], device=loaded.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk], device=loaded.device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk], device=loaded.device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    loss = total_nll / total_tokens if total_tokens else float("nan")
    return {"eval_loss": loss, "perplexity": math.exp(loss) if total_tokens and loss < 700 else float("inf"),
            "reference_tokens": total_tokens}

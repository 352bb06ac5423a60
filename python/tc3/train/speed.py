"""The fastest settings that fit the card: a memory model of a LoRA / QLoRA step, the choice of gradient
checkpointing and batch it allows, and model FLOPs utilisation (MFU) two ways. Pure functions: no torch here.

## The memory model (bytes; GB below = 1e9 bytes)

    peak = static + T x (head + kept x A + checkpointed x R + (A if checkpointed else 0))

- static: the base weights (4-bit: half a byte a linear weight, plus 1/64 byte of quantisation constants; the
  embedding and head in bf16), the LoRA parameters at 10 bytes each (fp32 weight, fp32 gradient, 8-bit AdamW's two
  states) and WORKSPACE.
- T: tokens a micro-batch feeds the model: the real tokens with padding-free batches (micro-batch x mean length),
  micro-batch x max_length with padded batches (the worst batch, where the peak is).
- A: activation bytes a kept layer holds a token: ACT_SCALE x the bf16 tensors a Llama layer with LoRA saves for its
  backward, 2 x (6 hidden + 2 kv + 3 intermediate) (norm inputs and outputs, q/k/v, attention output, gate, up and
  their product). A checkpointed layer recomputes them in the backward: one layer's A is there again meanwhile.
- R: what a checkpointed layer keeps a token: nothing on the GPU with unsloth's offloaded checkpointing (its input
  goes to host memory), its bf16 input (2 x hidden) with plain checkpointing (the hf backend).
- head: the logits and the loss a token: HEAD_UNSLOTH x vocab (its chunked cross-entropy) or HEAD_HF x vocab.

Fitted (2026-11-24..12-07, Llama-3-8B shape: 32 layers, hidden 4096, MLP 14336, kv 1024, vocab 128256; 4-bit,
LoRA r=32 on all 7 projections; peaks are torch's max allocated) on benches/results/gpu_train.json (H200, mean
201.7 tokens, max_length 799), gpu_train_hf_tc3.json (H100) and a probe of 2026-11-24 (H100, about 170 tokens, one run each):

| setup | tokens a micro-batch | measured GB | predicted GB |
|---|---|---|---|
| unsloth offloaded, batch 64 / 128 / 256 | 12,469 / 25,584 / 51,697 | 9.54 / 11.55 / 16.46 | 9.5 / 11.8 / 16.4 |
| unsloth offloaded, batch 8 / 96 (probe 11-24) | 1,360 / 16,320 | 6.7 / 9.7 | 7.6 / 10.2 |
| unsloth plain checkpointing, batch 96 (probe 11-24) | 16,320 | 13.5 | 14.5 |
| unsloth, no checkpointing, batch 32 / 64 | 6,232 / 12,473 | 33.49 / 55.04 | 31.6 / 55.9 |
| hf padded, plain checkpointing, batch 8 / 32 (max_length 799) | 6,392 / 25,568 positions | 14.1 / 33.22 | 13.9 / 33.5 |
| hf padding-free (tc3's varlen), plain checkpointing, batch 64 | 11,935 | 22.11 | 19.6 |

From these: static 7.34 GB (weights 5.70, LoRA 0.84, WORKSPACE 0.8: the intercept of the offloaded rows); A = 120
KB a token a layer (the no-checkpointing rows less the head: ACT_SCALE 0.86 of the 139 KB counted); head 56 KB
(unsloth: the offloaded slope, 176 KB a token, less A) and 641 KB (hf: the padded batch-32 row). `tests/
test_speed.py` checks every row within 15%; the `gpu` test checks a fresh prediction against a measured peak.

## The choice

Per process, an optimizer step aims at `tokens_per_step` (global batch = tokens_per_step / mean length). For each
micro-batch that splits it (1, 2, 4 ... accumulation steps) the fewest checkpointed layers whose predicted peak fits
HEADROOM of the card's free memory; among those, the fastest by a measured model of speed:

    speed = T / (T + T_HALF) / (1 + checkpointed / (2 x layers))

LoRA over a frozen base costs 4N FLOPs a token (forward 2N, backward to the inputs 2N); recomputing a layer's
forward adds 2N/layers, hence the second factor; a small micro-batch leaves the GPU waiting, the first (T_HALF:
from batch 32 at 64.2% MFU and batch 64 at 72.3%, no checkpointing, H200). With the default config it predicts the
H200 rows within 10%: batch 128 offloaded 51.3% (measured 51.7), batch 256 53.2% (51.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GB = 1e9
WORKSPACE = 0.8 * GB  # cuBLAS workspace, dequantisation buffers, the allocator's own
ACT_SCALE = 0.86  # measured kept-layer activations over the bf16 tensors counted (unsloth's fused kernels save less)
HEAD_UNSLOTH = 0.44  # bytes a token a vocabulary entry: unsloth's chunked cross-entropy
HEAD_HF = 5.0  # transformers' loss: bf16 logits, their fp32 copy, log-softmax and its gradient
LORA_STATE_BYTES = 10  # a LoRA parameter: fp32 weight 4, fp32 gradient 4, 8-bit AdamW 2
HEADROOM = 0.9  # of the free memory a plan may fill: fragmentation, the eval step, varying batch lengths
T_HALF = 1800  # tokens a micro-batch at which the GPU runs at half its attainable rate (see the docstring)
ACCUMULATIONS = (1, 2, 4, 8, 16, 32, 64)

# Dense bf16 peaks without sparsity, TFLOP/s, from the vendors' datasheets; the first name found in the device's
# name wins (so the longer names come first).
DATASHEET_BF16_TFLOPS = (
    ("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989), ("A100", 312), ("L40S", 362),
    ("RTX 4090", 165), ("A10", 125), ("L4", 121),
)  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    """What the memory model reads of a decoder-only model's config."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_dim: int  # key/value width: kv heads x head dim
    tied: bool = False  # input embedding and head share one matrix

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        """From a transformers config's `to_dict()`. KeyError when a Llama-like field is missing."""
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return cls(layers=config["num_hidden_layers"], hidden=config["hidden_size"],
                   intermediate=config["intermediate_size"], vocab=config["vocab_size"],
                   kv_dim=config.get("num_key_value_heads", heads) * head_dim,
                   tied=bool(config.get("tie_word_embeddings", False)))

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a decoder layer, by its usual name."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.projections().values())

    def params(self) -> int:
        """Parameters of the model (norms included), as the MFU counts them."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * (self.layer_linear_params() + 2 * self.hidden) + self.hidden

    def activation_bytes(self) -> float:
        """A: bytes a kept layer holds a token for its backward (bf16)."""
        return ACT_SCALE * 2 * (6 * self.hidden + 2 * self.kv_dim + 3 * self.intermediate)


def static_bytes(shape: ModelShape, lora_r: int, targets: list[str], quantized: bool) -> float:
    """Bytes held whatever the batch: the base weights (4-bit or bf16), the LoRA parameters and their optimizer
    states, WORKSPACE. A target that is not a Llama projection name counts nothing."""
    linear = shape.layers * shape.layer_linear_params()
    weights = linear * (0.5 + 1 / 64) if quantized else linear * 2
    weights += shape.vocab * shape.hidden * 2 * (1 if shape.tied else 2)
    lora = shape.layers * sum(lora_r * (a + b) for name, (a, b) in shape.projections().items() if name in targets)
    return weights + lora * LORA_STATE_BYTES + WORKSPACE


def peak_bytes(shape: ModelShape, static: float, tokens: float, checkpointed: int, offloaded: bool,
               unsloth: bool) -> float:
    """Predicted peak of a training step: `tokens` a micro-batch, `checkpointed` of the layers recomputed in the
    backward (offloaded: their inputs in host memory), the rest kept."""
    act = shape.activation_bytes()
    head = (HEAD_UNSLOTH if unsloth else HEAD_HF) * shape.vocab
    kept_input = 0.0 if offloaded else 2 * shape.hidden
    per_token = head + (shape.layers - checkpointed) * act + checkpointed * kept_input + (act if checkpointed else 0)
    return static + tokens * per_token


def relative_speed(tokens: float, checkpointed: int, layers: int) -> float:
    """Tokens/s of a micro-batch of `tokens` with `checkpointed` of `layers` recomputed, as a share of the rate
    attainable at no recomputation and an endless batch (see the module's docstring)."""
    return tokens / (tokens + T_HALF) / (1 + checkpointed / (2 * layers))


def target_batch(tokens_per_step: int, mean_length: float, world_size: int) -> int:
    """Sequences a process sums into one optimizer step for the step to hold about `tokens_per_step` tokens."""
    return max(1, round(tokens_per_step / mean_length / world_size))


@dataclass(frozen=True)
class Workload:
    """What a run's memory and speed depend on, resolved before the model loads."""

    shape: ModelShape
    static: float  # bytes: static_bytes
    mean_length: float  # tokens an example, measured (tc3.train.examples.measure_lengths)
    max_length: int
    padded: bool  # batches padded to their longest row (hf without variable-length attention)
    unsloth: bool  # unsloth's offloaded checkpointing and chunked loss; else transformers' plain ones
    tokens_per_step: int  # an optimizer step's target, over every process
    world_size: int = 1

    def target_batch(self) -> int:
        return target_batch(self.tokens_per_step, self.mean_length, self.world_size)

    def tokens(self, micro: int) -> float:
        """Tokens a micro-batch of `micro` sequences feeds the model (padded: the worst batch)."""
        return micro * (self.max_length if self.padded else self.mean_length)


@dataclass(frozen=True)
class Option:
    """One way to run a step: `checkpointed` of the layers recomputed, the micro-batch, accumulation."""

    checkpointed: int | None  # layers recomputed in the backward; None: every one (their number unknown)
    per_device_batch: int
    gradient_accumulation: int
    predicted_peak_gb: float | None  # None where nothing is predicted (CPU, a model shape tc3 cannot read)
    speed: float | None = None  # relative_speed

    def describe(self, layers: int | None, offloaded: bool) -> str:
        if self.checkpointed == 0:
            how = "no gradient checkpointing"
        elif self.checkpointed is None or self.checkpointed == layers:
            how = "every layer checkpointed" + (" (offloaded)" if offloaded else "")
        else:
            how = f"{self.checkpointed} of {layers} layers checkpointed{' (offloaded)' if offloaded else ''}, " \
                  f"{layers - self.checkpointed} kept"
        peak = "" if self.predicted_peak_gb is None else f", predicted peak {self.predicted_peak_gb:.1f} GB"
        return f"{how}, batch {self.per_device_batch} x {self.gradient_accumulation}{peak}"


def _option(work: Workload, micro: int, accumulation: int, checkpointed: int) -> Option:
    tokens = work.tokens(micro)
    peak = peak_bytes(work.shape, work.static, tokens, checkpointed, work.unsloth, work.unsloth)
    speed = relative_speed(micro * work.mean_length, checkpointed, work.shape.layers)
    return Option(checkpointed, micro, accumulation, peak / GB, speed)


def options(work: Workload, checkpointing: bool | str, batch: int | str, accumulation: int | str) -> list[Option]:
    """Every (checkpointed layers, micro-batch, accumulation) the explicit values allow: `checkpointing` True (every
    layer), False (none) or "auto" (any number); `batch` and `accumulation` an int or "auto" (splits of the target
    batch, see Workload.target_batch)."""
    layers = work.shape.layers
    ks = {True: [layers], False: [0]}.get(checkpointing, list(range(layers + 1)))
    return [_option(work, micro, acc, k) for micro, acc in splits(work.target_batch(), batch, accumulation) for k in ks]


def splits(target: int, batch: int | str, accumulation: int | str) -> list[tuple[int, int]]:
    """(micro-batch, accumulation) pairs for a target batch of `target` sequences, largest micro-batch first: the
    explicit values, `auto` filled from the target (both auto: every split of ACCUMULATIONS)."""
    if batch != "auto":
        return [(batch, accumulation if accumulation != "auto" else max(1, round(target / batch)))]
    if accumulation != "auto":
        return [(math.ceil(target / accumulation), accumulation)]
    return sorted({(math.ceil(target / a), a) for a in ACCUMULATIONS if a <= target}, reverse=True)


def fallbacks(candidates: list[Option], budget: float) -> list[Option]:
    """The options to try in order: the fastest that fits `budget` bytes (the least memory breaks a tie), then each
    time the fastest predicted at most 0.9 of the last one's peak (an out-of-memory error means the model was short).
    Nothing fits: the one of least memory alone."""
    fits = [o for o in candidates if o.predicted_peak_gb * GB <= budget]
    if not fits:
        return [min(candidates, key=lambda o: o.predicted_peak_gb)]
    order = [max(fits, key=lambda o: (o.speed, -o.predicted_peak_gb))]
    while smaller := [o for o in fits if o.predicted_peak_gb < order[-1].predicted_peak_gb
                      and o.predicted_peak_gb <= 0.9 * order[-1].predicted_peak_gb]:
        order.append(max(smaller, key=lambda o: (o.speed, -o.predicted_peak_gb)))
    return order


def choose(work: Workload, free_bytes: float, checkpointing: bool | str, batch: int | str,
           accumulation: int | str) -> tuple[list[Option], str]:
    """(the options to try in order, the first one's reason in words) on a card with `free_bytes` free."""
    budget = HEADROOM * free_bytes
    order = fallbacks(options(work, checkpointing, batch, accumulation), budget)
    best = order[0]
    fits = best.predicted_peak_gb * GB <= budget
    room = f"{budget / GB:.1f} GB usable ({free_bytes / GB:.1f} free x {HEADROOM})"
    reason = (f"{best.describe(work.shape.layers, work.unsloth)} of {room}" if fits else
              f"nothing is predicted to fit {room}: the least memory, {best.describe(work.shape.layers, work.unsloth)}")
    if fits and best.checkpointed:
        kept = _option(work, best.per_device_batch, best.gradient_accumulation, 0)
        reason += f"; no checkpointing would need {kept.predicted_peak_gb:.1f} GB at this batch"
    return order, reason


def datasheet_tflops(device_name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of the datasheet of a card by its name (torch.cuda.get_device_name); None for
    a card not in DATASHEET_BF16_TFLOPS: no guess."""
    return next((rate for name, rate in DATASHEET_BF16_TFLOPS if name.lower() in device_name.lower()), None)


def mfu(params: int, tokens_per_s: float, tflops: float | None) -> float | None:
    """4 x params FLOPs a token (LoRA: forward, and backward to the inputs) over `tflops`; None without a rate.
    Recomputation and attention's own FLOPs are not counted."""
    return round(4 * params * tokens_per_s / (tflops * 1e12), 4) if tflops else None


def mfu_both(params: int, tokens_per_s: float, device_name: str, measured_tflops: float | None) -> dict:
    """MFU against the matmul rate measured on the card and against its datasheet peak, with both rates."""
    sheet = datasheet_tflops(device_name)
    return {"device": device_name, "matmul_tflops_measured": measured_tflops, "datasheet_bf16_tflops": sheet,
            "mfu_measured_rate": mfu(params, tokens_per_s, measured_tflops),
            "mfu_datasheet": mfu(params, tokens_per_s, sheet)}

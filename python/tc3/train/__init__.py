"""QLoRA / LoRA fine-tuning with TRL's SFTTrainer on conversational prompt/completion pairs.

Two backends share everything but model loading: `unsloth` (CUDA: FastLanguageModel, its gradient checkpointing and
padding-free batching) and `hf` (transformers + PEFT; bitsandbytes 4-bit on CUDA, plain LoRA on CPU).

The package, one concern a module, in the order a run goes through them:

- `plan`: the TrainPlan (backend, device, precision, optimizer, max_length, attention, checkpointing, batch, world
  size), resolved once and saved with the run;
- `examples`: the splits sampled, measured and tokenized to max_length;
- `speed`: the memory model and the choice of gradient checkpointing and batch for the card (`auto`), MFU two ways;
  `card`: the GPU's free memory, name and measured matmul rate;
- `model`: the environment, then the base and its LoRA adapter by backend;
- `trainer`: the SFTTrainer set up (`build_run`); `checkpoints`: resuming, the run's totals and log;
- `run`: `train` and `dry_run`; `distributed`, `trace`: several processes, and what each trained on.
"""

from tc3.train.checkpoints import COMPLETE_MARKER, RunTotals, check_output_dir
from tc3.train.distributed import say
from tc3.train.run import dry_run, train
from tc3.train.trace import lora_digest, write_trace
from tc3.train.trainer import Run, build_run

__all__ = ["COMPLETE_MARKER", "Run", "RunTotals", "build_run", "check_output_dir", "dry_run", "lora_digest", "say",
           "train", "write_trace"]

import subprocess
import sys
from pathlib import Path

import pytest
from tc3.cli.train import main
from tc3.config import FIELDS, ConfigError, TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"


def test_shipped_configs_load():
    assert load_config(CONFIGS / "llama3-8b-qlora.yaml") == TrainConfig()  # the 8B file is the defaults
    tiny = load_config(CONFIGS / "tiny-cpu.yaml")
    assert tiny.backend == "hf" and not tiny.load_in_4bit and tiny.max_steps


def test_8b_defaults_keep_the_course_choices():
    c = TrainConfig()
    assert (c.model, c.lora_r, c.lora_alpha, c.lora_dropout) == ("unsloth/llama-3-8b-bnb-4bit", 32, 64, 0.0)
    assert len(c.lora_target_modules) == 7 and c.learning_rate == 2e-4 and c.lr_scheduler == "linear"
    assert (c.optimizer, c.seed, c.load_in_4bit) == ("adamw_8bit", 3407, True)
    assert c.max_length is None  # derived from the data


def test_overrides_are_typed():
    c = load_config(
        CONFIGS / "tiny-cpu.yaml",
        ["learning_rate=5e-3", "max_steps=null", "lora_target_modules=q_proj,v_proj", "padding_free=false",
         "epochs=2", "model=org/name", "instruction=en"],
    )  # fmt: skip
    assert c.learning_rate == 5e-3 and isinstance(c.learning_rate, float)
    assert c.max_steps is None and c.epochs == 2.0
    assert c.lora_target_modules == ["q_proj", "v_proj"] and c.padding_free is False
    assert (c.model, c.instruction) == ("org/name", "en")


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora_rank=8", "unknown key(s) lora_rank in the command line; valid keys: model, data"),
        ("lora_r=eight", "lora_r must be int, got 'eight'"),
        ("lora_r=8.5", "lora_r must be int"),
        ("max_steps=0", "max_steps must be positive"),
        ("load_in_4bit=maybe", "load_in_4bit must be bool"),
        ("backend=jax", "backend must be one of auto, unsloth, hf"),
        ("warmup_ratio=1.5", "warmup_ratio and lora_dropout must be in [0, 1)"),
        ("lora_r", "override 'lora_r' is not key=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(CONFIGS / "tiny-cpu.yaml", [override])
    assert message in str(error.value)


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x/y\nbatch_size: 4\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert f"unknown key(s) batch_size in {bad}" in str(error.value)
    assert all(key in str(error.value) for key in FIELDS)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, prep_dir):
    cases = [
        ["--config", str(tmp_path / "missing.yaml")],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), "bogus=1"],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"data={tmp_path / 'nowhere'}", f"model={tmp_path}", "--dry-run"],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"data={prep_dir}", f"model={tmp_path / 'no-model'}", "--dry-run"],
    ]
    expected = ["not found", "unknown key(s) bogus", "is not a tc3-prep output dir", "no-model' does not exist"]
    for argv, fragment in zip(cases, expected):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tc3-train: error: ") and fragment in err and err.count("\n") == 1, err


def test_help_does_not_import_torch():
    code = "import sys, tc3.cli.train, tc3.config, tc3.prompts, tc3.data; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(PYTHON_DIR)}, check=True
    )
    assert out.stdout.strip() == "False"

import subprocess
import sys
from pathlib import Path

import pytest
from tc3.cli.train import main
from tc3.config import FIELDS, ConfigError, TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "python" / "tc3" / "configs"
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
    "override, key, value",
    [
        # a str field takes the text exactly as typed: YAML would read a mapping, an int, a bool, a float, null
        ("instruction=Write a product description: {title}", "instruction", "Write a product description: {title}"),
        ("output_dir=2024_06_01", "output_dir", "2024_06_01"),
        ("output_dir=runs/#1 [final]", "output_dir", "runs/#1 [final]"),
        ("instruction=yes", "instruction", "yes"),
        ("instruction=  Describe '{title}'.  ", "instruction", "  Describe '{title}'.  "),
        ("model=1e3", "model", "1e3"),
        ("data=null", "data", "null"),
        ("output_dir=0x10", "output_dir", "0x10"),
        ("instruction=a=b", "instruction", "a=b"),
        # the other types by theirs
        ("seed=100_000", "seed", 100_000),
        ("learning_rate=5e-3", "learning_rate", 5e-3),
        ("epochs=2", "epochs", 2.0),
        ("padding_free=off", "padding_free", False),
        ("load_in_4bit=True", "load_in_4bit", True),
        ("max_length=NULL", "max_length", None),
        ("max_length=512", "max_length", 512),
        ("lora_target_modules=[q_proj, 'v_proj']", "lora_target_modules", ["q_proj", "v_proj"]),
        ("lora_target_modules= q_proj , k_proj", "lora_target_modules", ["q_proj", "k_proj"]),
    ],
)
def test_an_override_is_read_by_the_type_of_its_field(override, key, value):
    got = getattr(load_config(CONFIGS / "tiny-cpu.yaml", [override]), key)
    assert got == value and type(got) is type(value)


def test_a_config_file_reads_values_by_field_type_too(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "output_dir: 2024_06_01\ninstruction: 'Write a product description: {title}'\nmodel: 1e3\n"
        "max_steps:\nlearning_rate: 5e-3\nload_in_4bit: no\nlora_target_modules:\n  - q_proj\n  - v_proj\n"
    )
    c = load_config(config)
    assert (c.output_dir, c.instruction, c.model) == ("2024_06_01", "Write a product description: {title}", "1e3")
    assert c.max_steps is None and c.learning_rate == 5e-3 and c.load_in_4bit is False
    assert c.lora_target_modules == ["q_proj", "v_proj"]


def test_a_saved_config_loads_back_the_same(tmp_path):
    """tc3-train saves the resolved config (tc3_config.yaml); tc3-export and --resume read it back."""
    config = load_config(
        CONFIGS / "tiny-cpu.yaml",
        ["output_dir=2024_06_01", "instruction=Write: {title}", "model=true", "data=~", "max_steps=null"],
    )
    config.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora_rank=8", "unknown key lora_rank (did you mean lora_r?) in the command line; tc3-train --help lists"),
        ("lora_r=eight", "lora_r must be int, got 'eight'"),
        ("lora_r=8.5", "lora_r must be int"),
        ("max_steps=0", "max_steps must be positive"),
        ("load_in_4bit=maybe", "load_in_4bit must be bool"),
        ("backend=jax", "backend must be one of auto, unsloth, hf"),
        ("warmup_ratio=1.5", "warmup_ratio and lora_dropout must be in [0, 1)"),
        ("lora_r", "override 'lora_r' is not key=value"),
        ("lora_r=", "lora_r must be int, got ''"),
        ("seed=1.5", "seed must be int, got '1.5'"),
        ("max_steps=ten", "max_steps must be int or null, got 'ten'"),
        ("learning_rate=fast", "learning_rate must be float, got 'fast'"),
        ("learning_rate=nan", "learning_rate must be float, got 'nan'"),
        ("epochs=inf", "epochs must be float, got 'inf'"),
        ("load_in_4bit=1", "load_in_4bit must be bool (true or false), got '1'"),
        ("padding_free=", "padding_free must be bool (true or false), got ''"),
        ("lora_target_modules=[q_proj, [v_proj]]", "lora_target_modules must be a list of names (a,b,c), got a list"),
        ("lora_target_modules=[q_proj", "lora_target_modules must be a list of names (a,b,c), got '[q_proj'"),
        ("lora_target_modules=,", "lora_target_modules must name at least one module"),
        ("model=", "model must not be empty"),
        ("output_dir=  ", "output_dir must not be empty"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(CONFIGS / "tiny-cpu.yaml", [override])
    assert message in str(error.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: null\n", "model cannot be null"),
        ("output_dir:\n", "output_dir cannot be null"),
        ("lora_r: [8]\n", "lora_r must be int, got a list"),
        ("instruction: {pt: x}\n", "instruction must be str, got a mapping"),
        ("seed: 1.5\n", "seed must be int, got '1.5'"),
        ("- model\n", "must be a mapping of key: value"),
    ],
)
def test_bad_values_in_a_file_say_what_is_wrong(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert message in str(error.value)


def test_unknown_key_in_file_is_named_with_the_closest_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x/y\nbatch_size: 4\nzzz: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert str(error.value) == (f"unknown keys batch_size (did you mean per_device_batch_size?), zzz in {bad}; "
                                "tc3-train --help lists the keys")


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, prep_dir, tiny_model_dir):
    cases = [
        ["--config", str(tmp_path / "missing.yaml")],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), "bogus=1"],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), "lora_r=eight"],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"data={tmp_path / 'nowhere'}", f"model={tiny_model_dir}",
         "--dry-run"],
        ["--config", str(CONFIGS / "tiny-cpu.yaml"), f"data={prep_dir}", f"model={tmp_path / 'no-model'}", "--dry-run"],
    ]
    expected = ["not found", "unknown key bogus", "lora_r must be int, got 'eight'", "is not a tc3-prep output dir",
                "no-model' does not exist"]
    for argv, fragment in zip(cases, expected):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tc3-train: error: ") and fragment in err and err.count("\n") == 1, err


def test_an_empty_split_is_one_line_before_anything_loads(tmp_path, capsys, prep_dir, tiny_model_dir):
    import shutil

    import pyarrow.parquet as pq

    for split in ("train", "validation"):
        data = tmp_path / split
        shutil.copytree(prep_dir, data)
        for file in (data / "data").glob(f"{split}-*.parquet"):
            pq.write_table(pq.read_table(file).slice(0, 0), file)
        argv = ["--config", "tiny-cpu", f"data={data}", f"model={tiny_model_dir}", "--dry-run"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tc3-train: error: the {split} split of {data} is empty ("), err
        assert err.count("\n") == 1
    argv = ["--config", "tiny-cpu", f"data={prep_dir}", f"model={tiny_model_dir}", "kinds=[metadata_only]", "--dry-run"]
    assert main(argv) == 2
    assert f"the validation split of {prep_dir} has no row of kinds metadata_only" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys, tc3.cli.train, tc3.config, tc3.prompts, tc3.data; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(PYTHON_DIR)}, check=True
    )
    assert out.stdout.strip() == "False"

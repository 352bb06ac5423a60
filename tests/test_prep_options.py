"""The engine's options cross the binding as one `PrepOptions`: its defaults are the engine's, written once in Rust
(`Options::default()`); the stub `_rust_clean.pyi` and `tc3-prep`'s flags must agree with the extension."""

from __future__ import annotations

import ast
import inspect
import json
import types
from pathlib import Path

import pytest

from tc3 import _rust_clean, prep
from tc3._rust_clean import PrepOptions
from tc3.cli.prep import EXAMPLE_INPUT, parser
from tc3.errors import UserError

STUB = Path(_rust_clean.__file__).with_name("_rust_clean.pyi")
DEFAULTS = PrepOptions()


def stub() -> dict[str, ast.AST]:
    return {node.name: node for node in ast.parse(STUB.read_text()).body if hasattr(node, "name")}


def getters() -> set[str]:
    return {name for name, v in vars(PrepOptions).items() if isinstance(v, types.GetSetDescriptorType)}


def test_the_stub_names_what_prep_options_takes_and_holds() -> None:
    cls = stub()["PrepOptions"]
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    keywords = [a.arg for a in init.args.kwonlyargs]
    properties = [n.name for n in cls.body if isinstance(n, ast.FunctionDef) and n.decorator_list]
    assert keywords == properties and set(keywords) == set(getters())  # the extension's getters come unordered
    # Defaults are `...` in the stub: their one home is the engine (read them from PrepOptions()).
    assert all(isinstance(d, ast.Constant) and d.value is Ellipsis for d in init.args.kw_defaults)
    for name in keywords:  # the extension takes each keyword and gives back what it holds
        assert getattr(PrepOptions(**{name: getattr(DEFAULTS, name)}), name) == getattr(DEFAULTS, name)


def test_the_stub_functions_match_the_extension() -> None:
    declared = stub()
    functions = {name: node for name, node in declared.items() if isinstance(node, ast.FunctionDef)}
    assert set(functions) == {n for n, v in vars(_rust_clean).items() if isinstance(v, types.BuiltinFunctionType)}
    for name, node in functions.items():
        got = inspect.signature(getattr(_rust_clean, name)).parameters
        want = node.args.args + node.args.kwonlyargs
        assert list(got) == [a.arg for a in want], name
        literal = dict(zip([a.arg for a in node.args.kwonlyargs], node.args.kw_defaults))
        for arg, default in literal.items():
            if isinstance(default, ast.Constant) and got[arg].default is not inspect.Parameter.empty:
                assert repr(default.value) == str(got[arg].default).strip("'\""), (name, arg)


def test_the_stub_constants_are_in_the_extension() -> None:
    constants = [n.target.id for n in ast.parse(STUB.read_text()).body if isinstance(n, ast.AnnAssign)]
    assert constants and all(hasattr(_rust_clean, c) for c in constants)
    assert DEFAULTS.dedup in _rust_clean.DEDUP_MODES


def test_the_command_line_defaults_are_the_engines() -> None:
    args = vars(parser().parse_args(["--example", "-o", "x"]))
    for name in getters():
        flag = {"drop_patterns": "drop_pattern"}.get(name, name)
        if flag in args and args[flag] is not None:
            assert args[flag] == getattr(DEFAULTS, name), name
    assert "(default 0.01)" in parser().format_help().replace("\n", " ")


def test_mistakes_are_one_line_user_errors_from_the_engine() -> None:
    for given, message in [
        ({"seed": -1}, "--seed must be zero or more, not -1"),
        ({"threads": 0}, "--threads must be at least 1, not 0"),
        ({"sample": -2}, "--sample must be at least 1, not -2"),
        ({"dedup": "fuzzy"}, '--dedup must be none, exact or near, not "fuzzy"'),
        ({"drop_kinds": "mixed,nope"}, '--drop-kinds: "nope" is not a kind'),
        ({"min_desc_chars": 6000}, "--min-desc-chars is larger than --max-desc-chars"),
        ({"limit": 2**64}, "a number is out of range"),
    ]:
        with pytest.raises(UserError, match=message) as caught:
            prep.options(**given)
        assert caught.value.status == 2
    with pytest.raises(TypeError, match="frobnicate"):
        PrepOptions(frobnicate=1)


def test_replace_checks_again_and_keeps_the_rest() -> None:
    options = PrepOptions(seed=7, drop_kinds=["mixed"])
    changed = options.replace(limit=5)
    assert (changed.seed, changed.drop_kinds, changed.limit, options.limit) == (7, ["mixed"], 5, None)
    with pytest.raises(_rust_clean.EngineError):
        options.replace(val_fraction=1.5)


def test_stats_come_back_typed_and_equal_the_file(tmp_path: Path) -> None:
    stats = prep.run([EXAMPLE_INPUT], tmp_path / "out", threads=1)
    assert isinstance(stats, dict) and isinstance(stats["dropped"], dict) and isinstance(stats["seconds"], float)
    assert stats == json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "rule_seconds" not in stats  # off by default: a default run's outputs do not vary


def test_rule_times_add_only_times(tmp_path: Path) -> None:
    from tc3.cli.prep import main

    assert main(["--example", "-o", str(tmp_path / "plain"), "-q", "--threads", "2"]) == 0
    assert main(["--example", "-o", str(tmp_path / "timed"), "-q", "--threads", "2", "--rule-times"]) == 0
    plain, timed = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("plain", "timed"))
    assert set(timed.pop("rule_seconds")) == {"text", "unescape", "kinds", "dedup"}
    assert {**timed, "seconds": 0} == {**plain, "seconds": 0}
    for name in ("README.md", "data/train-00000-of-00001.parquet"):
        assert (tmp_path / "timed" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()

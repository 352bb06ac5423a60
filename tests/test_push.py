"""tc3-push and the model card it publishes: what goes up, the repo's real visibility, the checks a push needs (made by
the dry run too), the token's secrecy, and no absolute local path in a card. The Hub is a fake `HfApi`: no network."""

import json
from pathlib import Path

import httpx
import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tc3.cli.push import main
from tc3.config import ConfigError, TrainConfig
from tc3.hub import push
from tc3.model_card import write_model_card

SECRET = "hf_this_must_never_be_printed_or_saved"
MODEL_REPO_FILES = {"README.md", "adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                    "tokenizer_config.json", "chat_template.jinja", "train_log.jsonl", "metrics.json"}  # fmt: skip


def not_found(url: str) -> RepositoryNotFoundError:
    response = httpx.Response(404, request=httpx.Request("GET", url))
    return RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: {url}", response=response)


class FakeHub:
    """The Hub as HfApi sees it: users, repos with their visibility, base models; records what was created/sent."""

    def __init__(self, user="me", orgs=(), role="write", repos=None, models=None, unreachable=False):
        self.user, self.orgs, self.role, self.unreachable = user, list(orgs), role, unreachable
        self.created_public_meanwhile = False  # someone makes the repo public between the check and the upload
        self.refusal = None  # create_commit raises this
        self.repos = dict(repos or {})  # repo id -> private
        self.models = {"org/base": False, **(models or {})}  # base model id -> private
        self.tokens, self.created, self.commits = [], [], []

    def api(self, token=None):
        hub = self

        class Api:
            def __init__(self):
                hub.tokens.append(token)

            def whoami(self):
                if hub.unreachable:
                    raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
                return {"name": hub.user, "orgs": [{"name": o} for o in hub.orgs],
                        "auth": {"accessToken": {"role": hub.role}}}  # fmt: skip

            def repo_info(self, repo_id, repo_type=None):
                if repo_id not in hub.repos:
                    raise not_found(f"https://huggingface.co/api/models/{repo_id}")
                return type("Info", (), {"private": hub.repos[repo_id]})()

            def model_info(self, repo_id):
                if repo_id not in hub.models:
                    raise not_found(f"https://huggingface.co/api/models/{repo_id}")
                return type("Info", (), {"private": hub.models[repo_id]})()

            def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
                hub.created.append((repo_id, private))
                hub.repos.setdefault(repo_id, False if hub.created_public_meanwhile else private)

            def create_commit(self, repo_id, operations, commit_message, repo_type=None):
                if hub.refusal:
                    raise hub.refusal
                def content(op):
                    source = op.path_or_fileobj
                    return source if isinstance(source, bytes) else Path(source).read_bytes()

                hub.commits.append((repo_id, {op.path_in_repo: content(op) for op in operations}))

        return Api()


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return fake


def trained_dir(root: Path, base: str = "org/base") -> Path:
    """A tc3-train output dir (adapter, tokenizer, config, log, metrics, card, a checkpoint) with a user's file and
    trainer leftovers beside it; the adapter's base is `base`."""
    run = root / "run"
    (run / "checkpoint-16").mkdir(parents=True)
    (run / ".final.partial").mkdir()
    files = {
        "adapter_model.safetensors": "weights", "tokenizer.json": "{}", "tokenizer_config.json": "{}",
        "chat_template.jinja": "{{ messages }}", "train_log.jsonl": '{"step": 1, "loss": 2.0}\n',
        "metrics.json": '{"eval_loss": 1.5}', "tc3_config.yaml": f"model: {root}/models/base\n",
        "training_args.bin": "pickle", "optimizer.pt": "state", "notes.txt": "my own notes", ".env": "SECRET=1",
        "checkpoint-16/adapter_model.safetensors": "weights", "checkpoint-16/optimizer.pt": "state",
        "checkpoint-16/README.md": "PEFT's card",
    }  # fmt: skip
    for name, text in files.items():
        (run / name).write_text(text)
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    config = TrainConfig(model=base, data=str(root / "prep"), output_dir=str(run))
    write_model_card(run, config, {"eval_loss": 1.5, "train_examples": 10, "eval_examples": 2})
    return run


def uploaded(hub: FakeHub) -> dict[str, bytes]:
    assert len(hub.commits) == 1
    return hub.commits[0][1]


def test_only_what_a_model_repo_needs_goes_up_and_the_dry_run_lists_it(hub, tmp_path, capsys):
    run = trained_dir(tmp_path)
    plan = push(run, "me/tc3-tiny", dry_run=True)
    listed = capsys.readouterr().out
    assert {str(f) for f in plan.files} == MODEL_REPO_FILES
    for name in MODEL_REPO_FILES:
        assert f"  {name}  (" in listed
    for name in ("tc3_config.yaml", "notes.txt", ".env", "optimizer.pt", "training_args.bin", "checkpoint-16"):
        assert name not in listed
    assert "new repo, created private" in listed and "would upload 8 files to me/tc3-tiny" in listed
    assert hub.created == [] and hub.commits == []  # a dry run uploads nothing

    push(run, "me/tc3-tiny")
    assert hub.created == [("me/tc3-tiny", True)]
    files = uploaded(hub)
    assert set(files) == MODEL_REPO_FILES
    assert files["adapter_model.safetensors"] == b"weights"
    assert "uploaded 8 files to https://huggingface.co/me/tc3-tiny (private)" in capsys.readouterr().out


def test_an_existing_public_repo_is_said_and_refused_without_public(hub, tmp_path, capsys):
    """Seen: "(private)" was printed while create_repo(exist_ok=True) left an existing public repo public."""
    run = trained_dir(tmp_path)
    hub.repos["me/tc3-tiny"] = False
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match="me/tc3-tiny already exists and is public: pass --public to upload"):
            push(run, "me/tc3-tiny", dry_run=dry_run)
        out = capsys.readouterr().out
        assert "(public)" in out and "private" not in out
    assert hub.commits == [] and hub.created == []

    push(run, "me/tc3-tiny", private=False)
    assert set(uploaded(hub)) == MODEL_REPO_FILES and hub.created == []
    assert "to https://huggingface.co/me/tc3-tiny (public)" in capsys.readouterr().out


def test_an_existing_private_repo_stays_private_and_says_so(hub, tmp_path, capsys):
    hub.repos["me/tc3-tiny"] = True
    push(trained_dir(tmp_path), "me/tc3-tiny", private=False)
    out = capsys.readouterr().out
    assert "stays private" in out and "(private)" in out and hub.created == []


def test_a_repo_made_public_meanwhile_is_not_written(hub, tmp_path):
    """Between the check and the upload someone creates the repo public: create_repo(exist_ok=True) leaves it so;
    the push reads the visibility back and stops."""
    hub.created_public_meanwhile = True
    with pytest.raises(ConfigError, match="me/tc3-tiny is public: pass --public"):
        push(trained_dir(tmp_path), "me/tc3-tiny")
    assert hub.commits == []


def test_the_dry_run_says_what_would_fail(hub, tmp_path, monkeypatch, capsys):
    """Seen: an adapter whose base is a local folder was pushed as if anyone could load it; without a token the dry
    run said "would upload". Every problem is named, in one line, and nothing is uploaded."""
    local_base = tmp_path / "models" / "smollm2"
    local_base.mkdir(parents=True)
    run = trained_dir(tmp_path, base=str(local_base))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConfigError) as error:
        push(run, "me/tc3-tiny", dry_run=True)
    message = str(error.value)
    assert message.startswith("the push would fail: ") and "\n" not in message
    assert f"the adapter's base model is the local folder '{local_base}', which nobody else can load" in message
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in message
    assert "would upload" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="^nothing uploaded: the adapter's base model is the local folder"):
        push(run, "me/tc3-tiny")
    assert hub.tokens == [] and hub.commits == []


@pytest.mark.parametrize(
    "hub_state, message",
    [
        ({"role": "read"}, "the Hugging Face token is read-only"),
        ({"user": "someone-else"}, "the token's user someone-else cannot write to me"),
        ({"models": {"org/base": True}, "repos": {"me/tc3-tiny": False}}, "the base model org/base is private"),
        ({"unreachable": True}, "the Hub refused the token or could not be reached: [Errno -3]"),
    ],
)
def test_the_hub_side_checks(hub, tmp_path, hub_state, message):
    for key, value in hub_state.items():
        setattr(hub, key, {**getattr(hub, key), **value} if isinstance(value, dict) else value)
    run = trained_dir(tmp_path)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match="would fail|nothing uploaded") as error:
            push(run, "me/tc3-tiny", private=False, dry_run=dry_run)
        assert message in str(error.value)
    assert hub.commits == [] and hub.created == []


def test_a_base_missing_from_the_hub_is_a_problem(hub, tmp_path):
    with pytest.raises(ConfigError, match="the base model org/gone is not on the Hub"):
        push(trained_dir(tmp_path, base="org/gone"), "me/tc3-tiny", dry_run=True)


def test_an_org_repo_is_fine_for_its_members(hub, tmp_path):
    hub.orgs = ["team"]
    push(trained_dir(tmp_path), "team/tc3-tiny")
    assert hub.created == [("team/tc3-tiny", True)]


def test_a_base_from_the_hub_cache_goes_up_as_its_hub_id(hub, tmp_path, capsys):
    """Training offline from a cached snapshot records the snapshot's local path; others load the hub id."""
    snapshot = tmp_path / "hub" / "models--org--base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    run = trained_dir(tmp_path, base=str(snapshot))
    push(run, "me/tc3-tiny")
    published = json.loads(uploaded(hub)["adapter_config.json"])
    assert published == {"base_model_name_or_path": "org/base", "peft_type": "LORA"}
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(snapshot)
    assert "base_model_name_or_path 'org/base'" in capsys.readouterr().out


def test_the_token_comes_from_hf_token_or_the_login_and_is_never_printed_or_saved(hub, tmp_path, monkeypatch, capsys):
    run = trained_dir(tmp_path)
    push(run, "me/tc3-tiny", dry_run=True)
    push(run, "me/tc3-tiny")
    hub.repos["me/public"] = False
    assert main([str(run), "me/public"]) == 2
    assert hub.tokens and set(hub.tokens) == {SECRET}

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_login_secret")
    push(run, "me/tc3-tiny")
    assert hub.tokens[-1] == "hf_login_secret"

    printed = capsys.readouterr()
    assert not {SECRET, "hf_login_secret"} & {*printed.out.split(), *printed.err.split()}
    assert SECRET not in printed.out + printed.err and "hf_login_secret" not in printed.out + printed.err
    for f in tmp_path.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f
    for _, files in hub.commits:
        assert not any(SECRET.encode() in content for content in files.values())


def test_cli_errors_are_one_line_and_exit_2(hub, tmp_path, capsys):
    run = trained_dir(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_text("weights")
    hub.repos["me/tc3-tiny"] = False
    cases = [
        ([str(run), "me/tc3-tiny", "--dry-run"], "the push would fail: me/tc3-tiny already exists and is public"),
        ([str(run), "me/tc3-tiny"], "nothing uploaded: me/tc3-tiny already exists and is public"),
        ([str(run), "not-a-repo-id", "--dry-run"], "repo id 'not-a-repo-id' must be owner/name"),
        ([str(run / "checkpoint-16"), "me/x", "--dry-run"], "checkpoint-16/README.md is not a tc3 model card"),
        ([str(tmp_path), "me/x", "--dry-run"], "holds no adapter or merged model"),
        ([str(bare), "me/x", "--dry-run"], "has no model card (README.md)"),
        ([str(tmp_path / "missing"), "me/x", "--dry-run"], f"model '{tmp_path / 'missing'}' does not exist"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tc3-push: error: ") and fragment in err and err.count("\n") == 1, err
    assert main([str(run), "me/tc3-tiny", "--public", "--dry-run"]) == 0
    assert hub.commits == []


def test_an_http_refusal_at_upload_is_one_line(hub, tmp_path):
    response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/models/me/x/commit"))
    hub.refusal = HfHubHTTPError("403 Forbidden: you have no write access\nmore detail", response=response)
    with pytest.raises(ConfigError, match="^the Hub refused the upload to me/x: 403 Forbidden: you have no write access$"):
        push(trained_dir(tmp_path), "me/x")


def card_of(tmp_path: Path, model: str, metrics: dict | None = None) -> str:
    """The model card of a run whose base is `model`, data and output dir absolute paths under tmp_path, and a prep
    report that names its absolute input path."""
    prep = tmp_path / "work" / "prep"
    prep.mkdir(parents=True)
    (prep / "stats.json").write_text(json.dumps({"inputs": [{"path": str(tmp_path / "trn.json"), "bytes": 9}]}))
    out = tmp_path / "work" / "run"
    out.mkdir()
    config = TrainConfig(model=model, data=str(prep), output_dir=str(out))
    write_model_card(out, config, metrics or {"eval_loss": 1.0})
    return (out / "README.md").read_text()


def test_a_model_card_holds_no_absolute_local_path(tmp_path):
    base = tmp_path / "models" / "smollm2"
    base.mkdir(parents=True)
    card = card_of(tmp_path, str(base), {"eval_loss": 1.0, "merged_into": str(base)})
    assert str(tmp_path) not in card and "/work/" not in card
    assert "for `smollm2` (a local model folder, not on the Hub)" in card and "base_model:" not in card
    assert '"path": "trn.json"' in card and '"merged_into": "smollm2"' in card
    assert "data: prep" in card and "output_dir: run" in card and "model: smollm2" in card


def test_a_model_card_names_a_cached_base_by_its_hub_id(tmp_path):
    snapshot = tmp_path / "hub" / "models--org--base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    card = card_of(tmp_path, str(snapshot))
    assert str(tmp_path) not in card
    assert "base_model: org/base" in card and "for `org/base` that writes" in card and "model: org/base" in card


def test_a_model_card_says_which_content_kinds_trained_and_why(tmp_path):
    """Issue 25: a reader of the card learns that press quotes were left out, and what they did when they were not."""
    from tc3.config import DESCRIPTIVE_KINDS
    from tc3.model_card import write_model_card

    card = card_of(tmp_path, "org/base")
    assert ("Content kinds trained on: " + ", ".join(f"`{k}`" for k in DESCRIPTIVE_KINDS)) in card
    assert "`review_quotes` records (press praise with its source) were not trained closed book" in card and "66%" in card
    everything = TrainConfig(model="org/base", data=str(tmp_path / "prep"), output_dir=str(tmp_path / "all"),
                             kinds=None)
    (tmp_path / "all").mkdir()
    write_model_card(tmp_path / "all", everything, {})
    assert "every kind of the prep output trained, review_quotes" in (tmp_path / "all" / "README.md").read_text()

"""Upload a trained adapter or merged model dir, with its model card, to the Hugging Face Hub.

Only what a model repo needs goes up (`PUBLISHED`). Every check the upload depends on (the token and what it may
write, the repo's real visibility, a base model others can load) is made before anything is uploaded, by the dry
run too. The token comes from HF_TOKEN or the Hub login (`hf auth login`) only; it is never printed, logged or
written.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tc3.config import ConfigError
from tc3.models import check_model_folder, hub_id, looks_like_hub_id

# What a model repo needs from a tc3-train or tc3-export dir, by kind: top-level file names (shell patterns).
# Never checkpoints, optimizer state or tc3_config.yaml (it names local paths; the model card shows the config).
PUBLISHED = {
    "weights": ("adapter_model.safetensors", "model.safetensors", "model-*-of-*.safetensors",
                "model.safetensors.index.json"),
    "config": ("adapter_config.json", "config.json", "generation_config.json"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                  "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json"),
    "model card": ("README.md",),
    "training log": ("train_log.jsonl", "metrics.json"),
}  # fmt: skip
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
ADAPTER_CONFIG = "adapter_config.json"


def kind_of(name: str) -> str | None:
    """The PUBLISHED kind of a top-level file name, or None when a model repo does not need it."""
    return next((kind for kind, names in PUBLISHED.items() if any(fnmatch.fnmatchcase(name, n) for n in names)), None)


def is_tc3_card(card: Path) -> bool:
    """Whether a README.md is the model card tc3 writes (tag `tc3` in its front matter)."""
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    try:
        front = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return False
    return isinstance(front, dict) and "tc3" in (front.get("tags") or [])


def files_to_push(path: Path) -> list[Path]:
    """The files of a trained dir that make the published model (PUBLISHED), relative to `path`, sorted.
    Raises ConfigError when `path` is no dir, holds no weights or no tc3 model card."""
    check_model_folder(str(path), files=False)
    if not any((path / name).is_file() for name in WEIGHTS):
        raise ConfigError(f"{path} holds no adapter or merged model (no {' / '.join(WEIGHTS[:2])})")
    if not (path / "README.md").is_file():
        raise ConfigError(f"{path} has no model card (README.md); tc3-train and tc3-export write one")
    if not is_tc3_card(path / "README.md"):  # a checkpoint's card is PEFT's: boilerplate and local paths
        raise ConfigError(f"{path}/README.md is not a tc3 model card; push the dir tc3-train or tc3-export wrote")
    return [Path(p.name) for p in sorted(path.iterdir()) if p.is_file() and kind_of(p.name)]


def find_token() -> str | None:
    """HF_TOKEN, else the token of `hf auth login`; None when there is neither."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    return token or None


NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"


def hub_token() -> str:
    """The token (see `find_token`); ConfigError when there is none."""
    token = find_token()
    if not token:
        raise ConfigError(NO_TOKEN)
    return token


@dataclass
class PushPlan:
    """What a push of `path` to `repo_id` would do, and why it would fail (`problems`, empty when it would not)."""

    path: Path
    repo_id: str
    private: bool  # asked for: a new repo is created private unless --public
    files: list[Path]
    exists: bool | None = None  # None: not known (no token, or the Hub unreachable)
    is_private: bool | None = None  # the repo's real visibility when it exists
    base: str | None = None  # an adapter's base model as others will load it (a hub id)
    replaced: dict[str, bytes] = field(default_factory=dict)  # uploaded instead of the local file of that name
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def visibility(self) -> str:
        """The repo's real visibility when it exists, else what a new one gets."""
        if self.exists is None:
            return "visibility not checked"
        if self.exists:
            return "private" if self.is_private else "public"
        return f"new repo, created {'private' if self.private else 'public'}"


def _adapter_base(plan: PushPlan) -> None:
    """An adapter's base must be a model others can load: a hub id. A hub-cache snapshot dir is published as the id
    it caches (adapter_config.json uploaded with it); any other local folder is a problem."""
    config_file = plan.path / ADAPTER_CONFIG
    if not config_file.is_file():
        return  # a merged model: nothing to load beside it
    config = json.loads(config_file.read_text(encoding="utf-8"))
    recorded = str(config.get("base_model_name_or_path") or "")
    if not recorded:
        plan.problems.append(f"{ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
        return
    published = hub_id(recorded)
    if not published or "/" not in published or not looks_like_hub_id(published):  # owner/name: others can load it
        plan.problems.append(
            f"the adapter's base model is the local folder {recorded!r}, which nobody else can load: publish the base "
            f"and set base_model_name_or_path in {ADAPTER_CONFIG} to its hub id, or push a merged model (tc3-export)"
        )
        return
    plan.base = published
    if published != recorded:
        published_config = {**config, "base_model_name_or_path": published}
        plan.replaced[ADAPTER_CONFIG] = (json.dumps(published_config, indent=2) + "\n").encode()
        plan.notes.append(f"{ADAPTER_CONFIG} goes up with base_model_name_or_path {published!r} (here: its cache)")


def _hub_checks(plan: PushPlan, api) -> None:
    """What only the Hub can say: whether the token may write to the owner, the repo's real visibility, and
    whether the base model is there for others. Each failure is added to plan.problems."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    owner = plan.repo_id.split("/")[0]
    try:
        me = api.whoami()
        names = {me.get("name")} | {org.get("name") for org in me.get("orgs") or []}
        role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            plan.problems.append("the Hugging Face token is read-only: make one with write access")
        if owner not in names:
            plan.problems.append(
                f"the token's user {me.get('name')} cannot write to {owner}: not that user nor one of its organisations"
            )
        try:
            info = api.repo_info(plan.repo_id, repo_type="model")
            plan.exists, plan.is_private = True, bool(info.private)
        except RepositoryNotFoundError:
            plan.exists = False
        if plan.exists and not plan.is_private and plan.private:
            plan.problems.append(f"{plan.repo_id} already exists and is public: pass --public to upload into it")
        if plan.exists and plan.is_private and not plan.private:
            plan.notes.append(f"{plan.repo_id} exists and stays private (--public does not change a repo's visibility)")
        if plan.base:
            try:
                base_private = bool(api.model_info(plan.base).private)
            except RepositoryNotFoundError:
                plan.problems.append(f"the base model {plan.base} is not on the Hub (or not visible to this token)")
            else:
                public_repo = not (plan.is_private if plan.exists else plan.private)
                if base_private and public_repo:
                    plan.problems.append(f"the base model {plan.base} is private: others cannot load the adapter")
    except (HfHubHTTPError, httpx.HTTPError, OSError) as e:  # refused token, no network, offline mode
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        plan.problems.append(f"the Hub refused the token or could not be reached: {reason}")


def plan_push(path: str | Path, repo_id: str, private: bool = True) -> tuple[PushPlan, object | None]:
    """(the plan, the HfApi client or None without a token): every check a push depends on, none uploading."""
    path = Path(path)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"repo id {repo_id!r} must be owner/name")
    plan = PushPlan(path=path, repo_id=repo_id, private=private, files=files_to_push(path))
    _adapter_base(plan)
    token = find_token()
    if not token:
        plan.problems.append(NO_TOKEN)
        return plan, None
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    _hub_checks(plan, api)
    return plan, api


def describe(plan: PushPlan) -> str:
    """The dry run's account: repo and visibility, each file with its kind and size, notes."""
    sizes = {f: (plan.path / f).stat().st_size for f in plan.files}
    lines = [f"{plan.path} -> {plan.repo_id} ({plan.visibility}), {len(plan.files)} files, "
             f"{sum(sizes.values()) / 2**20:.1f} MiB:"]  # fmt: skip
    lines += [f"  {f}  ({kind_of(f.name)}, {sizes[f]:,} bytes)" for f in plan.files]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def push(path: str | Path, repo_id: str, private: bool = True, dry_run: bool = False) -> PushPlan:
    """Upload the model files of `path` (PUBLISHED) to the model repo `repo_id`, created private unless
    `private=False`; an existing public repo is written only with `private=False` (--public).

    Prints what goes up. Raises ConfigError (one line, every problem) before uploading anything when the push
    cannot work: no token, a token that cannot write there, a public repo without --public, a base model others
    cannot load, the Hub unreachable. The dry run makes the same checks and uploads nothing.
    """
    plan, api = plan_push(path, repo_id, private)
    print(describe(plan))
    if plan.problems:
        raise ConfigError(("the push would fail: " if dry_run else "nothing uploaded: ") + "; ".join(plan.problems))
    if dry_run:
        print(f"would upload {len(plan.files)} files to {repo_id}")
        return plan

    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    try:
        if not plan.exists:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            # read back what the Hub made: a repo created meanwhile by someone else keeps its own visibility
            plan.exists, plan.is_private = True, bool(api.repo_info(repo_id, repo_type="model").private)
            if not plan.is_private and private:
                raise ConfigError(f"{repo_id} is public: pass --public to upload into it; nothing uploaded")
        operations = [
            CommitOperationAdd(f.as_posix(), plan.replaced.get(f.name, str(plan.path / f))) for f in plan.files
        ]
        api.create_commit(repo_id, operations, commit_message=f"tc3: upload {plan.path.name}", repo_type="model")
    except HfHubHTTPError as e:  # no write access, a quota, ...: the Hub's own words, first line only
        raise ConfigError(f"the Hub refused the upload to {repo_id}: {str(e).splitlines()[0]}") from None
    print(f"uploaded {len(plan.files)} files to https://huggingface.co/{repo_id} ({plan.visibility})")
    return plan

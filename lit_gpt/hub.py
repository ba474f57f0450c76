"""Hugging Face hub ids (``org/name``) in place of a local folder: ``resolve`` returns the snapshot folder that
``huggingface_hub`` keeps in its cache, downloading only the files asked for when the network allows.

An existing local path always wins, so a relative folder such as ``data/foo`` is never taken for a hub id. Without a
network (or with ``HF_HUB_OFFLINE=1``) an id resolves from the cache alone: the layout ``huggingface_hub`` writes,
``<cache>/models--org--name/refs/main`` naming a snapshot ``<cache>/models--org--name/snapshots/<revision>/``. The
cache is ``HF_HUB_CACHE`` (else ``huggingface_hub``'s default under ``HF_HOME`` or ``~/.cache/huggingface``); both
variables are read when an id is resolved. ``huggingface_hub`` (a dependency of ``tokenizers``) is imported only then.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from lit_gpt.errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""``org/name`` as the hub spells repository ids: two names of letters, digits, ``_``, ``.`` and ``-``."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "config.json",
    "vocab.json",
    "merges.txt",
)
"""What a tokenizer needs from a model repository (no weights)."""
MODEL_FILES = ("*.json", "*.safetensors", "tokenizer.model", "*.jinja", "merges.txt")
"""What a model needs: its configs, safetensors weights (one file or shards) and tokenizer files."""
_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")


class NotAvailable(ConfigError):
    """A hub id that is not in the cache and cannot be downloaded (offline, or no network); callers may reword it."""


def is_hub_id(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a hub repository rather than a local path: no such file or folder exists and it reads
    ``org/name`` (no leading ``.``, ``~`` or ``/``, exactly one ``/``)."""
    text = str(path)
    return bool(HUB_ID.match(text)) and ".." not in text and not os.path.exists(text)


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks ``huggingface_hub`` not to use the network (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(path: str | os.PathLike, patterns: Sequence[str] = MODEL_FILES) -> Path:
    """``path`` itself unless it is a hub id (``is_hub_id``); then the folder of that repository's snapshot in the
    cache, with the files matching ``patterns`` fetched first when the network allows.

    Raises:
        NotAvailable: (a ConfigError) for a hub id that is not cached and cannot be downloaded (offline, no network).
        ConfigError: when the hub has no such repository or refuses access, or on any other download failure; one
            line naming the id.
    """
    if not is_hub_id(path):
        return Path(path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    repo = str(path)
    cache = os.environ.get("HF_HUB_CACHE") or None
    try:
        folder = snapshot_download(repo, allow_patterns=list(patterns), cache_dir=cache, local_files_only=offline())
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached (no network)"
        raise NotAvailable(
            f"{repo!r} is not a local path, and as a Hugging Face hub id it is not in the cache "
            f"({cache or 'huggingface_hub default'}) and cannot be downloaded: {why}; download it where there is a "
            f"network (`hf download {repo}`) and copy the cache, or pass a local folder"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ConfigError(
            f"the Hugging Face hub has no repository {repo!r} that this account may read ({type(err).__name__}); "
            "check the id, or log in (`hf auth login`) for a gated or private model"
        ) from None
    except (OSError, ValueError) as err:  # HTTP errors, a full disk, a malformed cache
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"cannot fetch {repo!r} from the Hugging Face hub: {reason}") from None
    return Path(folder)


def display_name(folder: str | os.PathLike) -> str:
    """A folder's name for messages and tokenizer specs: ``org/name`` for a snapshot in the hub's cache, else the
    folder's own name."""
    folder = Path(folder).resolve()
    match = _SNAPSHOT.search(folder.as_posix())
    return f"{match.group(1)}/{match.group(2)}" if match else folder.name

"""Which weights a base model is, for the train stage's cache key and for saying why a
stage reruns ("base model `minilm_l6` changed: weights sha256 ab12… → cd34…").

- A hub base is its revision: the one the spec pins, resolved to a commit through the local
  Hugging Face cache when the cache has that branch or tag (what `from_pretrained` loads
  offline), else the name as written (`main` when nothing is pinned).
- A local folder, or the folder a pip package bundles, is the sha256 of the files
  `from_pretrained` reads: the folder's top-level files (config, weights, tokenizer).
  Subfolders (onnx/, openvino/, a sentence-transformers pooling folder) are not loaded, and
  hidden files are not the model's. A pip base adds the package's version.

Why whole-content hashes, and not file sizes and mtimes or the safetensors headers: a new
checkpoint of the same architecture (the case this is for) has the same file sizes and the
same safetensors header (names, dtypes, shapes, offsets), so both would miss it; and mtimes
change on every copy or checkout, so a moved or cloned project would retrain everything
(the stage keys are portable by design). Hashing stays cheap the way git's index does it:
`run/base_weights.json` remembers each file's digest beside its size, mtime and inode, and a
file whose stat is unchanged is not read again. Only the first run on a checkpoint reads it
(sha256 runs at about 1-2 GB/s: a 16 GB 8B model once, ~10 s; MiniLM's 90 MB, ~0.1 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fmlang.atomic import write_json_atomic
from fmlang.backends.train.job import BaseWeights
from fmlang.files import file_sha256

MEMO_FILE = "run/base_weights.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class BaseIdentity:
    """A base model's weights: spec name, source (`local:…`, `hub:…`, `pip:…`), revision
    (hub commit or branch, pip version) and the sha256 of each file read (local, pip)."""

    name: str
    source: str
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str | None:
        """One sha256 over the files' names and digests; None for a hub base."""
        if not self.files:
            return None
        lines = "".join(f"{name}\0{sha}\n" for name, sha in sorted(self.files.items()))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

    def key(self) -> dict[str, Any]:
        """What the train stage's cache key holds (no path: a moved project stays fresh)."""
        return {"revision": self.revision, "weights": self.digest}

    def summary(self) -> str:
        """`weights sha256 ab12cd34ef56`, `revision 0123abcd…`: what a rerun's reason shows."""
        parts = [f"revision {self.revision}"] if self.revision else []
        parts += [f"weights sha256 {self.digest[:12]}"] if self.digest else []
        return ", ".join(parts) or "unpinned"

    @property
    def label(self) -> str:
        return f"base model `{self.name}`"


def base_identity(name: str, base: BaseWeights, build_dir: Path) -> BaseIdentity:
    """The identity of `base` (`location` absolute for a local folder), hashing through
    the build folder's memo."""
    source = f"{base.kind}:{base.location}"
    if base.kind == "hub":
        return BaseIdentity(name, source, hub_revision(base.location, base.revision))
    if base.kind == "pip":
        from fmlang.files import package_model_folder

        try:
            folder = package_model_folder(base.location)
        except ImportError:
            folder = None  # training says how to install it (FM0821)
        version = _package_version(base.location)
        files = folder_digests(folder, build_dir) if folder else {}
        return BaseIdentity(name, source, version, files)
    return BaseIdentity(name, source, None, folder_digests(Path(base.location), build_dir))


def hub_revision(repo_id: str, revision: str | None) -> str:
    """The commit a hub revision names in the local cache, else the revision as written."""
    wanted = revision or "main"
    if _COMMIT.fullmatch(wanted):
        return wanted
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return wanted
    ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / wanted
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return wanted
    return commit if _COMMIT.fullmatch(commit) else wanted


def _package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def model_files(folder: Path) -> list[Path]:
    """The files `from_pretrained` reads from `folder`: its top-level, non-hidden files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def folder_digests(folder: Path, build_dir: Path) -> dict[str, str]:
    """File name → sha256 for the model files of `folder`; a file whose size, mtime and
    inode are as memoised in the build folder is not read again."""
    memo_path = build_dir / MEMO_FILE
    memo = _read_memo(memo_path)
    out: dict[str, str] = {}
    changed = False
    for path in model_files(folder):
        real = os.path.realpath(path)
        try:
            stat = os.stat(real)
            signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
            known = memo.get(real)
            if isinstance(known, dict) and known.get("stat") == signature and "sha256" in known:
                out[path.name] = str(known["sha256"])
                continue
            out[path.name] = file_sha256(Path(real))
        except OSError:  # loading it says what is wrong, with a diagnostic
            out[path.name] = "unreadable"
            continue
        memo[real] = {"stat": signature, "sha256": out[path.name]}
        changed = True
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(memo_path, memo)
        except OSError:
            pass  # only a memo: the next run hashes again
    return out


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def train_explain(
    identity: BaseIdentity, upstream: dict[str, str | None], settings: Any
) -> dict[str, str]:
    """The train stage's named inputs, by short values, for the reasons a rerun gives: the
    base's weights (under its name: new weights in place), which base it is (another base
    named), each upstream stage's key, and a digest of the job's settings."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return {
        identity.label: identity.summary(),
        "the base model": f"`{identity.name}`",
        **{f"stage `{stage}`": (key or "none")[:12] for stage, key in sorted(upstream.items())},
        "the training settings": hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
    }


def lineage_revision(identity: BaseIdentity) -> str | None:
    """What the registry records as the base's revision: the hub revision, else
    `sha256:<digest>` of a local or pip base's files (their pip version beside it)."""
    if identity.digest is None:
        return identity.revision
    return f"sha256:{identity.digest}"

"""A checkpoint series: a pretrained model's training history, one Hugging Face checkpoint per step.

The series is a local folder with one checkpoint folder per step (``path/step1000/``), or a Hub repository
whose revisions are the steps (``EleutherAI/pythia-160m`` at ``step1000``), read from the local Hugging Face
cache only: nothing is downloaded at run time. Each checkpoint is loaded into a TransformerBridge
(``boot_transformers``), measured and released before the next, so a walk holds one model at a time.

Public series have been found serving one step's weights under another's name (EleutherAI/pythia issue 205:
86 of pythia-2.8b's 154 branches serve final-era weights, step 0 included), so every checkpoint's weights
are hashed as loaded (``weights_hash``): two steps with one hash are one checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from emergence.spec.schema import PYTHIA_STEPS, CheckpointSeriesSpec

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG_FILE = "config.json"  # what every Hugging Face checkpoint folder holds


def pythia_steps() -> list[int]:
    """Pythia's 154 checkpoints: step 0, the powers of two 1 ... 512, then every 1,000 to 143,000."""
    return [0, *(2**i for i in range(10)), *range(1000, 143_001, 1000)]


@dataclass(frozen=True)
class Checkpoint:
    step: int
    revision: str  # the branch (Hub) or folder name (local) of this step
    folder: Path | None  # a local series' checkpoint folder; None for a Hub revision
    repository: str | None  # a Hub series' repository; None for a local folder

    @property
    def where(self) -> str:
        return str(self.folder) if self.folder is not None else f"{self.repository}@{self.revision}"


class SeriesError(ValueError):
    """The series cannot be walked as specified (a missing folder or revision); says which, before anything runs."""


def revision_of(spec: CheckpointSeriesSpec, step: int) -> str:
    return spec.revision_format.replace("{step}", str(step))


def found_steps(folder: Path, revision_format: str) -> list[int]:
    """The steps of a local series: its subfolders whose names fit ``revision_format`` and hold a checkpoint."""
    pattern = re.compile("^" + re.escape(revision_format).replace(re.escape("{step}"), r"(\d+)") + "$")
    steps = []
    for child in folder.iterdir() if folder.is_dir() else []:
        matched = pattern.match(child.name)
        if matched and (child / CONFIG_FILE).exists():
            steps.append(int(matched.group(1)))
    return sorted(steps)


def series_checkpoints(spec: CheckpointSeriesSpec) -> list[Checkpoint]:
    """Every checkpoint of the series, in step order (a local ``path`` is read relative to the working directory)."""
    if spec.path is not None:
        folder = Path(spec.path)
        if not folder.is_dir():
            raise SeriesError(f"model.path: given {spec.path!r}, which is not a folder (from {Path.cwd()})")
        steps = found_steps(folder, spec.revision_format) if spec.steps is None else _listed(spec)
        if not steps:
            raise SeriesError(
                f"model.path: {spec.path!r} holds no checkpoint folder named like {spec.revision_format!r} with a {CONFIG_FILE}"
            )
        return [Checkpoint(step, revision_of(spec, step), folder / revision_of(spec, step), None) for step in steps]
    return [Checkpoint(step, revision_of(spec, step), None, spec.name) for step in _listed(spec)]


def _listed(spec: CheckpointSeriesSpec) -> list[int]:
    return pythia_steps() if spec.steps == PYTHIA_STEPS else sorted(spec.steps or [])


def is_available(checkpoint: Checkpoint) -> bool:
    """A local folder with a checkpoint in it, or a Hub revision whose config is in the local HF cache; with the
    Hub online (``HF_HUB_OFFLINE`` unset), any revision: it is fetched when the walk reaches it."""
    if checkpoint.folder is not None:
        return (checkpoint.folder / CONFIG_FILE).exists()
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return True

    found = try_to_load_from_cache(checkpoint.repository, CONFIG_FILE, revision=checkpoint.revision)
    return isinstance(found, str)


def check_available(checkpoints: list[Checkpoint]) -> None:
    """Refuse a series with any checkpoint missing, naming every one: nothing is downloaded at run time."""
    missing = [c for c in checkpoints if not is_available(c)]
    if not missing:
        return
    shown = ", ".join(c.revision for c in missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    first = missing[0]
    if first.repository is not None:
        how = (
            f"they are not in the Hugging Face cache and nothing is downloaded at run time; fetch them first, e.g. "
            f"`huggingface-cli download {first.repository} --revision {first.revision}` for each"
        )
    else:
        how = f"no {CONFIG_FILE} in their folders under {first.folder.parent if first.folder else '?'}"
    where = "model.name" if first.repository is not None else "model.path"
    raise SeriesError(f"{where}: {len(missing)} of {len(checkpoints)} checkpoints are missing ({shown}); {how}")


def load_tokenizer(checkpoint: Checkpoint):  # noqa: ANN201 - a transformers tokenizer
    from transformers import AutoTokenizer

    if checkpoint.folder is not None:
        return AutoTokenizer.from_pretrained(str(checkpoint.folder))
    return AutoTokenizer.from_pretrained(checkpoint.repository, revision=checkpoint.revision)


def load_model(checkpoint: Checkpoint, device: torch.device, dtype: str) -> torch.nn.Module:
    """The checkpoint as a TransformerBridge, in eval mode, on ``device``."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar per checkpoint would bury the walk's own progress

    if checkpoint.folder is not None:
        model = TransformerBridge.boot_transformers(str(checkpoint.folder), device=device, dtype=DTYPES[dtype])
    else:
        model = TransformerBridge.boot_transformers(
            checkpoint.repository, revision=checkpoint.revision, device=device, dtype=DTYPES[dtype]
        )
    model.eval()
    return model


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, by name, in order: equal weights give equal hashes."""
    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def unused_parameters(model: torch.nn.Module, tokens: torch.Tensor) -> frozenset[str]:
    """Parameters the forward pass never reads: no gradient reaches them from the logits of ``tokens``.

    The GPT-NeoX bridge keeps the checkpoint's fused ``attention.qkv`` weight beside the split q, k, v weights
    its forward pass uses; a measure that flattened or differentiated every parameter would count attention twice.
    """
    params = dict(model.named_parameters())
    with torch.enable_grad():
        logits = model(tokens)
        grads = torch.autograd.grad(logits.float().sum(), list(params.values()), allow_unused=True)
    return frozenset(name for name, grad in zip(params, grads, strict=True) if grad is None)


def evict_from_cache(checkpoint: Checkpoint) -> None:
    """Delete a Hub revision's files from the HF cache (``keep_cache: false``); a local folder is left alone."""
    if checkpoint.repository is None:
        return
    from huggingface_hub import scan_cache_dir

    for repo in scan_cache_dir().repos:
        if repo.repo_id != checkpoint.repository:
            continue
        hashes = [r.commit_hash for r in repo.revisions if checkpoint.revision in r.refs]
        if hashes:
            strategy = scan_cache_dir().delete_revisions(*hashes)
            log.info("evicting %s from the HF cache (%s)", checkpoint.where, strategy.expected_freed_size_str)
            strategy.execute()

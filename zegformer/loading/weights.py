"""Resolve weights: an explicit path, an environment variable, or `hf://owner/repo/file`.

Nothing here downloads anything unless an `hf://` reference is given; huggingface_hub caches the
file, so a Space downloads it once at start-up. With HF_HUB_OFFLINE=1 only the cache is used.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import WeightsError

WEIGHTS_ENV = "ZEGFORMER_WEIGHTS"
CLIP_WEIGHTS_ENV = "ZEGFORMER_CLIP_WEIGHTS"


def resolve_weights(spec: str | os.PathLike | None, env_var: str | None = None) -> Path | None:
    """Turn a weights reference into a local file path.

    Args:
        spec: a local path, `hf://owner/repo/path/in/repo.pth`, or None.
        env_var: environment variable to read when `spec` is empty (e.g. ZEGFORMER_WEIGHTS).

    Returns:
        The local path, or None when nothing was given.

    Raises:
        WeightsError: the file does not exist, the reference is malformed, or the download failed.
    """
    if not spec and env_var:
        spec = os.environ.get(env_var) or None
    if not spec:
        return None
    text = str(spec)
    if text.startswith("hf://"):
        return _download_from_hub(text)
    if "://" in text:
        raise WeightsError(f"cannot fetch {text!r}: download it and pass the local path, "
                           "or use hf://owner/repo/file")
    path = Path(text).expanduser()
    if not path.is_file():
        hint = f" (from ${env_var})" if env_var and os.environ.get(env_var) == text else ""
        raise WeightsError(f"weights file not found: {path}{hint}")
    return path


def _download_from_hub(ref: str) -> Path:
    parts = ref[len("hf://"):].split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"malformed Hub reference {ref!r}: use hf://owner/repo/path/to/file")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is in requirements.txt
        raise WeightsError("huggingface_hub is needed for hf:// weights: pip install huggingface_hub")
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as e:  # network, offline mode, missing file or repo
        raise WeightsError(f"could not get {ref}: {type(e).__name__}: {str(e).splitlines()[0]}") from None

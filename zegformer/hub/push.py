"""push: upload a folder written by `convert` to a Hugging Face model repository.

huggingface_hub does the work (`create_repo(exist_ok=True)` + `upload_folder`); the token comes
from HF_TOKEN or the cached login (`hf auth login`), the server from HF_ENDPOINT.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ZegFormerError
from .convert import REPO_PLACEHOLDER, WEIGHTS_FILE

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                message: str = "ZegFormer weights", token: str | None = None) -> str:
    """Create `repo_id` (if needed) and upload `folder` to it; returns the commit URL.

    The card's repository placeholder (written by `convert` without --repo-id) is filled in
    with `repo_id` first.
    """
    folder = Path(folder)
    if not _REPO_ID.match(repo_id):
        raise ZegFormerError(f"repository id {repo_id!r} is not owner/name")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ZegFormerError(f"{folder} has no {WEIGHTS_FILE}: run `python -m zegformer.hub "
                             "convert CKPT OUT_DIR` first")
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if REPO_PLACEHOLDER in text:
            card.write_text(text.replace(REPO_PLACEHOLDER, repo_id), encoding="utf-8")
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ZegFormerError("HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push")
    token = token or get_token()
    if not token:
        raise ZegFormerError("no Hugging Face token: set HF_TOKEN, or run `hf auth login`")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message)
    except Exception as e:  # noqa: BLE001 - HTTP errors, bad token, no permission, network
        raise ZegFormerError(f"upload to {repo_id} ({constants.ENDPOINT}) failed: "
                             f"{type(e).__name__}: {_first_line(e)}") from None
    return str(getattr(info, "commit_url", info))

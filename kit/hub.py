"""The Hugging Face Hub: the token (HF_TOKEN or a cached login, never printed) and folder pushes."""
from __future__ import annotations

import os

from kit.io import KitError


def hub_token() -> str | None:
    """HF_TOKEN, else a cached `hf auth login`; never printed."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


def push_folder(folder, repo: str, private: bool = False, retry_hint: str = "") -> None:
    """create_repo + upload_folder; a failure leaves the folder as it is and says how to retry."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=hub_token())
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload from llm2024-kit")
    except Exception as err:
        raise KitError(f"push to {repo} failed ({type(err).__name__}); {folder} is intact"
                       + (f": retry with `{retry_hint}`" if retry_hint else "")) from None
    print(f"pushed {folder} to https://huggingface.co/{repo}")

"""Where pretrained weights come from: the local caches first, the network only when it answers.

No hub on this machine, in CI or in many classrooms: every lookup checks the cache, honours
`HF_HUB_OFFLINE=1`, and probes the host with a short timeout before any download, so a load that
cannot succeed fails in seconds with a sentence instead of hanging.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from vit_core.errors import VitCoreError, WeightsUnavailable, What

PROBE_TIMEOUT_S = 3.0
_probes: dict[str, tuple[float, threading.Thread, list[bool]]] = {}  # "scheme://host:port" -> probe


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _probe_key(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


def start_probe(url: str, timeout: float = PROBE_TIMEOUT_S, ttl: float = 60.0) -> None:
    """Begin checking in the background whether `url`'s server answers, so the wait overlaps other work."""
    key = _probe_key(url)
    entry = _probes.get(key)
    if offline() or (entry and time.monotonic() - entry[0] < ttl):
        return
    answers: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(key, method="HEAD"), timeout=timeout).close()
            answers.append(True)
        except urllib.error.HTTPError:
            answers.append(True)  # the server answered, if only to refuse
        except (OSError, ValueError):
            answers.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # name resolution ignores socket timeouts
    thread.start()
    _probes[key] = (time.monotonic(), thread, answers)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when `url`'s server answers an HTTP HEAD within `timeout` of the probe's start.

    Any HTTP status counts as an answer; refused, silent or unresolvable hosts do not.
    """
    if offline():
        return False
    start_probe(url, timeout)
    started, thread, answers = _probes[_probe_key(url)]
    thread.join(max(0.0, timeout - (time.monotonic() - started)))
    return bool(answers and answers[0])


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hf_cached_file(repo_id: str, filenames: list[str]) -> Path | None:
    """The first of `filenames` present in the local Hugging Face cache for `repo_id`."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def hf_file(
    repo_id: str, filenames: list[str], model: str, what: What = "weights", required: bool = True
) -> Path | None:
    """The first of `filenames` for `repo_id`: from the cache, else downloaded if the hub answers.

    `model` ("hf:google/vit-base-patch16-224") and `what` (its weights, config or preprocessing) name the
    file in errors.
    """
    cached = hf_cached_file(repo_id, filenames)
    if cached is not None:
        return cached
    if not reachable(hf_endpoint()):  # False at once when HF_HUB_OFFLINE is set
        if not required:
            return None
        if offline():
            raise WeightsUnavailable("hub_offline", what=what, model=model)
        raise WeightsUnavailable("hub_unreachable", what=what, model=model)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, etag_timeout=PROBE_TIMEOUT_S))
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError as error:
            raise VitCoreError("hub_repository_missing", repo=repo_id, model=model) from error
        except (HfHubHTTPError, OSError, RuntimeError, ValueError) as error:
            reason = type(error).__name__
            raise WeightsUnavailable("hub_download_failed", what=what, model=model, reason=reason) from error
    if required:
        raise VitCoreError("hub_files_missing", repo=repo_id, files=", ".join(filenames))
    return None


def torch_hub_file(url: str, model: str, what: What = "weights") -> Path:
    """A file from torch's hub cache (`$TORCH_HOME/hub/checkpoints`), downloaded if the host answers."""
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if target.is_file():
        return target
    if not reachable(url):
        raise WeightsUnavailable(
            "host_unreachable", what=what, model=model, folder=str(target.parent), host=str(urlparse(url).hostname)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except OSError as error:
        raise VitCoreError("download_failed", what=what, model=model, reason=str(error)) from error
    return target

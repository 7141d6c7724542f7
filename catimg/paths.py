"""Where catimg keeps its own files: one cache folder for every cache.

``$CATIMG_CACHE_DIR`` when set, else the platform's user cache folder for catimg (platformdirs). The caches in
it: ``embeddings.sqlite`` (prompt embeddings), ``bench.json`` (measured costs), ``device.json`` (the device
description), ``flops.json`` (FLOP counts) and ``tokenizers/`` (converted tokenizers). Deleting the folder is
always safe: every cache is rebuilt when needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """catimg's cache folder (not created here)."""
    env = os.environ.get("CATIMG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("catimg"))

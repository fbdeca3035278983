"""The identity of a loaded split, which resume checks and teacher-cache keys compare.

`datasets` fingerprints local files by their modification time, so the same parquet file copied
to another machine or restored in another sitting would look like other data and a run could not
resume there. Local splits are therefore identified by a digest of their content (labels and
image bytes, in row order); a Hub data set keeps the `datasets` fingerprint, which names the
Hub revision and costs nothing at ImageNet scale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

BATCH_ROWS = 4096


def content_digest(rows: Any, image_column: str, label_column: str) -> str:
    """16 hex digits over the rows' labels and image bytes (an image stored by path is read from
    its file); paths and row storage do not enter, so a copy of the same data digests the same."""
    digest = hashlib.blake2b(digest_size=8)
    arrow = rows.with_format("arrow")
    for start in range(0, len(rows), BATCH_ROWS):
        table = arrow[start : start + BATCH_ROWS]
        digest.update(table.column(label_column).combine_chunks().to_numpy().tobytes())
        images = table.column(image_column).combine_chunks()
        stored = images.field("bytes").to_pylist()
        for data, path in zip(stored, images.field("path").to_pylist(), strict=True):
            data = data if data is not None else _file_bytes(path)
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _file_bytes(path: str | None) -> bytes:
    """An image stored by path: its file's bytes. A missing cell or file digests as a marker
    here; decoding the row reports it in one line naming the row."""
    try:
        return Path(path).read_bytes() if path else b"\0missing"
    except OSError:
        return b"\0unreadable"


def split_fingerprint(rows: Any, image_column: str, label_column: str, local: bool) -> str | None:
    """The split's identity: its content digest when it comes from local files, otherwise the
    fingerprint `datasets` gave it."""
    if local:
        return content_digest(rows, image_column, label_column)
    return getattr(rows, "_fingerprint", None)

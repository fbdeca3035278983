"""Teacher-output cache: every teacher's outputs per (augmented view, sample), memory-mapped.

Teachers dominate a multi-teacher step. A sample's augmentation is a pure function of (seed,
view, index), so a fixed number of views per sample replays exactly: epoch `e` shows view
`e mod views`; the first epoch to show a view runs the teachers and stores their outputs, later
epochs read them. An entry counts only when its stored augmentation seed equals the loader's, so
a stale or half-written entry is recomputed, never misread. The cache's folder is named by a hash
of everything that determines the outputs, so any change starts a new one. `layout` says what an
entry holds (top-k logits for many classes, embeddings only for methods that read them),
`storage` holds the files, `sources` the live and cached teacher sources, `wiring` a run's
choice between them.
"""

from .layout import DTYPES, CacheLayout
from .sources import CachedTeachers, LiveTeachers, merge_rows
from .storage import DISK_HEADROOM, FORMAT_VERSION, TeacherCache, cache_key, format_bytes
from .wiring import open_for_run

__all__ = [
    "DISK_HEADROOM",
    "DTYPES",
    "FORMAT_VERSION",
    "CacheLayout",
    "CachedTeachers",
    "LiveTeachers",
    "TeacherCache",
    "cache_key",
    "format_bytes",
    "merge_rows",
    "open_for_run",
]

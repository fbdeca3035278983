"""Local paths never reach a published file. A run's recipe names local files in many forms
(absolute, `~`, relative, Windows, `local-dir:` model ids); each is cut to its last name, and every
text an export writes has each such path of the run's recipe replaced by its cut form.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

LOCAL_SCHEMES = ("local-dir:",)  # model ids that name a folder on this machine
REMOTE_SCHEMES = ("hf-hub:", "hf_hub:", "timm/")
# recipe fields that hold a local path whatever it looks like (`data/train.parquet` too)
PATH_FIELDS = {
    "output_dir",
    "teacher_cache.dir",
    "data.data_files",
    "data.data_dir",
    "student.checkpoint",
    "teachers.checkpoint",
}


def public_form(text: str, is_path: bool = False) -> str:
    """`text` as a published file may show it: a path (or `local-dir:` id) by its last name;
    `is_path` says the text is a path even when it does not look like one."""
    scheme = next((s for s in LOCAL_SCHEMES if text.startswith(s)), "")
    path = text[len(scheme) :]
    if not (scheme or is_path or looks_like_path(path)):
        return text
    windows = PureWindowsPath(path)
    name = windows.name if ("\\" in path or windows.drive) else PurePosixPath(path).name
    return scheme + (name or "...")


def looks_like_path(text: str) -> bool:
    """Absolute, home-relative, dot-relative or Windows-style (a drive or a backslash); Hub ids,
    URLs and timm names do not."""
    if "://" in text or text.startswith(REMOTE_SCHEMES):
        return False
    return (
        text.startswith(("/", "~", "./", "../", ".\\", "..\\"))
        or "\\" in text
        or bool(PureWindowsPath(text).drive)
    )


def public_recipe(value: Any, field: str = "") -> Any:
    """Recipe data with every local path cut to its name (`PATH_FIELDS` always, other strings
    when they look like paths)."""
    if isinstance(value, dict):
        return {k: public_recipe(v, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
    if isinstance(value, list):  # list items share their list's field (`teachers.checkpoint`)
        return [public_recipe(item, field) for item in value]
    if isinstance(value, str):
        is_path = any(field == f or field.startswith(f + ".") for f in PATH_FIELDS)
        return public_form(value, is_path)
    return value


def local_paths(raw_recipe: dict[str, Any]) -> dict[str, str]:
    """Each string of the recipe that `public_recipe` cuts, with its cut form."""
    found: dict[str, str] = {}

    def walk(raw: Any, public: Any) -> None:
        if isinstance(raw, dict):
            for key in raw:
                walk(raw[key], public[key])
        elif isinstance(raw, list):
            for item, cut in zip(raw, public, strict=True):
                walk(item, cut)
        elif isinstance(raw, str) and raw != public:
            found[raw] = public

    walk(raw_recipe, public_recipe(raw_recipe))
    return found


def scrub_paths(text: str, paths: dict[str, str]) -> str:
    """`text` with each of `paths` replaced by its cut form, longest first (so a path is not
    half-replaced through a shorter one it contains)."""
    for original in sorted(paths, key=len, reverse=True):
        text = text.replace(original, paths[original])
    return text

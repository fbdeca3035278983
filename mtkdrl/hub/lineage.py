"""Where a teacher's or student's weights came from and under which licence, for the model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
from safetensors import safe_open

from ..recipe import ModelSpec

UNKNOWN = "unknown"
SHARED_TEACHERS_DIR = ("shared", "data", "teachers")
SHARED_TEACHERS_SOURCE = "akamaster/pytorch_resnet_cifar10"
SHARED_TEACHERS_LICENSE = "BSD-2-Clause"


@dataclass
class Provenance:
    """A model's name, the origin of its weights (Markdown) and their licence."""

    name: str
    source: str
    license: str


def provenance(spec: ModelSpec) -> Provenance:
    """Describe the weights a spec loads: a local file (and what its metadata says), a Hub
    repository, timm's pretrained weights, or none at all."""
    if spec.checkpoint:
        return _checkpoint_provenance(spec.name, Path(spec.checkpoint))
    if spec.name.startswith(("hf-hub:", "hf_hub:")):
        repo = spec.name.split(":", 1)[1]
        return Provenance(spec.name, f"Hub repository {_hub_link(repo)}", UNKNOWN)
    if spec.pretrained:
        cfg = timm.models.get_pretrained_cfg(spec.name)
        hub = f" ({_hub_link(cfg.hf_hub_id)})" if cfg and cfg.hf_hub_id else ""
        origin = getattr(cfg, "origin_url", None)
        credit = f", from [{_origin_name(origin)}]({origin})" if origin else ""
        licence = (cfg.license if cfg else None) or UNKNOWN
        return Provenance(spec.name, f"timm pretrained weights `{spec.name}`{hub}{credit}", licence)
    return Provenance(spec.name, "randomly initialised (no pretrained weights)", "none")


def base_model(spec: ModelSpec) -> str | None:
    """The Hub id a student was fine-tuned from (`base_model`), when it started from Hub weights."""
    if spec.checkpoint or not spec.pretrained:
        return None
    if spec.name.startswith(("hf-hub:", "hf_hub:")):
        return spec.name.split(":", 1)[1].split("@", 1)[0]
    cfg = timm.models.get_pretrained_cfg(spec.name)
    return cfg.hf_hub_id if cfg and cfg.hf_hub_id else None


def _checkpoint_provenance(name: str, path: Path) -> Provenance:
    metadata = _safetensors_metadata(path)
    source, licence = metadata.get("source"), metadata.get("license")
    parts = path.parts
    shared = any(
        parts[i : i + len(SHARED_TEACHERS_DIR)] == SHARED_TEACHERS_DIR for i in range(len(parts))
    )
    if shared:
        where = f"`{'/'.join(SHARED_TEACHERS_DIR)}/{path.name}` (the project's shared teachers)"
        origin = f", converted from {_github(source or SHARED_TEACHERS_SOURCE)}"
        return Provenance(name, where + origin, licence or SHARED_TEACHERS_LICENSE)
    origin = f", source {_github(source)}" if source else ", origin not recorded in the file"
    return Provenance(name, f"local file `{path.name}`{origin}", licence or UNKNOWN)


def _origin_name(url: str) -> str:
    """A weights origin's short name: `owner/repo` for a GitHub URL, else the URL."""
    prefix = "https://github.com/"
    return url[len(prefix) :].strip("/") if url.startswith(prefix) else url


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other formats or a missing file)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _hub_link(repo: str) -> str:
    return f"[{repo}](https://huggingface.co/{repo})"


def _github(source: str) -> str:
    """Link the `owner/repo` a source string starts with to GitHub (the shared teachers' form)."""
    repo, _, rest = source.partition(" ")
    if repo.count("/") == 1 and not repo.startswith(("http", "/")):
        return f"[{repo}](https://github.com/{repo})" + (f" `{rest}`" if rest else "")
    return f"`{source}`"

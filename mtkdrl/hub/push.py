"""`mtkdrl push DIR --repo-id ORG/NAME`: upload an export to the Hub in one commit.

The token comes from where huggingface_hub looks (`HF_TOKEN`, `hf auth login`); it is never
printed or written, and is scrubbed from any error text. The export folder is only read.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .. import __version__
from ..errors import CommandParser, MtkdrlError, exit_code
from .names import check_repo_id

REQUIRED = ("config.json", "model.safetensors")


@dataclass
class PushConfig:
    """Which export goes to which repo, branch and visibility."""

    folder: Path
    repo_id: str
    private: bool = False
    revision: str | None = None
    commit_message: str = "Upload a student exported by mtkdrl"


def export_files(folder: Path) -> list[tuple[str, int]]:
    """The files an upload sends (relative path, bytes): every visible file of an export."""
    if not folder.is_dir():
        raise MtkdrlError(f"DIR: no such directory: {folder}")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise MtkdrlError(
            f"DIR: {folder} is not an export: it has no {', '.join(missing)} "
            "(write one with `mtkdrl export RUN_DIR --repo-id ORG/NAME --out DIR`)"
        )
    paths = []
    for root, folders, names in os.walk(folder):  # never into a linked folder
        for path in (Path(root) / name for name in [*folders, *names]):
            if path.is_symlink():
                raise MtkdrlError(
                    f"DIR: {path} is a symlink; push uploads only an export's own files: remove "
                    "the link"
                )
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if path.is_file() and not hidden:
                paths.append(path)
    paths.sort()
    return [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in paths]


def network_errors() -> tuple[type[BaseException], ...]:
    """What a failed request raises: Hub HTTP errors, OS/offline errors, and the HTTP client's
    own (requests before huggingface_hub 1.0, httpx or httpx2 after)."""
    errors: list[type[BaseException]] = [HfHubHTTPError, OSError, ValueError]
    clients = (("requests", "RequestException"), ("httpx", "HTTPError"), ("httpx2", "HTTPError"))
    for module, name in clients:
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def scrub(text: str, token: str | None) -> str:
    """`text` with the token (if any) replaced, so no message can leak it."""
    return text.replace(token, "hf_***") if token else text


def push_export(config: PushConfig) -> str:
    """Create the repo if needed and upload the export in one commit; returns the commit URL."""
    check_repo_id(config.repo_id)
    files = export_files(config.folder)
    token = get_token()
    if not token:
        raise MtkdrlError(
            "no Hugging Face token found: set HF_TOKEN or run `hf auth login` "
            "(a token with write access to the repo's organisation)"
        )
    api = HfApi(token=token, library_name="mtkdrl", library_version=__version__)
    try:
        api.create_repo(config.repo_id, private=config.private, exist_ok=True)
        if config.revision and config.revision != "main":
            api.create_branch(config.repo_id, branch=config.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=config.repo_id,
            folder_path=config.folder,
            revision=config.revision,
            commit_message=config.commit_message,
            allow_patterns=[name for name, _ in files],
        )
    except network_errors() as err:
        raise MtkdrlError(scrub(_explain(err, config.repo_id), token)) from None
    return str(getattr(commit, "commit_url", commit))


def _explain(err: BaseException, repo_id: str) -> str:
    """One line saying why the upload failed, and what to do where that is clear."""
    lines = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {lines[0].rstrip('.')}" if lines else type(err).__name__
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        hint = f"; check that your token may write to {repo_id.split('/')[0]!r}"
    elif isinstance(err, HfHubHTTPError):
        hint = ""
    else:
        hint = "; is the Hub reachable (HF_ENDPOINT, HF_HUB_OFFLINE, network)?"
    return f"push to {repo_id} failed (the export folder is unchanged): {detail}{hint}"


def dry_run(config: PushConfig) -> str:
    """What `push` would upload, as lines of sizes and names."""
    check_repo_id(config.repo_id)
    files = export_files(config.folder)
    target = f"{config.repo_id}@{config.revision or 'main'}"
    visibility = "private" if config.private else "public"
    lines = [f"would upload to {target} ({visibility}), {len(files)} files:"]
    lines += [f"  {size:>12,d}  {name}" for name, size in files]
    lines.append(f"  {sum(size for _, size in files):>12,d}  bytes in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="mtkdrl push", description=__doc__)
    parser.add_argument("folder", type=Path, metavar="DIR", help="an export (`mtkdrl export`)")
    parser.add_argument("--repo-id", required=True, help="Hub repo id ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to commit to (created if absent)")
    parser.add_argument("--commit-message", default=PushConfig.commit_message)
    parser.add_argument("--dry-run", action="store_true", help="list the files, upload nothing")
    args = parser.parse_args(argv)
    config = PushConfig(
        folder=args.folder,
        repo_id=args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    return exit_code(
        lambda: print(dry_run(config) if args.dry_run else f"pushed: {push_export(config)}")
    )


if __name__ == "__main__":
    sys.exit(main())

"""Hub repository ids: the organisation setting and the check every command applies to an id."""

from __future__ import annotations

from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import MtkdrlError, first_line

DEFAULT_ORG = "mtkdrl"


def check_repo_id(repo_id: str, field: str = "--repo-id") -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub model id, else a one-line error saying why."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise MtkdrlError(
            f"{field}: {repo_id!r} is not a valid Hub repo id: {first_line(err)}"
        ) from None
    if repo_id.count("/") != 1:
        raise MtkdrlError(
            f"{field}: {repo_id!r} must name an organisation or user and a repo, as ORG/NAME "
            "(e.g. mtkdrl/mtkdrl-resnet18)"
        )
    return repo_id

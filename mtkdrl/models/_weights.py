"""Pretrained weights of the zoo: their Hub names, their labels, and a guard on their classifier.

Weights are published as timm publishes its own: one Hub repository per `architecture.tag`,
under the `mtkdrl` organisation (`mtkdrl/resnet56_cifar.akamaster_cifar10`, as timm's are
`timm/resnet50.a1_in1k`).
"""

import warnings

from timm.models import list_pretrained
from torch import Tensor, nn

__all__ = ["CIFAR10_LABELS", "HUB_ORG", "check_classifier", "hub_id"]

HUB_ORG = "mtkdrl"

CIFAR10_LABELS = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def hub_id(name: str) -> str:
    """The Hub repository of the weights `architecture.tag` names."""
    return f"{HUB_ORG}/{name}"


def check_classifier(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm pretrained filter: refuse weights whose classifier contradicts their pretrained cfg.

    timm drops the classifier whenever the model's class count differs from the cfg's, so a cfg
    that misstates the weights' count would silently leave a random classifier. A deliberate
    change of class count (fine-tuning) still drops it, with a warning.
    """
    cfg = model.pretrained_cfg
    weight = state_dict.get(f"{cfg.get('classifier')}.weight")
    if weight is None:
        return state_dict
    file_classes = weight.shape[0]
    name = cfg["architecture"] + (f".{cfg['tag']}" if cfg.get("tag") else "")
    if file_classes != cfg["num_classes"]:
        tags = ", ".join(list_pretrained(f"{cfg['architecture']}.*")) or "none"
        raise RuntimeError(
            f"the weights loaded as {name!r} have a {file_classes}-class classifier but its "
            f"pretrained cfg says {cfg['num_classes']} classes, so timm would drop it for a random "
            f"one: load them under the tag they belong to (pretrained tags: {tags}), or add "
            f"num_classes={file_classes} to pretrained_cfg_overlay"
        )
    if model.num_classes not in (0, file_classes):
        warnings.warn(
            f"{name}: the pretrained {file_classes}-class classifier is dropped; the model's "
            f"{model.num_classes}-class classifier starts from random weights",
            stacklevel=2,
        )
    return state_dict

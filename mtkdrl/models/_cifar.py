"""What every model of the CIFAR zoo shares: its default cfg, the timm model interface, the builder.

Each family lays its network out as a stem, a sequence of feature stages and an optional head conv,
followed by global pooling and a linear classifier named `linear`. `CifarNet` turns that layout
into timm's interface (`forward_features`, `forward_head`, `forward_intermediates`, ...), so the
families only define their layers.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from ._weights import check_classifier

__all__ = ["CifarNet", "build_cifar_model", "cifar_cfg", "stack_blocks"]

ModelT = TypeVar("ModelT", bound=nn.Module)


def cifar_cfg(first_conv: str, pool_size: tuple[int, int], **kwargs: Any) -> dict[str, Any]:
    """Default pretrained cfg of a 32×32 CIFAR model; no weight source, ImageNet mean/std.

    The mean/std are ImageNet's because the shared pretrained CIFAR teachers were trained with them.
    """
    return {
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": pool_size,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv,
        "classifier": "linear",
        **kwargs,
    }


def stack_blocks(
    make_block: Callable[[int, int, int], nn.Module],
    in_chs: int,
    out_chs: int,
    stride: int,
    depth: int,
) -> list[nn.Module]:
    """`depth` blocks from `make_block(in_chs, out_chs, stride)`; the first one alone reshapes."""
    return [
        make_block(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1)
        for i in range(depth)
    ]


class CifarNet(nn.Module):
    """Base of the zoo: stem -> feature stages -> head conv -> global pool -> `linear`.

    A subclass builds `stem` (or overrides `forward_stem`) and records it with `set_stem`, adds
    its stages in order with `add_stage` and calls them in that order in `forward_stages`, replaces
    `conv_head` if it has one, then calls `init_classifier` and `init_weights`.
    """

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stage_names: tuple[str, ...] = ()
        self.feature_info: list[dict[str, Any]] = []
        self.conv_head: nn.Module = nn.Identity()

    def set_stem(self, module_name: str, num_chs: int, reduction: int) -> None:
        """Record the stem's map (feature index 0): the output of `module_name`."""
        self.feature_info = [{"num_chs": num_chs, "reduction": reduction, "module": module_name}]

    def add_stage(self, name: str, stage: nn.Module, num_chs: int, stride: int) -> None:
        """Append `stage` as the next feature stage; it gives `num_chs` channels at `stride`."""
        self.add_module(name, stage)
        self.stage_names += (name,)
        reduction = self.feature_info[-1]["reduction"] * stride
        self.feature_info.append({"num_chs": num_chs, "reduction": reduction, "module": name})

    def init_classifier(
        self, num_features: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0
    ) -> None:
        """Create the pooling + dropout + linear head over `num_features` channels."""
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes, global_pool)

    def init_weights(self) -> None:
        """Kaiming-normal (fan-out) convs, as the CRD/RepDistiller CIFAR models initialise them."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The final linear layer (or its name)."""
        return "linear" if name_only else self.linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 = no classifier)."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.num_classes = num_classes
        self.global_pool, self.linear = create_classifier(
            self.num_features, num_classes, pool_type=global_pool
        )

    def forward_stem(self, x: Tensor) -> Tensor:
        """Map the image to the stem's feature map (feature index 0)."""
        return self.stem(x)

    def forward_stages(self, x: Tensor) -> Tensor:
        """Run the feature stages in `add_stage` order.

        Each family calls its stages by name: TorchScript cannot look a submodule up by a variable.
        """
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """The last spatial map before pooling: stem, every stage, then the head conv."""
        return self.conv_head(self.forward_stages(self.forward_stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the map from `forward_features`; return the embedding or the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.linear(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Forward that also returns the maps of the stem (index 0) and of each stage (1..n).

        Args:
            x: Input images (B×C×H×W).
            indices: Last n feature maps if int, all if None, these feature indices if a list.
            norm: Accepted for timm compatibility; no net of the zoo has a separate final norm
                (the WRN's final BN-ReLU closes its last stage), so it changes nothing.
            stop_early: Stop after the last requested stage.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the list of maps.

        Returns:
            `(forward_features output, maps)`, or only the maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        stage_names = self.stage_names[:max_index] if stop_early else self.stage_names

        x = self.forward_stem(x)
        intermediates = [x] if 0 in take_indices else []
        for feature_index, name in enumerate(stage_names, start=1):
            x = getattr(self, name)(x)
            if feature_index in take_indices:
                intermediates.append(x)

        if intermediates_only:
            return intermediates
        if len(stage_names) == len(self.stage_names):
            x = self.conv_head(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what comes after the last requested feature index; return the kept indices.

        The head conv goes with any pruned stage or with `prune_norm`; the classifier with
        `prune_head`.
        """
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Identity())
        if prune_norm or max_index < len(self.stage_names):
            self.conv_head = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def build_cifar_model(
    model_cls: type[ModelT], variant: str, pretrained: bool, num_maps: int, **kwargs: Any
) -> ModelT:
    """Build a registered variant with timm; pretrained weights must match their cfg's classes.

    `features_only=True` returns all `num_maps` feature maps (stem and stages) by default, through
    `forward_intermediates`, or through an fx graph with `feature_cls="fx"`.
    """
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        feature_cfg={"feature_cls": "getter", "out_indices": tuple(range(num_maps))},
        pretrained_filter_fn=check_classifier,
        **kwargs,
    )

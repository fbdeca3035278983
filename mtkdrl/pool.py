"""Teachers and students from timm names: building them, loading weights, and one-pass outputs.

Every model gives, from one forward pass through timm's `forward_intermediates`, its logits, its
pooled embedding (`pre_logits`) and its last-stage feature map, so CNNs and ViTs work alike
(ViT tokens come back as an NCHW grid).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from torch import Tensor, nn

from .errors import MtkdrlError, first_line
from .recipe import ModelSpec


@dataclass
class ModelOutputs:
    """A model's outputs for one batch: logits (B×C), embedding (B×d), last-stage map (B×C×H×W).

    A teacher's embedding or map is None where the run does not read it (a compact cache)."""

    logits: Tensor
    embedding: Tensor | None
    features: Tensor | None = None

    def _map(self, change) -> ModelOutputs:
        def apply(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else change(tensor)

        return ModelOutputs(change(self.logits), apply(self.embedding), apply(self.features))

    def detach(self) -> ModelOutputs:
        return self._map(Tensor.detach)

    def float(self) -> ModelOutputs:
        return self._map(Tensor.float)

    def clone(self) -> ModelOutputs:
        return self._map(Tensor.clone)


def pooled_channels(embedding: Tensor, width: int) -> Tensor:
    """`embedding` (B×d) averaged over `width` contiguous channel groups (B×width); unchanged
    where it is `width` wide already, so applying it twice changes nothing."""
    if embedding.shape[1] == width:
        return embedding
    return F.adaptive_avg_pool1d(embedding.unsqueeze(1), width).squeeze(1)


def forward_outputs(
    model: nn.Module, images: Tensor, feature_stage: int | None = -1
) -> ModelOutputs:
    """Run `model` once and return logits, embedding and (unless `feature_stage` is None) the map
    of that entry of `forward_intermediates` (-1: the last stage's)."""
    if feature_stage is not None:
        final, intermediates = model.forward_intermediates(
            images, indices=[feature_stage], output_fmt="NCHW"
        )
        features = intermediates[-1]
    else:
        final, features = model.forward_features(images), None
    embedding = model.forward_head(final, pre_logits=True)
    logits = model.forward_head(final)
    return ModelOutputs(logits=logits, embedding=embedding, features=features)


class OutputsModel(nn.Module):
    """A model whose `forward` yields (logits, embedding, a stage's map) in one pass.

    Wrapping the student this way keeps its whole computation inside `forward`, which is what
    DistributedDataParallel (and other Accelerate wrappers) hook to synchronise gradients.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, feature_stage: int | None = -1) -> tuple:
        outputs = forward_outputs(self.model, images, feature_stage)
        return outputs.logits, outputs.embedding, outputs.features


def check_model_name(name: str, field: str) -> None:
    """Fail with close matches when `name` is not a timm model nor an `hf-hub:`/`local-dir:` id."""
    if not name:
        raise MtkdrlError(f"{field}.name is empty: give a timm model name, e.g. resnet18")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return
    base = name.split(".", 1)[0]
    if timm.is_model(base):
        return
    near = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    raise MtkdrlError(f"{field}.name: unknown timm model {name!r}{hint}")


def create_model(spec: ModelSpec, num_classes: int | None, field: str) -> nn.Module:
    """Build the model a spec names, with its weights, failing clearly on any mismatch.

    `num_classes` sets the head of a model built from scratch or from a local checkpoint; a model
    with pretrained weights keeps its own head, and the caller checks its class count.
    """
    check_model_name(spec.name, field)
    kwargs = dict(spec.kwargs)
    if not spec.pretrained and num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    overlay = {k: tuple(v) for k, v in (("mean", spec.mean), ("std", spec.std)) if v is not None}
    if overlay and not spec.name.startswith(("hf-hub:", "local-dir:")):
        kwargs["pretrained_cfg_overlay"] = overlay
    try:
        model = timm.create_model(spec.name, pretrained=spec.pretrained, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise MtkdrlError(
            f"{field}: the weights of {spec.name!r} are not in the local Hugging Face cache and "
            "the Hub is out of reach (offline?); run once with the Hub reachable to cache them, "
            f"or give a local weights file as {field}.checkpoint"
        ) from None
    except RepositoryNotFoundError:
        raise MtkdrlError(
            f"{field}: no Hub repository holds the weights of {spec.name!r} (or it is gated or "
            "private: log in with `hf auth login`); check the name, or give a local weights "
            f"file as {field}.checkpoint"
        ) from None
    except (RuntimeError, OSError, ValueError, TypeError) as err:
        raise MtkdrlError(f"{field}: could not create {spec.name!r}: {first_line(err)}") from None
    if spec.checkpoint:
        load_checkpoint(model, spec.checkpoint, f"{field}.checkpoint", spec.name)
    return model


def load_state_dict_file(path: str | Path, field: str) -> dict[str, Tensor]:
    """Read weights with timm's `load_state_dict`: safetensors, or a pickle read with
    `weights_only=True` (never unsafely), its `state_dict`/`model` entry taken and the
    `module.`/`_orig_mod.` wrapper prefixes removed (an EMA-only file gives its EMA weights)."""
    path = Path(path)
    if not path.is_file():
        raise MtkdrlError(f"{field}: weights file not found: {path}")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
        if isinstance(state.get("state_dict_ema"), dict):  # no other weights in the file
            state = timm.models.load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as err:
        raise MtkdrlError(f"{field}: cannot read {path} as weights: {first_line(err)}") from None
    return state


def load_checkpoint(model: nn.Module, path: str | Path, field: str, name: str) -> None:
    """Load a weights file strictly: any missing, unexpected or mis-shaped key is an error."""
    state = load_state_dict_file(path, field)
    own = model.state_dict()
    tracked = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - tracked)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        raise MtkdrlError(f"{field}: {path} does not fit model {name!r}: {'; '.join(parts)}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise MtkdrlError(
                f"{field}: {path} does not fit model {name!r}: {key} has shape "
                f"{tuple(value.shape)} in the file but {tuple(own[key].shape)} in the model"
                + _class_hint(model, key, value)
            )
    model.load_state_dict(
        state, strict=False
    )  # keys were checked above; num_batches_tracked may be absent


def _class_hint(model: nn.Module, key: str, value: Tensor) -> str:
    """Say how many classes the file was trained for when the mismatch is in the classifier."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if classifier is None:
        return ""
    for name, module in model.named_modules():
        if module is classifier and key in (f"{name}.weight", f"{name}.bias"):
            return f" (the file's classifier has {value.shape[0]} classes)"
    return ""


def check_class_count(
    model: nn.Module,
    num_classes: int,
    field: str | None,
    name: str,
    role: str = "teacher",
    hint: str = "use a teacher trained on this data set",
) -> None:
    """Fail unless `model` predicts `num_classes` classes: "{field}: {role} {name!r} predicts ..."
    (no field prefix when `field` is None), followed by "; {hint}" when a hint is given."""
    classes = getattr(model, "num_classes", None)
    if classes == num_classes:
        return
    where = f"{field}: " if field else ""
    advice = f"; {hint}" if hint else ""
    raise MtkdrlError(
        f"{where}{role} {name!r} predicts {classes} classes but the data set has "
        f"{num_classes}{advice}"
    )


def embedding_width(model: nn.Module) -> int:
    """The width of the pooled embedding `forward_head(..., pre_logits=True)` returns."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def teacher_heads(teachers: list[nn.Module], probe: list[ModelOutputs]) -> list[nn.Module | None]:
    """Each teacher's classifier as a frozen module that maps its pooled embedding to its logits.

    `probe[k]` is teacher k's outputs for one batch (`TeacherPool.check_inputs`); the head is kept
    only if applying it to that embedding (B×d) gives the probe's logits (atol 1e-4), else None:
    a head over tokens, or a classifier that is not a module applied to the pooled embedding.
    """
    heads: list[nn.Module | None] = []
    for model, outputs in zip(teachers, probe, strict=True):
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        heads.append(head.eval().requires_grad_(False) if _maps(head, outputs) else None)
    return heads


def _maps(head: object, outputs: ModelOutputs) -> bool:
    """True when `head` is a module that turns the probe's embedding into its logits."""
    if not isinstance(head, nn.Module) or outputs.embedding.dim() != 2:
        return False
    was_training = head.training
    head.eval()
    try:
        weight = next(iter(head.parameters()), None)
        embedding = outputs.embedding if weight is None else outputs.embedding.to(weight)
        with torch.no_grad():
            logits = head(embedding)
    except (RuntimeError, TypeError, ValueError):
        return False
    finally:
        head.train(was_training)
    if not isinstance(logits, Tensor) or logits.shape != outputs.logits.shape:
        return False
    return torch.allclose(
        logits.float().to(outputs.logits.device), outputs.logits.float(), atol=1e-4
    )


def data_config_of(model: nn.Module) -> dict:
    """timm's resolved preprocessing for `model` (input size, mean, std, crop, interpolation)."""
    return timm.data.resolve_model_data_config(model)


class InputAdapter(nn.Module):
    """Converts a batch normalised for the student into what one teacher expects.

    Re-normalises (mean/std) and resizes when the teacher needs a fixed input size different from
    the student's; an identity when both share preprocessing.
    """

    def __init__(self, student_cfg: dict, teacher_cfg: dict, teacher_fixed_size: bool) -> None:
        super().__init__()
        s_mean, s_std = _stats(student_cfg)
        t_mean, t_std = _stats(teacher_cfg)
        self.renormalise = not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        self.register_buffer("scale", (s_std / t_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer(
            "shift", ((s_mean - t_mean) / t_std).view(1, -1, 1, 1), persistent=False
        )
        student_size = tuple(student_cfg["input_size"][1:])
        teacher_size = tuple(teacher_cfg["input_size"][1:])
        self.size = teacher_size if teacher_fixed_size and teacher_size != student_size else None

    def forward(self, images: Tensor) -> Tensor:
        if self.renormalise:
            images = images * self.scale + self.shift
        if self.size is not None:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        return images


def _stats(cfg: dict) -> tuple[Tensor, Tensor]:
    return torch.tensor(cfg["mean"], dtype=torch.float32), torch.tensor(
        cfg["std"], dtype=torch.float32
    )


class TeacherPool:
    """Frozen teachers: eval mode, no gradients, each fed inputs in its own preprocessing.

    The pool is deliberately not an `nn.Module` of the student, so teachers never reach the
    optimizer or the checkpoint.
    """

    def __init__(self, teachers: list[nn.Module], names: list[str], student_cfg: dict) -> None:
        self.teachers = [t.eval().requires_grad_(False) for t in teachers]
        self.runners: list[nn.Module] = [OutputsModel(t) for t in self.teachers]
        self.names = names
        self.adapters = [
            InputAdapter(student_cfg, data_config_of(t), _fixed_size(t)) for t in self.teachers
        ]

    @classmethod
    def from_specs(
        cls, specs: list[ModelSpec], num_classes: int, student_cfg: dict, pretrained: bool = True
    ) -> TeacherPool:
        """Build every teacher of a recipe and check it fits the data set's class count."""
        models = []
        for index, spec in enumerate(specs):
            field = f"teachers.{index}"
            if not pretrained:
                spec = spec.without_weights()
            model = create_model(spec, num_classes, field)
            check_class_count(model, num_classes, field, spec.name)
            models.append(model)
        return cls(models, [s.name for s in specs], student_cfg)

    def __len__(self) -> int:
        return len(self.teachers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.teachers)

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None):
        for teacher, adapter in zip(self.teachers, self.adapters, strict=True):
            if memory_format is None:
                teacher.to(device)
            else:
                teacher.to(device, memory_format=memory_format)
            adapter.to(device)
        return self

    def __call__(self, images: Tensor, feature_stage: int | None = -1) -> list[ModelOutputs]:
        """Every teacher's outputs for a student-normalised batch, in fp32, without gradients.

        The forwards run in `inference_mode`; the outputs are cloned out of it so that the losses
        may keep them for the student's backward pass.
        """
        with torch.inference_mode():
            outputs = [
                ModelOutputs(*runner(adapter(images), feature_stage)).float()
                for runner, adapter in zip(self.runners, self.adapters, strict=True)
            ]
        return [out.clone() for out in outputs]

    def compile(self) -> None:
        """Run each teacher through `torch.compile` from now on."""
        self.runners = [torch.compile(runner) for runner in self.runners]

    def fingerprints(self) -> list[str]:
        """A hash of each teacher's weights and buffers: what a cache of its outputs depends on."""
        digests = []
        for teacher in self.teachers:
            digest = hashlib.sha256()
            for name, tensor in sorted(teacher.state_dict().items()):
                flat = tensor.detach().cpu().contiguous().reshape(-1)
                digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            digests.append(digest.hexdigest())
        return digests

    def check_inputs(
        self, student_cfg: dict, device: torch.device, feature_stage: int | None = -1
    ) -> list[ModelOutputs]:
        """One dummy batch through every teacher: proves the input sizes fit, and gives shapes
        (the maps at `feature_stage`)."""
        channels, height, width = student_cfg["input_size"]
        probe = torch.zeros(2, channels, height, width, device=device)
        outputs = []
        for name, teacher, adapter in zip(self.names, self.teachers, self.adapters, strict=True):
            try:
                with torch.no_grad():
                    outputs.append(forward_outputs(teacher, adapter(probe), feature_stage).float())
            except (RuntimeError, AssertionError, ValueError) as err:
                raise MtkdrlError(
                    f"teacher {name!r} cannot take the student's {height}x{width} inputs: "
                    f"{first_line(err)}; use a teacher that takes them, or a student whose "
                    "input size this teacher can take"
                ) from None
        return outputs


def _fixed_size(model: nn.Module) -> bool:
    return bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False))

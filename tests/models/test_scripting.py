"""Every `*_cifar` architecture scripts, fx-traces and exports like timm's models; the smallest of
each architecture module also converts to ONNX.

Each compiled form must reproduce the eager model (eval mode) on a fixed random batch. The list of
architectures comes from timm's registry, so a newly registered one is covered without edits.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import timm
import torch
from timm.models import create_feature_extractor
from torch import Tensor, nn
from torch.export import ExportedProgram

import mtkdrl.models  # noqa: F401  (registers the zoo)

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")

MODEL_NAMES = timm.list_models("*_cifar")


def smallest_of_each_module(names: list[str]) -> list[str]:
    """One architecture per module (the one with fewest parameters): the deeper and wider ones
    of a module repeat its blocks, and their ONNX conversion costs minutes on 2 CPU cores."""
    chosen: dict[str, tuple[int, str]] = {}
    for name in names:
        module = timm.models.model_entrypoint(name).__module__
        size = sum(p.numel() for p in timm.create_model(name).parameters())
        chosen[module] = min(chosen.get(module, (size, name)), (size, name))
    return sorted(name for _, name in chosen.values())


ONNX_NAMES = smallest_of_each_module(MODEL_NAMES)

ExportCache = Callable[[str, nn.Module, Tensor], ExportedProgram]

# Every compiled form runs the same float32 kernels on CPU as eager, up to op reordering.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run these tiny batches on one thread: on a busy machine, waiting for a second thread that
    is not scheduled costs more (up to seconds per forward) than the work it would share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def exported() -> ExportCache:
    """`torch.export` each architecture once (dynamic batch size); the ONNX tests reuse it."""
    programs: dict[str, ExportedProgram] = {}

    def export(name: str, model: nn.Module, images: Tensor) -> ExportedProgram:
        if name not in programs:
            batch = torch.export.Dim("batch", min=1, max=64)
            programs[name] = torch.export.export(model, (images,), dynamic_shapes=({0: batch},))
        return programs[name]

    return export


def eager_model(name: str) -> nn.Module:
    """The architecture with 10 classes and fixed random weights, in eval mode."""
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10).eval()


def test_registry_lists_the_zoo() -> None:
    assert len(MODEL_NAMES) >= 15


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torchscript_matches_eager(name: str, images: Tensor) -> None:
    model = eager_model(name)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    with torch.no_grad():
        features = model.forward_features(images)
        torch.testing.assert_close(scripted(images), model(images), **TOLERANCE)
        torch.testing.assert_close(scripted.forward_features(images), features, **TOLERANCE)
        torch.testing.assert_close(
            scripted.forward_head(features), model.forward_head(features), **TOLERANCE
        )
        torch.testing.assert_close(
            scripted.forward_head(features, pre_logits=True),
            model.forward_head(features, pre_logits=True),
            **TOLERANCE,
        )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fx_feature_extractor_and_its_script_match_eager(name: str, images: Tensor) -> None:
    model = eager_model(name)
    extractor = create_feature_extractor(model, return_nodes={"linear": "logits"}).eval()
    scripted = torch.jit.script(extractor)
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(extractor(images)["logits"], expected, **TOLERANCE)
    torch.testing.assert_close(scripted(images)["logits"], expected, **TOLERANCE)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fx_features_only_matches_forward_intermediates(name: str, images: Tensor) -> None:
    model = eager_model(name)
    torch.manual_seed(0)
    extractor = timm.create_model(name, num_classes=10, features_only=True, feature_cls="fx")
    extractor.eval()
    with torch.no_grad():
        maps = extractor(images)
        expected = model.forward_intermediates(images, intermediates_only=True)
    assert len(maps) == len(expected)
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torch_export_matches_eager(name: str, images: Tensor, exported: ExportCache) -> None:
    model = eager_model(name)
    program = exported(name, model, images)
    other_batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    module = program.module()
    with torch.no_grad():
        torch.testing.assert_close(module(images), model(images), **TOLERANCE)
        torch.testing.assert_close(module(other_batch), model(other_batch), **TOLERANCE)


@pytest.mark.parametrize("name", ONNX_NAMES)
def test_onnx_export_matches_eager(
    name: str, images: Tensor, exported: ExportCache, tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript", reason="ONNX export needs the dev extra")
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX check needs the dev extra")
    model = eager_model(name)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        exported(name, model, images), f=path, input_names=["x"], dynamo=True, verbose=False
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": images.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(images), **TOLERANCE)

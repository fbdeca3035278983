"""Building teachers and students from timm names, strict weight loading, one-pass outputs."""

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from mtkdrl.errors import MtkdrlError
from mtkdrl.pool import (
    InputAdapter,
    ModelOutputs,
    TeacherPool,
    check_class_count,
    create_model,
    forward_outputs,
    load_checkpoint,
    teacher_heads,
)
from mtkdrl.recipe import ModelSpec


def test_unknown_name_suggests_close_matches():
    with pytest.raises(MtkdrlError, match=r"student.name: unknown timm model 'resnet5'.*resnet50"):
        create_model(ModelSpec(name="resnet5"), 10, "student")


def test_forward_outputs_match_forward_for_cnn_and_vit():
    for name, shape in (("resnet18", (512, 2, 2)), ("vit_tiny_patch16_224", (192, 14, 14))):
        model = timm.create_model(name, num_classes=5).eval()
        size = 64 if name == "resnet18" else 224
        x = torch.randn(2, 3, size, size)
        out = forward_outputs(model, x)
        torch.testing.assert_close(out.logits, model(x))
        assert out.features.shape == (2, *shape)
        assert out.embedding.shape == (2, model.num_features)


def test_strict_checkpoint_loading(tmp_path, teacher_file):
    model = create_model(
        ModelSpec(name="resnet20_cifar", checkpoint=teacher_file(20)), 10, "teachers.0"
    )
    assert model.linear.weight.shape == (10, 64)
    state = {k: v for k, v in model.state_dict().items() if "num_batches" not in k}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(MtkdrlError, match=r"teachers.0.checkpoint: .* unexpected 1 keys"):
        load_checkpoint(model, path, "teachers.0.checkpoint", "resnet20_cifar")
    with pytest.raises(MtkdrlError, match=r"weights file not found"):
        load_checkpoint(model, tmp_path / "none.safetensors", "x", "resnet20_cifar")


def test_pickle_checkpoint_is_read_weights_only(tmp_path):
    model = timm.create_model("resnet20_cifar", num_classes=10)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    other = timm.create_model("resnet20_cifar", num_classes=10)
    load_checkpoint(other, tmp_path / "w.pth", "student.checkpoint", "resnet20_cifar")
    torch.testing.assert_close(other.linear.weight, model.linear.weight)


def test_wrapped_and_ema_checkpoints_are_read_through_timm(tmp_path):
    model = timm.create_model("resnet20_cifar", num_classes=10)
    compiled_ddp = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": compiled_ddp}, tmp_path / "wrapped.pth")
    torch.save({"state_dict_ema": model.state_dict()}, tmp_path / "ema.pth")
    for name in ("wrapped.pth", "ema.pth"):
        other = timm.create_model("resnet20_cifar", num_classes=10)
        load_checkpoint(other, tmp_path / name, "student.checkpoint", "resnet20_cifar")
        torch.testing.assert_close(other.linear.weight, model.linear.weight)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MtkdrlError, match=r"student.checkpoint: cannot read .*junk.pth as weights"):
        load_checkpoint(model, tmp_path / "junk.pth", "student.checkpoint", "resnet20_cifar")


def test_class_count_check_names_the_role():
    model = timm.create_model("resnet20_cifar", num_classes=100)
    check_class_count(model, 100, "teachers.0", "resnet20_cifar")
    with pytest.raises(
        MtkdrlError,
        match=r"^teachers.0: teacher 'resnet20_cifar' predicts 100 classes but the data set has "
        r"10; use a teacher trained on this data set$",
    ):
        check_class_count(model, 10, "teachers.0", "resnet20_cifar")
    with pytest.raises(
        MtkdrlError, match=r"^model 'resnet20_cifar' predicts 100 classes but the data set has 10$"
    ):
        check_class_count(model, 10, None, "resnet20_cifar", role="model", hint="")


def test_teacher_heads_map_the_embedding_to_the_logits():
    torch.manual_seed(0)
    cnn = timm.create_model("resnet20_cifar", num_classes=10)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, pretrained=False
    )
    teachers = [cnn.eval(), vit.eval()]
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        probe = [forward_outputs(t, images) for t in teachers]
    heads = teacher_heads(teachers, probe)
    assert heads[0] is cnn.linear and heads[1] is vit.head
    for head, outputs in zip(heads, probe, strict=True):
        assert not head.training and not any(p.requires_grad for p in head.parameters())
        torch.testing.assert_close(head(outputs.embedding), outputs.logits, atol=1e-4, rtol=0)
    # a head that does not reproduce the logits from the pooled embedding is not offered
    shifted = ModelOutputs(probe[0].logits + 1.0, probe[0].embedding)
    tokens = ModelOutputs(probe[1].logits, torch.randn(3, 17, 192))
    assert teacher_heads(teachers, [shifted, tokens]) == [None, None]


def test_input_adapter_renormalises_and_resizes():
    student = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    teacher = {
        "input_size": (3, 64, 64),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    pixels = torch.rand(1, 3, 32, 32)
    as_student = (pixels - 0.5) / 0.5
    adapter = InputAdapter(student, teacher, teacher_fixed_size=False)
    expected = (pixels - torch.tensor(teacher["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        teacher["std"]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(adapter(as_student), expected)
    assert InputAdapter(student, teacher, teacher_fixed_size=True)(as_student).shape[-1] == 64
    assert not InputAdapter(student, student, True).renormalise


def test_pool_is_frozen_and_checks_class_count(teacher_file):
    specs = [ModelSpec(name="resnet20_cifar", checkpoint=teacher_file(20))]
    cfg = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    pool = TeacherPool.from_specs(specs, 10, cfg)
    assert all(not p.requires_grad for t in pool for p in t.parameters())
    assert not pool.teachers[0].training
    outputs = pool(torch.randn(2, 3, 32, 32))
    assert outputs[0].features.shape == (2, 64, 8, 8) and not outputs[0].logits.requires_grad
    with pytest.raises(
        MtkdrlError, match=r"teachers.0.checkpoint: .*does not fit.*classifier has 10"
    ):
        TeacherPool.from_specs(specs, 100, cfg)


def test_hub_weights_missing_offline_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    """A pretrained tag whose weights are not cached, with the Hub out of reach: one line naming
    the field and the two ways out, not huggingface_hub's traceback."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    spec = ModelSpec(name="resnet20_cifar.akamaster_cifar10", pretrained=True)
    with pytest.raises(MtkdrlError) as caught:
        create_model(spec, 10, "teachers.0")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("teachers.0: the weights of 'resnet20_cifar.akamaster_cifar10'")
    assert "not in the local Hugging Face cache" in message
    assert "teachers.0.checkpoint" in message

"""Every weighting method with every feature term: a dry run and a short real run on the shared
data, or one line, before any compute, saying why the pair cannot be."""

import math

import pytest

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import method_class, method_options
from mtkdrl.outputs import read_records
from mtkdrl.run import build_run

WEIGHTING = ("avg", "ebkd", "aekd", "ca_mkd", "amtml", "mtkdrl", "mmkd")
FEATURES = {"none": "none", "map": "map", "hint": {"kind": "hint", "stage": 2}}
OPTIONS = {  # a meta step and an acting agent within two steps
    "mmkd": {"batch_size": 16, "buffer_size": 32, "meta_every": 2},
    "mtkdrl": {"warmup_epochs": 0, "agent_step": 2},
}
# CA-MKD weighs the feature term through each teacher's classifier head, which reads the last
# stage's 64 channels; the second stage's hints have 32
REFUSED = {
    ("ca_mkd", "hint"): r"^method\.feature: method 'ca_mkd' feeds the student's map, adapted for "
    r"each teacher, to that teacher's classifier head, which takes a 64-wide embedding; feature "
    r"term hint \(stage 2\) gives 'resnet20_cifar' \(teachers\.0\) maps of 32 channels",
}
# what the adapters read: (student channels at the term's stage, adapter class)
READS = {"map": (64, ("FeatureAdapter",)), "hint": (32, ("ConvRegressor",))}


@pytest.mark.parametrize(
    ("method", "option", "instead"),
    [
        ("avg", "features", "write method.feature=none for false"),
        ("ca_mkd", "features", "write method.feature=none for false"),
        ("amtml", "hints", "write method.feature=none for false"),
        ("fitnet_mkd", "hint_stage", r"write method.feature=\{kind: hint, stage: S\}"),
        ("mmkd", "regressor", r"write method.feature=\{kind: map, adapter: conv1x1\}"),
    ],
)
def test_an_option_that_became_a_feature_term_says_what_to_write(method, option, instead):
    cls = method_class(method)
    with pytest.raises(
        MtkdrlError,
        match=rf"^method\.options\.{option}: method '{method}' no "
        rf"longer has this option; the feature term is `method\.feature` now: "
        rf"{instead}",
    ):
        method_options(cls, {option: False})


def recipe(tiny_run, out, method: str, feature: str) -> Recipe:
    raw = tiny_run(out, method, epochs=1, max_steps_per_epoch=2, eval_teachers=False)
    raw["data"]["num_classes"] = 10
    raw["method"].update(feature=FEATURES[feature], options=OPTIONS.get(method, {}))
    return Recipe.from_dict(raw)


@pytest.mark.slow
@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("method", WEIGHTING)
def test_every_method_runs_with_every_feature_term_or_says_why_not(
    tiny_run, tmp_path, method, feature
):
    spec = recipe(tiny_run, tmp_path / "run", method, feature)
    if (method, feature) in REFUSED:
        for dry_run in (True, False):
            with pytest.raises(MtkdrlError, match=REFUSED[method, feature]) as caught:
                distill(spec, dry_run=dry_run)
            assert "\n" not in str(caught.value)
        assert not any((tmp_path / "run").iterdir())  # refused before anything was written
        return
    dry = distill(spec, dry_run=True)
    assert all(math.isfinite(v) for v in dry["losses"])
    task = build_run(spec, dry_run=True).task
    if feature == "none":
        assert task.adapters is None
    else:
        channels, kinds = READS[feature]
        assert tuple({type(a).__name__ for a in task.adapters}) == kinds
        assert task.feature_stage == task.objective.feature_stage
        assert {a.proj[0].in_channels for a in task.adapters} == {channels}
    summary = distill(spec)
    steps = [r for r in read_records(tmp_path / "run") if "loss" in r]
    assert steps and all(math.isfinite(r["loss"]) for r in steps)
    assert all(("feature" in r) == (feature != "none") for r in steps)
    assert 0 <= summary["last_top1"] <= 100

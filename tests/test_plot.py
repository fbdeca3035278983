"""`mtkdrl plot`: a PNG of the teacher weights and accuracy from a real (tiny) MTKD-RL run."""

import json

import pytest
from PIL import Image

from mtkdrl import Recipe, distill
from mtkdrl.cli import main as cli
from mtkdrl.errors import MtkdrlError
from mtkdrl.plot import (
    draw_histogram,
    draw_temperature,
    panels_of,
    plot_run,
    read_epochs,
    temperature_range,
)


def test_plot_of_a_real_mtkdrl_run(tiny_run, tmp_path):
    raw = tiny_run(tmp_path / "run", "mtkdrl-official", epochs=3, eval_every=2, eval_teachers=False)
    raw["method"]["options"] = {"warmup_epochs": 1, "dynamic": True}
    distill(Recipe.from_dict(raw))
    epochs = read_epochs(tmp_path / "run")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert ["val_top1" in r for r in epochs] == [False, True, True]  # eval_every=2 and the last
    assert {"w_logit_mean/0", "w_feature_std/1", "mix_logit/agent"} <= set(epochs[-1])
    assert epochs[0]["w_logit_mean/0"] == 1.0  # warm-up weight of the official code
    assert cli(["plot", str(tmp_path / "run")]) == 0
    image = Image.open(tmp_path / "run" / "teacher_weights.png")
    assert image.format == "PNG" and image.size[0] > 2 * image.size[1]  # three panels side by side


def test_plot_without_weights_draws_accuracy_only(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"epoch": e, "epoch_seconds": 1.0, "val_top1": 10.0 * e}) + "\n"
            for e in range(3)
        )
    )
    target = plot_run(tmp_path, tmp_path / "out.png")
    assert Image.open(target).format == "PNG"
    shows = [what for what, _ in panels_of(tmp_path, read_epochs(tmp_path))]
    assert shows == ["the student's validation top-1"]  # an `avg` run: no weight panel claimed


def test_plot_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(MtkdrlError, match=r"no metrics.jsonl"):
        plot_run(tmp_path)


def test_temperatures_are_drawn_as_mean_spread_and_per_epoch_histogram(tmp_path):
    """An `rl` run's log: the plot gains a temperature panel and a histogram whose columns are
    each epoch's shares of samples per T bin (t_max from the recipe)."""
    histograms = [[4, 0, 0, 0], [1, 2, 1, 0], [0, 0, 1, 3]]
    records = [
        {"epoch": e, "epoch_seconds": 1.0, "val_top1": 10.0 * e, "temperature_mean": 2.0 + e,
         "temperature_std": 0.5,
         "temperature_histogram": h}
        for e, h in enumerate(histograms)
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "recipe.yaml").write_text("method: {temperature: {policy: rl, t_max: 8}}\n")
    image = Image.open(plot_run(tmp_path, tmp_path / "out.png"))
    assert image.size[0] > 2.5 * image.size[1]  # temperature, histogram, accuracy

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    draw_histogram(axis, read_epochs(tmp_path), temperature_range(tmp_path))
    drawn = axis.images[0]
    expected = [[h[b] / sum(h) for h in histograms] for b in range(4)]
    assert drawn.get_array().tolist() == expected
    assert drawn.get_extent() == [-0.5, 2.5, 0.0, 8.0]
    figure.clf()
    draw_temperature(figure.add_subplot(), read_epochs(tmp_path))
    assert figure.axes[0].lines[0].get_ydata().tolist() == [2.0, 3.0, 4.0]
    plt.close(figure)

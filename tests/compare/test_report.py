"""The verdict and `compare.md` from a record of known figures."""

import json

from mtkdrl.compare.record import Record
from mtkdrl.compare.report import markdown, standings, verdict

TOP1 = {  # (method, feature) -> top-1 by seed
    ("avg", "none"): [60.0, 61.0, 59.0],
    ("mtkdrl", "none"): [62.0, 63.0, 61.5],  # +2.0, +2.0, +2.5 over avg: ahead
    ("ebkd", "none"): [61.0, 64.0, 60.0],  # -1, +1, -1.5 against the leader: a tie
    ("avg", "hint"): [64.0, 64.5, 63.0],
    ("mtkdrl", "hint"): [63.0, 64.0, 62.0],
}


def make_record(tmp_path) -> Record:
    record = Record(tmp_path / "results.json", {"train": {"epochs": 30}})
    for (method, feature), values in TOP1.items():
        for seed, top1 in enumerate(values):
            record.add({"method": method, "feature": feature, "seed": seed, "top1": top1,
                        "top5": 99.0, "epoch_seconds": 10.0 if method == "avg" else 11.0,
                        "peak_memory_mb": 500.0, "threads": 1, "run": "x"})  # fmt: skip
    return record


def test_the_verdict_names_the_leader_its_gain_on_avg_and_its_ties(tmp_path):
    rows = standings(make_record(tmp_path))
    lines = verdict(rows, "avg")
    assert lines[0] == "leader: avg / hint, top-1 63.83 % over 3 seeds"
    # the leader is the reference itself: no difference line, and the ties follow
    assert lines[1].startswith("tied with the leader (paired interval reaches 0): ")
    # ebkd / none: -3, -0.5, -3 against the leader, [-5.75, +1.42]: tied
    assert lines[1].endswith(": ebkd / none (-2.17 [-5.75, +1.42])")
    # mtkdrl / hint is behind it on every seed (-1, -0.5, -1: [-1.55, -0.12]), so not tied


def test_a_leader_ahead_of_avg_is_called_ahead(tmp_path):
    rows = [r for r in standings(make_record(tmp_path)) if r.feature == "none"]
    lines = verdict(rows, "avg")
    assert lines[0] == "leader: mtkdrl / none, top-1 62.17 % over 3 seeds"
    assert lines[1].startswith("against avg / none: +2.17 [+1.45, +2.88] points")
    assert lines[1].endswith(": ahead")
    assert lines[2].startswith("tied with the leader") and lines[2].endswith(
        "ebkd / none (-0.50 [-3.79, +2.79])"
    )


def test_one_seed_decides_nothing(tmp_path):
    """With a single seed there is no interval: neither a tie nor ahead, and said so."""
    record = Record(tmp_path / "results.json", {"train": {"epochs": 30}})
    for method, top1 in (("avg", 60.0), ("mtkdrl", 62.0), ("ebkd", 50.0)):
        figures = {"top5": 99.0, "epoch_seconds": 10.0, "peak_memory_mb": 500.0, "threads": 1}
        record.add({"method": method, "feature": "none", "seed": 0, "top1": top1, **figures})
    assert verdict(standings(record), "avg") == [
        "leader: mtkdrl / none, top-1 62.00 % over 1 seed",
        "against avg / none: +2.00 (1 seed, no interval) points, paired by seed, 95 % interval: "
        "not decided (one seed: no interval)",
        "not decided against the leader (one seed in common, no interval): avg / none, ebkd / none",
    ]


def test_compare_md_has_every_row_and_the_grid_of_methods_by_feature(tmp_path):
    text = markdown(standings(make_record(tmp_path)), "avg", "HEADER")
    assert text.startswith("HEADER\n")
    assert "| mtkdrl | none | 3 | 62.17 ± 0.76 | +2.17 [+1.45, +2.88] |" in text
    assert "11.0 s (1.10x)" in text
    assert "| mtkdrl | +2.17 [+1.45, +2.88] | -0.83 [-1.55, -0.12] |" in text  # the grid
    assert "| ebkd | +1.67 [-1.20, +4.54] | not run |" in text


def test_the_record_is_written_whole_after_each_row(tmp_path):
    record = make_record(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["recipe"] == {"train": {"epochs": 30}}
    assert len(saved["results"]) == len(record.rows) == 15
    assert not (tmp_path / "results.json.partial").exists()

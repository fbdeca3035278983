"""What a comparison's record says: the verdict printed at the end, `compare.md`, and the plot
of top-1 against time per epoch."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .record import Record
from .stats import Interval, paired


@dataclass(frozen=True)
class Standing:
    """One (method, feature) row's figures over its seeds."""

    method: str
    feature: str
    top1: dict[int, float]
    epoch_seconds: float
    peak_memory_mb: float
    threads: int

    @property
    def name(self) -> str:
        return self.method if self.feature == "recipe" else f"{self.method} / {self.feature}"

    @property
    def mean(self) -> float:
        return statistics.mean(self.top1.values())


def standings(record: Record) -> list[Standing]:
    """Every row of the record, in the order first recorded."""
    keys = list(dict.fromkeys((m, f) for m, f, _ in record.rows))
    found = []
    for method, feature in keys:
        runs = [r for (m, f, _), r in record.rows.items() if (m, f) == (method, feature)]
        found.append(
            Standing(
                method,
                feature,
                record.top1(method, feature),
                statistics.mean(r["epoch_seconds"] for r in runs),
                statistics.mean(r["peak_memory_mb"] for r in runs),
                runs[0]["threads"],
            )
        )
    return found


def reference_for(rows: list[Standing], row: Standing, reference: str) -> Standing | None:
    """The reference method's row with the same feature term (none when it was not run)."""
    return next((r for r in rows if (r.method, r.feature) == (reference, row.feature)), None)


def against_leader(rows: list[Standing], leader: Standing) -> list[tuple[Standing, Interval]]:
    """Every other row's paired difference to the leader (rows sharing no seed with it left out)."""
    found = []
    for row in rows:
        difference = paired(row.top1, leader.top1) if row is not leader else None
        if difference is not None:
            found.append((row, difference))
    return found


def seeds_text(count: int) -> str:
    return f"{count} seed" + ("" if count == 1 else "s")


def verdict(rows: list[Standing], reference: str) -> list[str]:
    """The leader, its paired difference to the reference with the same feature term, and the
    rows tied with it; one line each."""
    leader = max(rows, key=lambda r: r.mean)
    lines = [
        f"leader: {leader.name}, top-1 {leader.mean:.2f} % over {seeds_text(len(leader.top1))}"
    ]
    base = reference_for(rows, leader, reference)
    if base is None:
        lines.append(f"no `{reference}` row with the same feature term to measure it against")
    elif base is not leader:
        difference = paired(leader.top1, base.top1)
        if difference is None:
            word = "no seed in common"
        elif not difference.measured:
            word = "not decided (one seed: no interval)"
        else:
            word = "a tie" if difference.includes_zero else "ahead"
        lines.append(
            f"against {base.name}: {difference} points, paired by seed, 95 % interval: {word}"
        )
    others = against_leader(rows, leader)
    tied = [(row, d) for row, d in others if d.includes_zero]
    if tied:
        names = ", ".join(f"{row.name} ({difference})" for row, difference in tied)
        lines.append(f"tied with the leader (paired interval reaches 0): {names}")
    elif any(d.measured for _, d in others):
        lines.append("no row is tied with the leader")
    undecided = [row.name for row, d in others if not d.measured]
    if undecided:
        lines.append(
            f"not decided against the leader (one seed in common, no interval): "
            f"{', '.join(undecided)}"
        )
    return lines


def _ratio(row: Standing, base: Standing | None, attribute: str) -> str:
    if base is None or (attribute == "epoch_seconds" and row.threads != base.threads):
        return "-"
    return f"{getattr(row, attribute) / getattr(base, attribute):.2f}x"


def markdown(rows: list[Standing], reference: str, header: str) -> str:
    """`compare.md`: a table of every row, and a grid of methods by feature term."""
    leader = max(rows, key=lambda r: r.mean)
    lines = [
        header,
        "",
        *(f"- {line}" for line in verdict(rows, reference)),
        "",
        f"| method | feature | seeds | top-1, mean ± std | Δ to `{reference}` [95 % CI] "
        "| Δ to the leader [95 % CI] | time/epoch | peak memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        base = reference_for(rows, row, reference)
        spread = statistics.stdev(row.top1.values()) if len(row.top1) > 1 else 0.0
        to_base = paired(row.top1, base.top1) if base and base is not row else None
        to_leader = paired(row.top1, leader.top1) if row is not leader else None
        lines.append(
            f"| {row.method} | {row.feature} | {len(row.top1)} | {row.mean:.2f} ± {spread:.2f} "
            f"| {to_base or '-'} | {to_leader or '-'} | {row.epoch_seconds:.1f} s "
            f"({_ratio(row, base, 'epoch_seconds')}) | {row.peak_memory_mb:.0f} MB "
            f"({_ratio(row, base, 'peak_memory_mb')}) |"
        )
    lines += ["", *grid(rows, reference)]
    return "\n".join(lines) + "\n"


def grid(rows: list[Standing], reference: str) -> list[str]:
    """Methods down, feature terms across: each cell the mean paired Δ to the reference with
    the same term, so a weighting's gain is read with the feature term held fixed."""
    features = list(dict.fromkeys(r.feature for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    if len(features) < 2:
        return []
    lines = [
        f"Δ to `{reference}` with the same feature term, points [95 % CI over seeds]:",
        "",
        "| method | " + " | ".join(features) + " |",
        "|" + " --- |" * (len(features) + 1),
    ]
    by_key = {(r.method, r.feature): r for r in rows}
    for method in methods:
        cells = []
        for feature in features:
            row, base = by_key.get((method, feature)), by_key.get((reference, feature))
            if row is None:
                cells.append("not run")
            elif method == reference or base is None:
                cells.append(f"top-1 {row.mean:.2f}")
            else:
                cells.append(str(paired(row.top1, base.top1) or "-"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[Standing], path: Path) -> bool:
    """Top-1 (mean, with its spread) against time per epoch; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(8, 5))
    for index, row in enumerate(rows):
        spread = statistics.stdev(row.top1.values()) if len(row.top1) > 1 else 0.0
        axis.errorbar(row.epoch_seconds, row.mean, yerr=spread, fmt="o", capsize=3,
                      color=plt.cm.tab20(index % 20), label=row.name)  # fmt: skip
    axis.legend(fontsize=7, loc="best")
    axis.set(xlabel="time per epoch (s)", ylabel="val top-1 (%), mean ± std over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return True

"""Compare distillation methods on teacher pools over seeds: a resumable harness.

A *pool* is a list of teacher specs (a preset below, or `--pool NAME=FILE.yaml` with a YAML list
of `{name, checkpoint}` specs: any timm names and weight files); a *method* is a named set of
recipe overrides. Every (pool, method, seed) is one run directory under `--work`, trained in a
fresh process by `python -m mtkdrl.distill` on one budget shared by all; `none` uses no teacher,
so one run per seed serves every pool. Before a pool's rows, `mtkdrl cache` fills one
teacher-output cache per (pool, seed) that every row of that pool reads. Run the same command
with `--resume` to skip the runs that finished and continue one that was cut off: a comparison
too long for one sitting is completed by running it again. `results.json` is the record: each
run's row is written there as it finishes and kept, so a later sitting on another machine (its
`--work` empty) skips what is recorded and runs only the rest.

Outputs (`--out`): `results.json` (every run's figures), `compare.md` (per pool: top-1 mean ±
std over seeds, each seed's figure, the paired difference to `avg` at the same seed, time per
epoch and peak memory as ratios to `avg`) and `compare.png` (top-1 against time per epoch). The
README's results section, between its `compare:start`/`compare:end` markers, is rewritten with a
summary: one row per method, its mean paired difference to `avg` on every pool.

    python bench/compare.py --resume
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mtkdrl.outputs import read_epochs

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "cifar10_mtkdrl.yaml"
WEAK_TEACHER_RECIPE = REPO / "recipes" / "cifar10_weak_teacher.yaml"
README = REPO / "README.md"
MARKERS = ("<!-- compare:start -->", "<!-- compare:end -->")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def shared_teacher(depth: int, suffix: str = "") -> dict:
    return {
        "name": f"resnet{depth}_cifar",
        "checkpoint": str(SHARED / "teachers" / f"cifar10_resnet{depth}{suffix}.safetensors"),
    }


SHARED4 = [shared_teacher(d) for d in (20, 32, 44, 56)]
POOLS: dict[str, list[dict]] = {
    "shared4": SHARED4,
    "shared4+swapped": [*SHARED4, shared_teacher(56, "_swapped")],
    "shared4+weak": [*SHARED4, {"name": "resnet20_cifar", "checkpoint": "@weak"}],
}


def teachers_override(teachers: list[dict]) -> str:
    return "teachers=" + yaml.safe_dump(teachers, default_flow_style=True, width=10**9).strip()


def mtkdrl_row(update: str, gap: bool, reward: str) -> list[str]:
    """An MTKD-RL row that spells out every option in which `mtkdrl` departs from
    `mtkdrl-official` (all with the uniform warm-up), so its runs mean the same whatever the
    defaults become."""
    mix = "[1, 1, 1]" if gap else "[1, 1, 0]"
    options = f"agent_update: {update}, warmup_weight: uniform, logit_mix: {mix}, reward: {reward}"
    return ["method.name=mtkdrl", f"method.options={{{options}}}"]


# RLKD's and CTKD's schedules, official in epochs of 240, divided by 8 for the 30 here (as DKD's
# warm-up): warm-up, learning every 3rd epoch, the entropy remix every 3 after the warm-up
RL_TEMPERATURE = "method.temperature={policy: rl, warmup_epochs: 3, rl_every: 3, remix_every: 3}"
CURRICULUM = "method.temperature={policy: curriculum, ramp_epochs: 2}"
# `kd` distils from one teacher: the pool's strongest, resnet56
KD = ["method.name=kd", "method.options={}", teachers_override([shared_teacher(56)])]

METHODS: dict[str, list[str]] = {
    "none": ["method.name=none", "method.options={}"],
    "avg": ["method.name=avg", "method.options={}"],
    "avg (no cache)": ["method.name=avg", "method.options={}", "teacher_cache.mode=off"],
    "ebkd": ["method.name=ebkd", "method.options={}"],
    "aekd": ["method.name=aekd", "method.options={}"],
    "ca_mkd": ["method.name=ca_mkd", "method.options={}"],
    # DKD at the official res56->res20 beta, its 20-of-240-epoch warm-up scaled to the budget
    "dkd (beta 2, warm-up 3)": [
        "method.name=dkd",
        "method.options={alpha: 1, beta: 2, warmup_epochs: 3}",
    ],
    "fitnet_mkd (beta 100)": ["method.name=fitnet_mkd", "method.options={}", "method.beta=100"],
    "amtml": ["method.name=amtml", "method.options={}"],
    "mmkd (beta 100)": ["method.name=mmkd", "method.options={}", "method.beta=100"],
    "kd (resnet56)": KD,
    "kd (resnet56) + rl-temperature": [*KD, RL_TEMPERATURE],
    "kd (resnet56) + curriculum": [*KD, CURRICULUM],
    "avg + rl-temperature": ["method.name=avg", "method.options={}", RL_TEMPERATURE],
    "mtkdrl-official": ["method.name=mtkdrl-official", "method.options={}"],
    "mtkdrl (uniform warm-up)": mtkdrl_row("official", gap=True, reward="loss"),
    "mtkdrl (reinforce, uniform warm-up)": mtkdrl_row("reinforce", gap=True, reward="loss"),
    "mtkdrl (uniform warm-up, no gap term)": mtkdrl_row("official", gap=False, reward="loss"),
    "mtkdrl (reinforce, uniform warm-up, no gap term)": mtkdrl_row(
        "reinforce", gap=False, reward="loss"
    ),
    "mtkdrl (reinforce, uniform warm-up, no gap term, centred reward)": mtkdrl_row(
        "reinforce", gap=False, reward="centred"
    ),
    # our defaults spelled out (the row above without rl is "uniform warm-up, no gap term")
    "mtkdrl (uniform warm-up, no gap term) + rl-temperature": [
        *mtkdrl_row("official", gap=False, reward="loss"),
        RL_TEMPERATURE,
    ],
}


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The budget every run shares: a cosine schedule over a fixed training subset."""
    return [
        f"data.train_subset={args.subset}",
        f"train.epochs={args.epochs}",
        f"train.eval_every={args.epochs}",  # the tables need the last epoch's only
        f"data.batch_size={args.batch_size}",
        "optim.lr=0.05",
        "optim.schedule=cosine",
        "optim.weight_decay=5e-4",
        "train.eval_teachers=false",
        "train.checkpoint_every=200",
        "train.keep_checkpoints=1",
        f"train.log_every={10**6}",
        "train.log_weights_by_class=true",  # for bench/agent_weights.py
        f"teacher_cache.views={args.views}",
        f"train.mixed_precision={args.precision}",  # one precision for every row
        "teacher_cache.store=all",  # one cache per (pool, seed) serves every method
    ]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "+-" else "_" for c in text).strip("_")


def run_distill(recipe: Path, overrides: list[str], out: Path, resume: bool) -> None:
    """One run in a fresh process, continued where a checkpoint exists; skipped when finished."""
    if (out / "summary.json").is_file():
        return
    cut_off = (out / "checkpoints" / "latest").is_file()
    if cut_off and not resume:
        raise SystemExit(f"{out} was cut off: pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    flag = "--resume" if cut_off else "--overwrite"
    command = [sys.executable, "-m", "mtkdrl.distill", str(recipe), *overrides, f"output_dir={out}"]
    with open(out / "harness.log", "a") as log:
        done = subprocess.run([*command, flag], stdout=log, stderr=subprocess.STDOUT, env=OFFLINE)
    if done.returncode != 0:
        raise SystemExit(f"run {out} failed: see {out / 'harness.log'}")


def resolve_pool(teachers: list[dict], args: argparse.Namespace) -> list[dict]:
    """The pool's specs with `@weak` replaced by the weak teacher trained from its recipe."""
    resolved = []
    for spec in teachers:
        if spec.get("checkpoint") == "@weak":
            out = Path(args.work) / "teachers" / "weak"
            run_distill(WEAK_TEACHER_RECIPE, [], out, resume=True)
            spec = {**spec, "checkpoint": str(out / "student_last.safetensors")}
        resolved.append(spec)
    return resolved


def fill_cache(pool: str, teachers: list[dict], seed: int, args: argparse.Namespace) -> None:
    marker = Path(args.work) / "pools" / slug(pool) / f"cache_filled_seed{seed}"
    if marker.is_file():
        return
    overrides = [*pool_overrides(pool, teachers, args), *METHODS["avg"], f"seed={seed}"]
    command = [sys.executable, "-m", "mtkdrl.fill_cache", str(RECIPE), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env=OFFLINE)
    if done.returncode != 0:
        raise SystemExit(f"filling the cache of {pool}, seed {seed} failed:\n{done.stderr[-2000:]}")
    marker.write_text("done\n")


def pool_overrides(pool: str, teachers: list[dict], args: argparse.Namespace) -> list[str]:
    cache = Path(args.work) / "pools" / slug(pool) / "cache"
    return [*budget_overrides(args), teachers_override(teachers), f"teacher_cache.dir={cache}"]


def run_dir(pool: str, method: str, seed: int, args: argparse.Namespace) -> Path:
    if method == "none":  # no teachers: one run per seed serves every pool
        return Path(args.work) / "none" / f"seed{seed}"
    return Path(args.work) / "pools" / slug(pool) / slug(method) / f"seed{seed}"


def figures(out: Path) -> dict:
    """A finished run's top-1, peak memory and time per epoch: its fastest epoch's, the one least
    slowed by other work on the machine (every epoch reads the filled cache, so all do the same
    work)."""
    summary = json.loads((out / "summary.json").read_text())
    return {
        "top1": summary["last_top1"],
        "epoch_seconds": min(e["epoch_seconds"] for e in read_epochs(out)),
        "peak_memory_mb": summary["peak_memory_mb"],
    }


def harness_threads() -> int:
    """The CPU threads each run gets: `OMP_NUM_THREADS` where set, else the cores it may use
    (torch's default). Time ratios are taken only between runs with the same count."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def budget(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("subset", "epochs", "batch_size", "views", "seeds")}


def recorded_rows(args: argparse.Namespace) -> dict[tuple, dict]:
    """The rows of `results.json` in `--out`, by (pool, method, seed), when it was made at this
    budget (its seeds aside); none otherwise."""
    path = Path(args.out) / "results.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    same = {k: v for k, v in record["budget"].items() if k != "seeds"}
    if same != {k: v for k, v in budget(args).items() if k != "seeds"}:
        raise SystemExit(
            f"{path} was made at budget {record['budget']}, not {budget(args)}: "
            "pass another --out or the same budget"
        )
    return {(r["pool"], r["method"], r["seed"]): r for r in record["results"]}


def save_rows(rows: dict[tuple, dict], args: argparse.Namespace) -> None:
    """Write the record atomically, so a kill never leaves it half-written."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({seed for (_, _, seed) in rows} | set(args.seeds))
    record = {"budget": {**budget(args), "seeds": seeds}, "results": list(rows.values())}
    partial = out / "results.json.partial"
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(out / "results.json")


def run_all(pools: dict[str, list[dict]], args: argparse.Namespace) -> list[dict]:
    """Train every run not yet recorded (or, with `--report`, only collect finished ones),
    recording each row as it finishes."""
    rows = recorded_rows(args)
    for pool, specs in pools.items():
        missing = [
            (seed, method)
            for seed in args.seeds
            for method in args.methods
            if (pool, method, seed) not in rows
        ]
        if not missing:
            continue
        teachers = resolve_pool(specs, args) if not args.report else specs
        for seed, method in missing:
            out = run_dir(pool, method, seed, args)
            if not args.report:
                fill_cache(pool, teachers, seed, args)
                overrides = [
                    *pool_overrides(pool, teachers, args),
                    *METHODS[method],
                    f"seed={seed}",
                ]
                started = time.perf_counter()
                run_distill(RECIPE, overrides, out, args.resume)
                print(f"{pool} / {method} / seed {seed}: {time.perf_counter() - started:.0f} s")
            if (out / "summary.json").is_file():
                row = {"pool": pool, "method": method, "seed": seed, **figures(out)}
                rows[(pool, method, seed)] = {**row, "threads": harness_threads()}
                save_rows(rows, args)
    return [r for r in rows.values() if r["pool"] in pools and r["seed"] in args.seeds]


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def pool_table(pool: str, results: list[dict], seeds: list[int]) -> str:
    rows = [r for r in results if r["pool"] == pool]
    by_method = {m: {r["seed"]: r for r in rows if r["method"] == m} for m in METHODS}
    base = by_method["avg"]
    lines = [
        f"**{pool}**",
        "",
        "| method | top-1, mean ± std | per seed | paired Δ to avg | time/epoch vs avg "
        "| peak memory vs avg |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, runs in by_method.items():
        if not runs:
            continue
        top1 = [runs[s]["top1"] for s in seeds if s in runs]
        paired = [runs[s]["top1"] - base[s]["top1"] for s in seeds if s in runs and s in base]
        time_ratio = _ratio(runs, base, "epoch_seconds")
        memory_ratio = _ratio(runs, base, "peak_memory_mb")
        per_seed = " / ".join(f"{t:.2f}" for t in top1)
        lines.append(
            f"| {method} | {_mean_std(top1)} | {per_seed} | "
            f"{_mean_std(paired) if paired else '-'} | {time_ratio} | {memory_ratio} |"
        )
    return "\n".join(lines)


def summary_table(results: list[dict], pools: list[str], seeds: list[int]) -> str:
    """One row per method: its mean paired Δ to `avg` on every pool (with the number of seeds
    where it is not all of them) and its peak memory against `avg`'s on the first pool; what the
    README shows, the per-seed tables being in `compare.md`."""
    lines = [
        "| method | " + " | ".join(f"`{p}`: Δ to avg" for p in pools) + " | peak memory vs avg |",
        "|" + " --- |" * (len(pools) + 2),
    ]
    for method in METHODS:
        cells, memory = [], "-"
        for index, pool in enumerate(pools):
            runs = {r["seed"]: r for r in results if r["pool"] == pool and r["method"] == method}
            base = {r["seed"]: r for r in results if r["pool"] == pool and r["method"] == "avg"}
            paired = [runs[s]["top1"] - base[s]["top1"] for s in seeds if s in runs and s in base]
            if method == "avg" and runs:
                top1 = [runs[s]["top1"] for s in seeds if s in runs]
                cells.append(f"top-1 {_mean_std(top1)}")
            elif paired:
                shown = _mean_std(paired)
                cells.append(shown if len(paired) == len(seeds) else f"{shown} ({len(paired)})")
            else:
                cells.append("not run")
            if index == 0 and runs:
                memory = _ratio(runs, base, "peak_memory_mb")
        if any(cell != "not run" for cell in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {memory} |")
    return "\n".join(lines)


def _ratio(runs: dict, base: dict, key: str) -> str:
    """Mean over runs against mean over `avg`'s; a time only from runs with as many threads."""
    if key == "epoch_seconds":
        threads = {r["threads"] for r in base.values()}
        runs = {s: r for s, r in runs.items() if r["threads"] in threads}
    if not base or not runs:
        return "-"
    ours = statistics.mean(r[key] for r in runs.values())
    return f"{ours / statistics.mean(r[key] for r in base.values()):.2f}x"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    colours = {method: plt.cm.tab20(index % 20) for index, method in enumerate(METHODS)}
    pools = list(dict.fromkeys(r["pool"] for r in results))
    markers = dict(zip(pools, "osD^vP*X", strict=False))
    for pool in pools:
        for method in METHODS:
            runs = [r for r in results if r["pool"] == pool and r["method"] == method]
            if runs:
                x = statistics.mean(r["epoch_seconds"] for r in runs)
                y = statistics.mean(r["top1"] for r in runs)
                axis.scatter(x, y, color=colours[method], marker=markers[pool], s=40)
    for method, colour in colours.items():
        axis.scatter([], [], color=colour, label=method)
    for pool, marker in markers.items():
        axis.scatter([], [], color="grey", marker=marker, label=f"pool {pool}")
    axis.legend(fontsize=7, loc="lower left")
    axis.set(xlabel="time per epoch (s)", ylabel="val top-1 (%), mean over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def write_outputs(results: list[dict], args: argparse.Namespace, pools: list[str]) -> str:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"ResNet-20 student, {args.subset} shared CIFAR-10 training images x {args.epochs} epochs, "
        f"batch {args.batch_size}, SGD 0.05 cosine, teacher cache of {args.views} views, seeds "
        f"{', '.join(map(str, args.seeds))}; top-1 at the last epoch on the 5,000 val images; "
        "time per epoch against `avg`'s only from runs on as many CPU threads. "
        "`python bench/compare.py --resume`"
    )
    markdown = "\n\n".join([header, *(pool_table(p, results, args.seeds) for p in pools)]) + "\n"
    (out / "compare.md").write_text(markdown)
    plot(results, out / "compare.png")
    summary = (
        f"{header}. Mean paired Δ in top-1 to `avg` over the seeds, in points (a number in "
        "brackets: seeds finished so far, where fewer than all); per-seed figures and time ratios "
        "in [bench/results/compare/compare.md](bench/results/compare/compare.md).\n\n"
        + summary_table(results, pools, args.seeds)
        + "\n"
    )
    return summary


def update_readme(markdown: str) -> None:
    """Rewrite the README's results section (between the markers) from the harness's summary."""
    text = README.read_text()
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if start < 0 or end < start:
        return
    body = f"{MARKERS[0]}\n{markdown}{MARKERS[1]}"
    README.write_text(text[:start] + body + text[end + len(MARKERS[1]) :])


def build_parser() -> argparse.ArgumentParser:
    """The harness's options; its defaults are the comparison's budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pools", nargs="+", default=list(POOLS), help="preset names")
    parser.add_argument("--pool", action="append", default=[], metavar="NAME=FILE.yaml",
                        help="a pool of your own: a YAML list of teacher specs")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subset", type=int, default=2000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--views", type=int, default=4, help="teacher-cache views per sample")
    parser.add_argument(
        "--precision", default="no", choices=["no", "bf16"], help="pinned for every row"
    )
    parser.add_argument("--work", default=str(REPO.parent / "mtkdrl_compare"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "compare"))
    parser.add_argument(
        "--resume", action="store_true", help="skip finished runs, continue cut-off ones"
    )
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument("--report", action="store_true", help="tables from finished runs only")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if "avg" not in args.methods:
        parser.error("--methods must include avg (differences and ratios are to avg)")
    unknown = [p for p in args.pools if p not in POOLS]
    if unknown:
        parser.error(f"unknown pool {unknown[0]!r}; presets: {', '.join(POOLS)}")
    pools = {name: POOLS[name] for name in args.pools}
    for item in args.pool:
        name, _, path = item.partition("=")
        pools[name] = yaml.safe_load(Path(path).read_text())
    if (
        Path(args.work).is_dir()
        and any(Path(args.work).iterdir())
        and not (args.resume or args.report)
    ):
        parser.error(f"--work {args.work} holds earlier runs: pass --resume to continue them")
    results = run_all(pools, args)
    summary = write_outputs(results, args, list(pools))
    if not args.no_readme:
        update_readme(summary)
    print(summary)


if __name__ == "__main__":
    main()

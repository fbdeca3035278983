"""The Markdown sections of a model card's body, each written from the card's context.

What a section says of the method (its description, whether it distils) comes from its class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import timm
import yaml

from .. import __version__
from ..data import describe_split
from ..errors import MtkdrlError
from ..hardware import machine_info
from ..methods import method_class
from ..outputs import PLOT_FILE
from ..plot import panels_of
from ..recipe import MethodConfig
from .lineage import provenance
from .public import public_recipe
from .run import FinishedRun, eval_data_of

if TYPE_CHECKING:
    from .context import CardContext

PLOT_NAME = PLOT_FILE  # the export keeps the name of the run's plot


@dataclass(frozen=True)
class MethodText:
    """What a card says of a method, from its class."""

    description: str
    citation: str
    uses_teachers: bool
    fixed_logit_loss: str = ""


def method_text(name: str) -> MethodText:
    """The method's one-line description, BibTeX citation and whether it distils from teachers;
    a method this installation does not register is described by its name alone."""
    try:
        cls = method_class(name)
    except MtkdrlError:
        return MethodText(description=f"method `{name}`", citation="", uses_teachers=True)
    return MethodText(
        cls.description, cls.citation.strip(), cls.uses_teachers, cls.fixed_logit_loss
    )


def is_mtkdrl_architecture(architecture: str) -> bool:
    """True for the architectures `import mtkdrl` registers in timm (the `*_cifar` zoo)."""
    if not timm.is_model(architecture):
        return False
    return timm.models.model_entrypoint(architecture).__module__.startswith("mtkdrl.")


def body_sections(ctx: CardContext) -> dict[str, str]:
    """The body's sections, each under the name of its template placeholder."""
    return dict(
        intro=_intro(ctx),
        results=_results(ctx),
        usage=_usage(ctx),
        lineage=_lineage(ctx),
        teacher_weights=_teacher_weights(ctx),
        training=_training(ctx),
        recipe=published_recipe(ctx.run.recipe_text).rstrip(),
        software=_software(ctx),
        license=_license(ctx),
    )


def published_recipe(text: str) -> str:
    """A run's recipe.yaml as a card shows it: every local path cut to its name."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    public = public_recipe(raw)
    return text if public == raw else yaml.safe_dump(public, sort_keys=False)


def _percent(value: float | None) -> str:
    """An accuracy as the results table shows it: two decimals, a dash when unmeasured."""
    return "—" if value is None else f"{value:.2f}"


def _intro(ctx: CardContext) -> str:
    """The opening paragraph: what the model is, how it was trained and how to load it."""
    info = method_text(ctx.run.recipe.method.name)
    teachers = len(ctx.run.recipe.teachers)
    after = " after `import mtkdrl`" if is_mtkdrl_architecture(ctx.architecture) else ""
    source = f"from {teachers} teacher{'s' * (teachers != 1)} " if teachers else ""
    how = f"distilled {source}" if info.uses_teachers else "trained "
    return (
        f"A `{ctx.architecture}` image classifier ({ctx.num_params / 1e6:.2f} M parameters) for "
        f"{ctx.dataset}, {how}by mtkdrl "
        f"{ctx.run.summary.get('mtkdrl_version', 'unknown version')} with {info.description}. "
        f"It is a plain timm model: `timm.create_model('hf-hub:{ctx.repo_id}', pretrained=True)` "
        f"loads it{after}."
    )


def _budget(run: FinishedRun) -> str:
    """A run's training budget in epochs and steps."""
    return f"{run.summary.get('epochs', '?')} epochs, {run.summary.get('global_steps', '?')} steps"


def _results(ctx: CardContext) -> str:
    """The results table (student, teachers, reference runs) and where its figures come from."""
    rows = [
        "| model | role | top-1 (%) | top-5 (%) | training budget |",
        "| --- | --- | --- | --- | --- |",
        f"| **this model** (`{ctx.architecture}`, {ctx.which} weights) | student, "
        f"{ctx.run.recipe.method.name} | **{_percent(ctx.score.top1)}** | "
        f"{_percent(ctx.score.top5)} | {_budget(ctx.run)} |",
    ]
    for teacher in ctx.run.teachers:
        rows.append(
            f"| `{teacher['name']}` | teacher | {_percent(teacher.get('top1'))} | "
            f"{_percent(teacher.get('top5'))} | — |"
        )
    for ref in ctx.references:
        description = method_text(ref.run.recipe.method.name).description
        rows.append(
            f"| `{ref.run.recipe.student.name}` (run `{ref.run.run_dir.name}`) | reference "
            f"{ref.label}: {description} | {_percent(ref.score.top1)} | "
            f"{_percent(ref.score.top5)} | {_budget(ref.run)} |"
        )
    count = f" ({ctx.score.count} images)" if ctx.score.count else ""
    notes = [
        f"Accuracy on {eval_data_of(ctx.run.recipe.data)}{count}. The student's figures are "
        f"{ctx.score.source}."
    ]
    if ctx.run.teachers:
        notes.append("The teachers' were measured by the run on the same images (`teachers.json`).")
    if ctx.references:
        notes.append("References are other runs on the same evaluation data, at their best epoch.")
    elif method_text(ctx.run.recipe.method.name).uses_teachers:
        notes.append("No no-distillation or AVER reference run was given for this export.")
    return "\n".join(rows) + "\n\n" + " ".join(notes)


def _usage(ctx: CardContext) -> str:
    """How to install and run the model, importing mtkdrl first for its own architectures."""
    ours = is_mtkdrl_architecture(ctx.architecture)
    install = "pip install mtkdrl  # brings timm" if ours else "pip install timm"
    register = (
        "import mtkdrl  # registers the *_cifar architectures in timm: import it first\n"
        if ours
        else ""
    )
    return f"""```bash
{install}
```

```python
{register}import timm
import torch
from PIL import Image

model = timm.create_model("hf-hub:{ctx.repo_id}", pretrained=True).eval()
config = timm.data.resolve_data_config({{}}, model=model)  # the preprocessing it was trained with
transform = timm.data.create_transform(**config)
image = Image.open("image.png").convert("RGB")
with torch.no_grad():
    probabilities = model(transform(image).unsqueeze(0)).softmax(dim=-1)
names = model.pretrained_cfg.get("label_names")
```"""


def _lineage(ctx: CardContext) -> str:
    """The method and its loss, the student, the training data and the teachers' weights."""
    recipe = ctx.run.recipe
    method = recipe.method
    info = method_text(method.name)
    options = f", options `{json.dumps(method.options, sort_keys=True)}`" if method.options else ""
    student = provenance(recipe.student)
    loss = (
        f"CE + {method.alpha:g}·Σ w·{_logit_loss_text(method, info)} + "
        f"{method.beta:g}·Σ v·MSE(adapted features), w and v the teachers' weights"
        if info.uses_teachers
        else "cross-entropy only"
    )
    lines = [
        f"- **Method**: `{method.name}`, {info.description}; loss {loss}{options}.",
        f"- **Student**: `{recipe.student.name}`, {student.source}.",
        f"- **Training data**: {_train_data(ctx)}.",
    ]
    if not recipe.teachers:
        return "\n".join(lines)
    table = ["| teacher | weights | licence |", "| --- | --- | --- |"]
    for spec in recipe.teachers:
        origin = provenance(spec)
        table.append(f"| `{spec.name}` | {origin.source} | {origin.license} |")
    role = (
        "frozen during distillation"
        if info.uses_teachers
        else f"evaluated only: the `{method.name}` method does not distil from them"
    )
    return "\n".join(lines) + f"\n\nTeachers ({role}):\n\n" + "\n".join(table)


def _logit_loss_text(method: MethodConfig, info: MethodText) -> str:
    """ℓ as the card names it: `KL(T = 4)` for the default `kl`, else the recipe's logit loss by
    name with its settings, e.g. `dkd(T = 4, beta = 2)`; a method that always uses one loss
    (`fixed_logit_loss`) is named by it, its settings shown among the method's options."""
    spec = method.logit_loss
    if isinstance(spec, dict):
        name = str(spec.get("name", "kl"))
        settings = {key: value for key, value in spec.items() if key != "name"}
    else:
        name, settings = str(spec), {}
    if info.fixed_logit_loss:
        name, settings = info.fixed_logit_loss, {}
    temperature = method.temperature
    if isinstance(temperature, dict):  # a temperature policy: named by its `policy`
        shown = f"T from policy {temperature.get('policy')}"
    else:
        shown = f"T = {temperature:g}"
    parts = [shown, *(f"{k} = {v}" for k, v in sorted(settings.items()))]
    return f"{'KL' if name == 'kl' else name}({', '.join(parts)})"


def _train_data(ctx: CardContext) -> str:
    """The training data: its name, split or subset, and augmentation."""
    data = ctx.run.recipe.data
    where = describe_split(data, data.train_split, data.train_subset)
    return f"{ctx.dataset}, {where}, `{data.train_transform}` augmentation"


def _teacher_weights(ctx: CardContext) -> str:
    """The run's plot, when the export carries one, said to show only what it draws (a method
    with fixed weights, such as `avg`, has no weight panel)."""
    if not ctx.plot:
        return ""
    shows = [what for what, _ in panels_of(ctx.run.run_dir, ctx.run.epochs)]
    learned = any("weight" in what for what in shows)
    title = "Learned teacher weights" if learned else "Training curve"
    listed = ", ".join(shows[:-1]) + (" and " if len(shows) > 1 else "") + shows[-1]
    return (
        f"### {title}\n\n"
        f"![{title.lower()} during distillation]({PLOT_NAME})\n\n"
        f"Per epoch: {listed} (mean ± std over samples where it varies; `mtkdrl plot`)."
    )


def _precision(summary: dict) -> str:
    """The run's precision and, where the run recorded it, why (e.g. `auto` chose it)."""
    mode = summary.get("mixed_precision", "unknown")
    label = f"`{'fp32' if mode == 'no' else mode}`"
    reason = summary.get("precision_reason")
    return f"{label} ({reason})" if reason else label


def _training(ctx: CardContext) -> str:
    """The training settings, time, peak memory and hardware of the run."""
    summary, recipe = ctx.run.summary, ctx.run.recipe
    seconds = sum(r.get("epoch_seconds", 0.0) for r in ctx.run.epochs)
    processes = summary.get("num_processes", 1)
    lines = [
        f"- {_budget(ctx.run)}, batch {recipe.data.batch_size} per process × {processes} "
        f"process(es), gradient accumulation {recipe.train.grad_accum_steps}, "
        f"precision {_precision(summary)}, seed {recipe.seed}.",
        f"- Training time: {_duration(seconds)}, the sum of the epochs' times in "
        "`metrics.jsonl` (the training loop; evaluation and start-up excluded).",
    ]
    if "peak_memory_mb" in summary:
        lines.append(f"- Peak memory of the training process: {summary['peak_memory_mb']:.0f} MB.")
    recorded = summary.get("hardware")
    machine = "; ".join(f"{key}: {value}" for key, value in (recorded or machine_info()).items())
    if recorded:
        lines.append(f"- Hardware (recorded by the run): {machine}.")
    else:
        lines.append(
            "- Hardware: the run did not record the machine it trained on. This card was written "
            f"on {machine}; it is the training machine only if the export ran where the run did."
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """A duration in seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _software(ctx: CardContext) -> str:
    """The mtkdrl and timm versions that trained and exported the model, and its files."""
    trained = ctx.run.summary.get("mtkdrl_version", "unknown")
    return (
        f"Trained with mtkdrl {trained}, exported with mtkdrl {__version__} "
        f"(timm {timm.__version__}). The weights are a native timm state dict in "
        "`model.safetensors`; `config.json` holds the architecture, its build arguments and the "
        "preprocessing."
    )


def _license(ctx: CardContext) -> str:
    """The student's licence, and the teachers' licences it was distilled under."""
    licences: dict[str, list[str]] = {}
    for spec in ctx.run.recipe.teachers:
        licences.setdefault(provenance(spec).license, []).append(f"`{spec.name}`")
    text = f"The student's weights are released under `{ctx.license}`."
    if licences and method_text(ctx.run.recipe.method.name).uses_teachers:
        parts = "; ".join(f"{lic}: {', '.join(names)}" for lic, names in licences.items())
        text += (
            f" They were distilled from teachers whose weights carry these licences: {parts}. "
            "Check those terms, and the training data's, before use."
        )
    return text

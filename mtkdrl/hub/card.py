"""The model card (README.md) of an exported student: Hub front matter and a Markdown body.

The front matter comes from `huggingface_hub.ModelCardData` (so `model-index` has the shape the
Hub validates); `huggingface_hub.ModelCard.from_template` renders the Jinja template
`templates/model_card.md` with it (`{{ card_data }}`) and the card's sections (`{{ results }}`,
...), which `sections.py` writes.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import jinja2
import jinja2.meta
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors import MtkdrlError, first_line
from .context import CardContext
from .lineage import base_model
from .public import scrub_paths
from .sections import body_sections, method_text

TEMPLATE = files("mtkdrl.hub") / "templates" / "model_card.md"
TAGS = ["image-classification", "timm", "knowledge-distillation", "mtkdrl"]


def front_matter(ctx: CardContext) -> ModelCardData:
    """Hub metadata: library, licence, tags, data set, base model and the measured accuracy."""
    dataset_type = ctx.dataset_id or ctx.dataset
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_type,
            dataset_name=ctx.dataset,
            dataset_split=ctx.score.split,
            metric_type="accuracy",
            metric_value=round(value, 2),
            metric_name=name,
        )
        for name, value in (("Top-1 Accuracy", ctx.score.top1), ("Top-5 Accuracy", ctx.score.top5))
        if value is not None
    ]
    tags = list(TAGS)
    if len(ctx.run.recipe.teachers) > 1:
        tags.append("multi-teacher-distillation")
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=ctx.license,
        tags=tags,
        datasets=[ctx.dataset_id] if ctx.dataset_id else None,
        base_model=base_model(ctx.run.recipe.student),
        metrics=["accuracy"],
        model_name=ctx.repo_id.split("/", 1)[1],
        eval_results=results,
    )


def render_card(ctx: CardContext, template: Path | None = None) -> str:
    """The README.md text of an export, from the packaged template or the (Jinja) one given.

    The template sees `card_data` (the front matter's YAML) and the sections below; `citation`
    is the method's BibTeX, empty when it has none, and `method` its name. The front matter's own
    fields (`library_name`, `tags`, ...) are variables too, except `license`, which is the
    licence section.
    """
    if template is not None and not Path(template).is_file():
        raise MtkdrlError(f"--template: no such file: {template}")
    path = Path(template) if template else Path(str(TEMPLATE))
    card_data = front_matter(ctx)
    info = method_text(ctx.run.recipe.method.name)
    sections = dict(
        title=ctx.repo_id.split("/", 1)[1],
        **body_sections(ctx),
        method=ctx.run.recipe.method.name,
        citation=info.citation,
    )
    names = ", ".join("{{ " + key + " }}" for key in ["card_data", *sections])
    fields = set(card_data.to_dict()) | {k for k in vars(card_data) if not k.startswith("_")}
    try:
        parsed = jinja2.Environment().parse(path.read_text())
    except jinja2.TemplateSyntaxError as err:
        raise MtkdrlError(
            f"--template {template}: bad Jinja syntax at line {err.lineno}: {err.message}; "
            f"valid: {names}"
        ) from None
    unknown = sorted(
        jinja2.meta.find_undeclared_variables(parsed) - {"card_data", *sections, *fields}
    )
    if unknown:
        raise MtkdrlError(
            f"--template {template}: bad placeholder{'s' * (len(unknown) > 1)} "
            f"{', '.join(map(repr, unknown))}; valid: {names}"
        )
    try:
        card = ModelCard.from_template(card_data, template_path=str(path), **sections)
    except jinja2.TemplateError as err:
        raise MtkdrlError(f"--template {template}: cannot render: {first_line(err)}") from None
    except (yaml.YAMLError, ValueError) as err:
        raise MtkdrlError(
            f"--template {template}: its front matter is not valid card metadata: {first_line(err)}"
        ) from None
    text = re.sub(r"\n{3,}", "\n\n", str(card)).rstrip() + "\n"
    return scrub_paths(text, ctx.run.local_paths())

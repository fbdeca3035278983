"""What a model card says that is not in the run folder: the Hub repo, the measured score, the
architecture and the data set's display name (shared by the card's front matter and sections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data import local_source
from ..recipe import DataConfig
from .run import FinishedRun, Reference, Score, Which


@dataclass
class CardContext:
    """Everything a card says that is not in the run directory itself."""

    repo_id: str
    run: FinishedRun
    score: Score
    which: Which
    architecture: str
    num_params: int
    license: str = "apache-2.0"
    dataset_id: str | None = None
    dataset_name: str | None = None
    references: list[Reference] = field(default_factory=list)
    plot: bool = False

    @property
    def dataset(self) -> str:
        """The data set's display name in the card."""
        return dataset_display(self.run.recipe.data, self.dataset_id, self.dataset_name)


def dataset_display(data: DataConfig, dataset_id: str | None, dataset_name: str | None) -> str:
    """A data set's display name: the one given, else its Hub id, else its data folder's name."""
    if dataset_name or dataset_id:
        return dataset_name or dataset_id
    source = local_source(data, data.eval_split)
    if source is None:
        return data.name
    return (source.name if data.name == "imagefolder" else source.parent.name) or data.name

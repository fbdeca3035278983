"""mtkdrl: a timm-compatible model zoo and multi-teacher knowledge distillation toolkit (MTKD-RL).

Importing the package registers its CIFAR architectures (`*_cifar`) in timm's registry.
"""

from . import models  # noqa: F401  (registers the *_cifar architectures with timm)
from .errors import MtkdrlError
from .methods import METHODS, Method, register_method
from .pool import ModelOutputs, TeacherPool, create_model
from .recipe import Recipe
from .run import Run, build_run
from .task import DistillationTask
from .train import distill, train
from .version import __version__

__all__ = [
    "METHODS",
    "DistillationTask",
    "Method",
    "ModelOutputs",
    "MtkdrlError",
    "Recipe",
    "Run",
    "TeacherPool",
    "__version__",
    "build_run",
    "create_model",
    "distill",
    "register_method",
    "train",
]

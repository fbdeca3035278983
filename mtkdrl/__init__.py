"""mtkdrl: a timm-compatible model zoo and multi-teacher knowledge distillation toolkit (MTKD-RL).

Importing the package registers its CIFAR architectures (`*_cifar`) in timm's registry.
"""

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the *_cifar architectures with timm)
from .distiller import Distiller, distill
from .errors import MtkdrlError
from .methods import METHODS, WeightingStrategy, register_method
from .pool import ModelOutputs, TeacherPool, create_model
from .recipe import Recipe

__all__ = [
    "METHODS",
    "Distiller",
    "ModelOutputs",
    "MtkdrlError",
    "Recipe",
    "TeacherPool",
    "WeightingStrategy",
    "__version__",
    "create_model",
    "distill",
    "register_method",
]

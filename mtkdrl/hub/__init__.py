"""Publishing distilled students as timm Hub repositories: export, model card, push, zoo registry.

`export_run` turns a finished run into the files `timm.create_model('hf-hub:ORG/NAME')` loads,
`push_export` uploads them, and the registry (`mtkdrl zoo`) keeps track of what we publish.
"""

from .export import ExportConfig, ExportOptions, export_run
from .push import PushConfig, push_export
from .zoo import Registry
from .zoo_entries import StudentEntry, TeacherEntry

__all__ = [
    "ExportConfig",
    "ExportOptions",
    "PushConfig",
    "Registry",
    "StudentEntry",
    "TeacherEntry",
    "export_run",
    "push_export",
]

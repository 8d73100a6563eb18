"""Portable archives of generations: export, import, and voicebox interoperability."""

from .exporter import export_archive
from .format import ArchiveError, Limits
from .importer import ImportReport, import_archives, import_voicebox_dir

__all__ = [
    "ArchiveError",
    "ImportReport",
    "Limits",
    "export_archive",
    "import_archives",
    "import_voicebox_dir",
]

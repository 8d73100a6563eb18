"""The ``tts-history`` command: what a person does by hand with a library.

Exit codes scripts can trust: 0 success, 1 the command failed (not found, invalid input, the
index busy too long), 2 the command line itself is wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import pyarrow as pa

from ..archive import ArchiveError
from ..hooks.types import InvalidValueError
from ..index import INDEX_ENV, IndexBusyError, NotFoundError, QueryError
from ..library import LibraryError, open_library
from ..library.locations import LIBRARY_ENV, library_path
from ..plugin import InvalidAudioError

# errors a person can act on: shown as one line, never as a traceback
_EXPECTED = (
    ArchiveError,
    LibraryError,
    InvalidValueError,
    InvalidAudioError,
    QueryError,
    NotFoundError,
    IndexBusyError,
    LookupError,
)


def use_system_allocator() -> None:
    """Give Arrow's memory to the C library's allocator in our own processes, unless the
    environment chose one (``ARROW_DEFAULT_MEMORY_POOL``): Arrow's default, mimalloc, keeps
    what each thread freed (see README.md). A host application's allocator is its own choice."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


class Context:
    def __init__(self, library: Path | None, index: Path | None, auto_sync: bool) -> None:
        self.library_option = library
        self.index_path = index
        self.auto_sync = auto_sync
        self._history = None

    @property
    def library_root(self) -> Path:
        return library_path(self.library_option)

    def history(self, *, create: bool = False):
        """The History of the chosen library. The per-user default library is made on first
        use; a library named explicitly must exist unless the command creates one."""
        if self._history is None:
            from ..history import History

            explicit = self.library_option is not None  # given, or set in the environment
            open_library(self.library_root, create=create or not explicit)
            self._history = History(
                self.library_root, index_path=self.index_path, auto_sync=self.auto_sync
            )
        return self._history


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _EXPECTED as exc:
            message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
            raise click.ClickException(str(message)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tts-history")
@click.option(
    "--library",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=LIBRARY_ENV,
    help=f"The library folder [env {LIBRARY_ENV}; default: a per-user folder, see 'info'].",
)
@click.option(
    "--index",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=INDEX_ENV,
    help=f"The index file [env {INDEX_ENV}; default: per machine, outside the library].",
)
@click.option(
    "--no-sync",
    is_flag=True,
    help="Answer from the index as it is, without first bringing it in step with the folder.",
)
@click.option("-v", "--verbose", count=True, help="Log what happens (-vv for more).")
@click.pass_context
def main(ctx: click.Context, library: Path | None, index: Path | None, no_sync: bool, verbose: int):
    """Generation history for text-to-speech apps: a library folder of WAVs and Parquet
    sidecars, indexed by DuckDB."""
    use_system_allocator()
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(library, index, auto_sync=not no_sync)


from . import archive, commands, demo  # noqa: E402,F401  (registers the commands on main)

"""What ftflow wrote into a folder, so that it removes only that: a manifest per output folder.

A folder ftflow writes to (prepare's --out, a run folder) holds `.ftflow-outputs.json`: each file
ftflow wrote there, by path relative to the folder, with the sha256 of the bytes it wrote. A file
is claimed (recorded without a digest) before it is written and given its digest once complete,
so a run killed mid-write leaves a claim the next run may clear. Clearing removes a recorded file
only while its bytes are those ftflow wrote; a file ftflow did not write, or that changed since,
is never removed or overwritten: the run stops first (`refuse_foreign`).

Sources are checked against the folders a run writes to (`refuse_sources_inside`) before
anything is touched, so a run never reads what it is about to clear or overwrite.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from ftflow.errors import ConfigError, EnvironmentFailure
from ftflow.jsonl import file_sha256, write_whole

MANIFEST = ".ftflow-outputs.json"


class Manifest:
    """The files ftflow wrote in `folder`: relative path -> sha256 of their bytes (None while being written)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST

    def load(self) -> dict[str, str | None]:
        try:
            entries = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"{self.path}: unreadable manifest of ftflow's outputs ({exc}); "
                              "remove the folder's outputs by hand, then the manifest") from None
        if not isinstance(entries, dict):
            return {}
        # Only names inside the folder: an edited manifest must not reach other files.
        return {str(name): digest for name, digest in entries.items()
                if not Path(name).is_absolute() and ".." not in Path(name).parts}

    def save(self, entries: dict[str, str | None]) -> None:
        if not entries:  # nothing of ftflow's left: no manifest either
            self.path.unlink(missing_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with os_errors_named(self.path):
            write_whole(self.path, orjson.dumps(dict(sorted(entries.items())), option=orjson.OPT_INDENT_2))

    def owns(self, name: str, entries: dict[str, str | None]) -> bool:
        """Whether the file `name` is ftflow's: recorded, and its bytes unchanged (or claimed, being written)."""
        if name not in entries:
            return False
        digest = entries[name]
        return digest is None or file_sha256(self.folder / name) == digest

    def foreign(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that exist in the folder but are not ftflow's (see `owns`)."""
        entries = self.load()
        return [name for name in names if (self.folder / name).is_file() and not self.owns(name, entries)]

    def clear(self, names: Iterable[str] | None = None) -> list[str]:
        """Remove the recorded files (all, or those of `names`) whose bytes are ftflow's; return the
        ones left in place because they changed. Their entries are forgotten either way."""
        entries = self.load()
        wanted = None if names is None else set(names)
        kept = []
        for name in [n for n in entries if wanted is None or n in wanted]:
            path = self.folder / name
            if path.is_file():
                if self.owns(name, entries):
                    path.unlink()
                else:
                    kept.append(name)
            del entries[name]
        self.save(entries)
        return kept

    def claim(self, names: Iterable[str]) -> None:
        """Record that ftflow is about to write these files."""
        self.save({**self.load(), **dict.fromkeys(names)})

    def record(self, digests: dict[str, str]) -> None:
        """Record the sha256 of files ftflow finished writing."""
        self.save({**self.load(), **digests})

    def copied(self, names: dict[str, str]) -> None:
        """Record the digests of files (old name) under new names too: before renaming them."""
        entries = self.load()
        self.save({**entries, **{new: entries.get(old) for old, new in names.items()}})

    def forget(self, names: Iterable[str]) -> None:
        """Forget files that are gone (renamed)."""
        entries = self.load()
        self.save({name: digest for name, digest in entries.items() if name not in set(names)})


@contextmanager
def os_errors_named(path: Path) -> Iterator[None]:
    """An OSError in the body that names no file (a write to a full disk) as an EnvironmentFailure naming path."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise EnvironmentFailure.from_os_error(exc, where=path) from exc


@contextmanager
def writing(folder: Path, names: Iterable[str], digests: dict[str, str] | None = None) -> Iterator[None]:
    """Claim `names` in folder's manifest, run the body (which writes them), then record their digests.

    `digests` may hold digests the body computed while writing (filled in by the body), so big
    files are not read twice; the other files are hashed here. A body that fails (a full disk,
    a stopping signal) leaves none of the files: a file half written is no output.
    """
    names = list(names)
    manifest = Manifest(folder)
    manifest.claim(names)
    try:
        with os_errors_named(folder):
            yield
    except BaseException:
        for name in names:
            (folder / name).unlink(missing_ok=True)
        for parent in {(folder / name).parent for name in names} - {folder}:
            with contextlib.suppress(OSError):  # a sub-folder such as .staged, if nothing is left in it
                parent.rmdir()
        with contextlib.suppress(OSError, EnvironmentFailure):  # unforgotten, a claim is one the next run clears
            manifest.forget(names)
        raise
    known = digests or {}
    manifest.record({name: known.get(name) or file_sha256(folder / name)
                     for name in names if (folder / name).is_file()})


def refuse_foreign(folder: Path, names: Iterable[str], option: str) -> None:
    """ConfigError when a file ftflow would write in folder exists and is not ftflow's."""
    if foreign := Manifest(folder).foreign(names):
        first = folder / foreign[0]
        raise ConfigError(f"{option} {folder}: {first} was not written by ftflow, or changed since; "
                          f"ftflow will not overwrite it: move it away or choose another {option}")


def expand_sources(sources: Iterable[str]) -> list[str]:
    """The paths the sources name, globs expanded (what exists of them)."""
    paths: list[str] = []
    for source in sources:
        paths += sorted(glob.glob(source, recursive=True)) if glob.has_magic(source) else [source]
    return paths


def refuse_sources_inside(sources: Iterable[str], folders: dict[str, str | Path]) -> None:
    """ConfigError when a source resolves (links followed, globs expanded) to a path inside one of
    the folders a run writes to (option name -> folder), naming both."""
    resolved = {option: os.path.realpath(folder) for option, folder in folders.items()}
    for source in expand_sources(sources):
        real = os.path.realpath(source)
        for option, folder in resolved.items():
            if os.path.commonpath([real, folder]) == folder:
                raise ConfigError(f"source {source} is inside {option} {folders[option]}, where ftflow writes: "
                                  f"move the source out or choose another {option}")

"""The input/output/temp directories and ComfyUI's file naming rules (uploads, saves)."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

DIR_TYPES = ("input", "output", "temp")
_ANNOTATIONS = {" [output]": "output", " [input]": "input", " [temp]": "temp"}
# folder_paths.filter_files_content_types seeds its cache with these before asking mimetypes.
_KNOWN_CONTENT_TYPES = {"webp": "image", "fbx": "model"}


def content_type(name: str) -> str | None:
    """'audio', 'video', 'image', ... as ComfyUI guesses it from the extension."""
    extension = name.split(".")[-1]
    if extension in _KNOWN_CONTENT_TYPES:
        return _KNOWN_CONTENT_TYPES[extension]
    mime_type, _ = mimetypes.guess_type(name, strict=False)
    return mime_type.split("/")[0] if mime_type else None


@dataclass(frozen=True)
class Dirs:
    """The three directories ComfyUI reads and writes, under one root."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    def create(self) -> None:
        for name in DIR_TYPES:
            self.by_type(name).mkdir(parents=True, exist_ok=True)

    def by_type(self, dir_type: str) -> Path:
        if dir_type not in DIR_TYPES:
            raise KeyError(dir_type)
        return self.root / dir_type

    def split_annotation(self, name: str) -> tuple[str, Path | None]:
        """Strip a trailing ' [output]'-style annotation, returning the base directory it names."""
        for suffix, dir_type in _ANNOTATIONS.items():
            if name.endswith(suffix):
                return name[: -len(suffix)], self.by_type(dir_type)
        return name, None

    def annotated_path(self, name: str, default: str = "input") -> Path:
        bare, base = self.split_annotation(name)
        return (base or self.by_type(default)) / bare

    def input_files(self) -> list[str]:
        """Image files at the top level of input/, as LoadImage lists them."""
        try:
            entries = os.listdir(self.input)
        except FileNotFoundError:
            return []
        images = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
        names = [n for n in entries if (self.input / n).is_file() and n.lower().endswith(images)]
        return sorted(names)

    def input_files_of(self, *content_types: str) -> list[str]:
        """Files at the top level of input/ whose content type is one of these (LoadAudio, ...)."""
        try:
            entries = os.listdir(self.input)
        except FileNotFoundError:
            return []
        names = [n for n in entries if (self.input / n).is_file()]
        return sorted(n for n in names if content_type(n) in content_types)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(base: Path | str, candidate: Path | str) -> bool:
    base_abs = os.path.abspath(base)
    return os.path.commonpath((base_abs, os.path.abspath(candidate))) == base_abs


def store_upload(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """Write an upload like ComfyUI: same bytes reuse the name, others get 'stem (n).ext'."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    path = folder / filename
    if not overwrite:
        new_hash = hashlib.sha256(data).hexdigest()
        counter = 1
        while path.exists():
            if file_sha256(path) == new_hash:
                return filename
            filename = f"{stem} ({counter}){ext}"
            path = folder / filename
            counter += 1
    path.write_bytes(data)
    return filename


_COUNTER_RE = re.compile(r"^(\d+)")


def next_save_path(base: Path, prefix: str, width: int, height: int) -> tuple[Path, str, str, int]:
    """Resolve a SaveImage prefix to (folder, file stem, subfolder, first free counter)."""
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    subfolder = os.path.dirname(os.path.normpath(prefix))
    stem = os.path.basename(os.path.normpath(prefix))
    folder = base / subfolder
    if not inside(base, folder):
        # ComfyUI raises a bare Exception here, so execution_error says exception_type "Exception".
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base}"
            f"\n         commonpath: {os.path.commonpath((base, os.path.abspath(folder)))}"
        )
    highest = 0
    if folder.is_dir():
        for name in os.listdir(folder):
            if name[: len(stem) + 1] != stem + "_":
                continue
            match = _COUNTER_RE.match(name[len(stem) + 1 :])
            if match:
                highest = max(highest, int(match.group(1)))
    folder.mkdir(parents=True, exist_ok=True)
    return folder, stem, subfolder, highest + 1

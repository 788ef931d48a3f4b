"""What ``source=`` names, read as frames: one image file, a folder of images, or a video file.

Images are decoded as the datasets decode them (``torchvision.io.decode_image``, RGB), so a
prediction sees the same pixels as an evaluation of the same file. Videos are decoded with PyAV
(``pip install av``), frame by frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class SourceError(ValueError):
    """A source that cannot be read: missing, of an unknown kind, or undecodable."""


@dataclass(frozen=True)
class Frame:
    """One image to predict on: ``name`` (the output file stem), where it came from and its
    uint8 ``[3, H, W]`` pixels."""

    name: str
    file_name: str
    image: torch.Tensor


def read_frames(source: str | Path) -> Iterator[Frame]:
    """The frames of ``source``: an image, every image directly in a folder (sorted by name), or
    every frame of a video; raises :class:`SourceError` naming the file that cannot be read."""
    source = Path(source)
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise SourceError(f"source={source}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it")
        for path in images:
            yield read_image(path)
    elif not source.is_file():
        raise SourceError(f"source={source}: no such file or folder")
    elif source.suffix.lower() in IMAGE_EXTENSIONS:
        yield read_image(source)
    elif source.suffix.lower() in VIDEO_EXTENSIONS:
        yield from read_video(source)
    else:
        raise SourceError(
            f"source={source}: unknown extension {source.suffix!r}; images: "
            f"{', '.join(IMAGE_EXTENSIONS)}; videos: {', '.join(VIDEO_EXTENSIONS)}"
        )


def read_image(path: Path) -> Frame:
    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise SourceError(f"{path}: cannot decode this image: {error}") from None
    return Frame(path.stem, path.name, image)


def read_video(path: Path) -> Iterator[Frame]:
    """Every frame of the video at ``path``, named ``<stem>_<frame number from 0>``."""
    try:
        import av
    except ImportError:
        raise SourceError(f"{path}: reading videos needs PyAV: pip install av") from None
    try:
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                pixels = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                yield Frame(f"{path.stem}_{index:06d}", f"{path.name}#{index}", pixels)
    except av.FFmpegError as error:
        raise SourceError(f"{path}: cannot decode this video: {error}") from None

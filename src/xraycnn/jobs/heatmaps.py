"""Where `predict --explain` writes its heatmaps: a folder of their own, never the folder of a film, one file
per input path (films of the same name in different folders keep a heatmap each).

Free of TensorFlow: the CLI checks the paths before the heavy imports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from xraycnn import paths
from xraycnn.errors import DataLayoutError

SUFFIX = paths.DERIVED_SUFFIXES[0]


def check_images(images: Sequence[str | Path]) -> None:
    """Raise `DataLayoutError` naming the image paths that are missing or are folders."""
    missing = [str(p) for p in images if not Path(p).expanduser().exists()]
    folders = [str(p) for p in images if Path(p).expanduser().is_dir()]
    if missing:
        raise DataLayoutError(f"no such file: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if folders:
        raise DataLayoutError(
            f"{', '.join(folders[:5])}: a folder, not an image file; give the films (e.g. {folders[0]}/*.jpg)"
        )


def heatmap_dir(images: Sequence[str | Path], explain_dir: str | Path | None) -> Path:
    """The folder for the heatmaps of `images`: `explain_dir`, or a new ./heatmaps folder. Raises
    `DataLayoutError` when it is the folder of one of the films or inside it."""
    target = Path(explain_dir).expanduser().resolve() if explain_dir else paths.new_heatmap_dir()
    for image in images:
        film_folder = Path(image).expanduser().resolve().parent
        if target == film_folder or film_folder in target.parents:
            raise DataLayoutError(
                f"--explain-dir {target} is in the folder of the film {image}: heatmaps never go among the films; "
                "give another folder (or none, for a new ./heatmaps)"
            )
    return target


def heatmap_paths(images: Sequence[str | Path], explain_dir: Path) -> list[Path]:
    """One heatmap per image under `explain_dir`, laid out as the images are below the folder they share: `a/x.jpg`
    and `b/x.jpg` give `a/x.gradcam.png` and `b/x.gradcam.png`."""
    resolved = [Path(p).expanduser().resolve() for p in images]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path("/")
    return [explain_dir / p.parent.relative_to(common) / f"{p.stem}{SUFFIX}" for p in resolved]

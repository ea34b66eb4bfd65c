"""Image folders → :class:`FaceDataset`: ``train/<class>/*``, ``test/<class>/*`` or ``<root>/<class>/*``.

Layouts seen in the wild: Kaggle's image version of FER2013 (``train/angry/Training_3908.jpg``,
``test/angry/PrivateTest_…jpg``), course copies (``train/``, ``val/``, ``test/``), or just
``<root>/<class>/``. Rules:

- The class is the image's parent folder, mapped **by name** with
  :func:`fer.labels.class_index` (angry/anger, disgust, fear, happy/happiness, sad/sadness,
  surprise, neutral; any case), never by sort order. A folder FER2013 has no class for (e.g.
  ``contempt``, or a number) is refused, or excluded when asked (``unknown_classes="exclude"``).
- The split is the nearest enclosing folder named after one: :data:`SPLIT_FOLDERS` maps
  ``train``/``training`` → train, ``val``/``valid``/``validation``/``publictest`` → public_test,
  ``test``/``privatetest`` → private_test (the mapping of FER2013's image copies: val =
  PublicTest, test = PrivateTest). A file name starting with ``Training_``, ``PublicTest_`` or
  ``PrivateTest_`` overrides the folder. No split folder at all → train.
- Files are read in sorted path order; each is converted by :func:`fer.data.images.to_gray48`.
  Files with other extensions are skipped and counted in ``provenance["skipped_files"]``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

import numpy as np

from fer.data import FaceDataset
from fer.data.archives import Tree
from fer.data.images import IMAGE_EXTENSIONS, to_gray48
from fer.errors import DataFormatError
from fer.labels import CLASS_NAMES, class_index

SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "public_test", "valid": "public_test", "validation": "public_test",
    "publictest": "public_test", "public_test": "public_test",
    "test": "private_test", "privatetest": "private_test", "private_test": "private_test",
}
FILE_PREFIXES = {"training_": "train", "publictest_": "public_test", "privatetest_": "private_test"}
LAYOUT_HINT = "expected <folder>/<class>/<image> or <folder>/train|val|test/<class>/<image>, e.g. train/angry/0001.png"


def image_files(tree: Tree) -> list[str]:
    """The members of ``tree`` with an image extension (``.png``, ``.jpg``, …), sorted."""
    return [f for f in tree.files if f.lower().endswith(IMAGE_EXTENSIONS)]


def read_image_folder(tree: Tree, unknown_classes: str = "refuse") -> FaceDataset:
    """Read every image of an image-folder tree into a :class:`FaceDataset` (no caching).

    Args:
        tree: a folder or archive (:func:`fer.data.archives.open_tree`).
        unknown_classes: ``"refuse"`` or ``"exclude"`` class folders FER2013 has no class for.

    Returns: a dataset with ``files`` (the relative paths); ``provenance`` has ``class_folders``
    (folder name → class index), ``excluded_classes`` (name → images) and ``skipped_files``.
    Raises: DataFormatError naming the folder when it holds no images, an image outside any
    class folder, unknown class folders (when refused), or naming the image when it cannot be read.
    """
    files = image_files(tree)
    skipped = len(tree.files) - len(files)
    if not files:
        raise DataFormatError(f"{tree.name}: no images found (looked for {', '.join(IMAGE_EXTENSIONS[:5])} … "
                              f"in class folders, and for a FER2013 CSV); {LAYOUT_HINT}")
    classes: list[str] = []
    for f in files:
        parts = PurePosixPath(f).parts
        if len(parts) < 2 or parts[-2].lower() in SPLIT_FOLDERS:
            raise DataFormatError(f"{tree.display(f)}: the image is not inside a class folder; {LAYOUT_HINT}")
        classes.append(parts[-2])
    mapping = {c: class_index(c) for c in sorted(set(classes))}
    unknown = Counter(c for c in classes if mapping[c] is None)
    if unknown and unknown_classes != "exclude":
        listed = ", ".join(f"{c!r} ({k} images)" for c, k in sorted(unknown.items()))
        raise DataFormatError(
            f"{tree.name}: class folder(s) {listed} are not FER2013 classes ({', '.join(CLASS_NAMES)}; "
            f"folders are matched by name, any case, numbers are not accepted because datasets order "
            f"them differently); rename them, or exclude them: load_dataset(..., unknown_classes='exclude'), "
            f"python -m fer … --exclude-unknown-classes")
    keep = [i for i, c in enumerate(classes) if mapping[c] is not None]
    n = len(keep)
    images = np.empty((n, 48, 48), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    splits = np.empty(n, dtype="<U12")
    kept_files = []
    for row, i in enumerate(keep):
        f = files[i]
        with tree.open(f) as fh:
            images[row] = to_gray48(fh, tree.display(f))
        labels[row] = mapping[classes[i]]
        splits[row] = split_of(tree.root_name, f)
        kept_files.append(f)
    return FaceDataset(images, labels, splits, dict(
        format="image folders", rows=n, synthetic=False,
        class_folders={c: i for c, i in mapping.items() if i is not None},
        excluded_classes=dict(sorted(unknown.items())), skipped_files=skipped, junk_files=tree.junk),
        files=np.array(kept_files, dtype=str))


def split_of(root_name: str, rel: str) -> str:
    """The split of an image at ``rel`` (see the module rules); ``root_name`` is the folder's name."""
    parts = PurePosixPath(rel).parts
    lower = parts[-1].lower()
    for prefix, split in FILE_PREFIXES.items():
        if lower.startswith(prefix):
            return split
    for folder in reversed((root_name, *parts[:-2])):
        split = SPLIT_FOLDERS.get(folder.lower())
        if split:
            return split
    return "train"

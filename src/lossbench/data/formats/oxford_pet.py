"""``oxford_pet``: the Oxford-IIIT Pet layout, for segmentation or breed classification.

``root/images/<id>.jpg``, ``root/annotations/trimaps/<id>.png`` (1 = pet,
2 = background, 3 = border) and ``root/annotations/trainval.txt`` /
``test.txt`` (lines ``<id> <class 1..37> <species> <breed>``). Segmentation
gives 3 classes (background, pet, border) or, with ``data.pet_classes: 2``,
background / pet with the border ignored (255). Classification gives the 37
breeds. ``trainval`` is split into train / val (stratified by seed); ``test``
becomes the test split.
"""

from __future__ import annotations

from pathlib import Path

from lossbench.config import DataConfig
from lossbench.contract import IGNORE_INDEX
from lossbench.data.decode import MaskSpec
from lossbench.data.files import Decoder, FileItem, open_files
from lossbench.data.formats.common import channels_of, require_root
from lossbench.data.registry import Splits, register_source
from lossbench.errors import UserError

TRIMAP_3 = ((1, 1), (2, 0), (3, 2))
TRIMAP_2 = ((1, 1), (2, 0), (3, IGNORE_INDEX))


def _read_list(path: Path) -> list[tuple[str, int, str]]:
    """``(image id, class 0..36, where)`` per line of an annotation list."""
    if not path.is_file():
        raise UserError(f"{path}: missing; expected the Oxford-IIIT Pet annotations/ folder under data.root")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise UserError(f"{path} line {n}: expected '<image id> <class 1..37> ...', got {line.strip()!r}")
        out.append((parts[0], int(parts[1]) - 1, f"{path} line {n}"))
    if not out:
        raise UserError(f"{path}: no entries; restore the Oxford-IIIT Pet annotation list")
    return out


@register_source("oxford_pet", tasks=("segmentation", "classification"), shares_cache=True)
def oxford_pet_source(cfg: DataConfig, task: str, seed: int) -> Splits:
    """Oxford-IIIT Pet: trimap segmentation (3 classes, or pet/background) or 37-breed classification."""
    root = require_root(cfg)
    lists = {"train": _read_list(root / "annotations" / "trainval.txt")}
    if (root / "annotations" / "test.txt").is_file():
        lists["test"] = _read_list(root / "annotations" / "test.txt")
    seg = task == "segmentation"
    spec = MaskSpec("index", TRIMAP_3 if cfg.pet_classes == 3 else TRIMAP_2, cfg.pet_classes) if seg else None
    decoder = Decoder(cfg.image_size, channels_of(cfg), spec)
    breeds: dict[int, str] = {}
    sets = {}
    for split, entries in lists.items():
        items = []
        for ident, label, _ in entries:
            breeds.setdefault(label, ident.rsplit("_", 1)[0])
            image = root / "images" / f"{ident}.jpg"
            if seg:
                trimap = root / "annotations" / "trimaps" / f"{ident}.png"
                items.append(FileItem(image, ident, masks=(trimap if trimap.is_file() else None,)))
            else:
                items.append(FileItem(image, ident, label=label))
        sets[split] = open_files(items, decoder, cfg, str(root / "images"), f"oxford-pet-{split}")
    if seg:
        names = ["background", "pet", "border"][: cfg.pet_classes]
    else:
        missing = [k + 1 for k in range(max(breeds)) if k not in breeds]
        if missing:
            raise UserError(f"{root / 'annotations'}: the lists name classes up to {max(breeds) + 1} but none of "
                            f"{', '.join(map(str, missing))}; restore the complete trainval.txt / test.txt")
        names = [breeds[k] for k in range(max(breeds) + 1)]
    return Splits(sets["train"], None, names, test=sets.get("test"))

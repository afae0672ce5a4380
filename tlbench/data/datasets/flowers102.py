"""Oxford Flowers 102: `jpg/image_NNNNN.jpg`, labels in `imagelabels.mat`, the official split in `setid.mat`.

Matches `torchvision.datasets.Flowers102` (same files, same 0-based labels, same class names): the
image IDs of a split are `setid.mat` `trnid` / `valid` / `tstid`, the label of image ID i is
`imagelabels.mat` `labels[i - 1] - 1`. The archive has no class names; the 102 names are the
list torchvision, TFDS and TLlib share, indexed by label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import as_array, load_mat, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"

LAYOUT = """ROOT/                       (or ROOT/flowers-102/, as torchvision places it)
  jpg/image_00001.jpg ... jpg/image_08189.jpg     (from 102flowers.tgz)
  imagelabels.mat                                 (key "labels": 8,189 labels, 1..102)
  setid.mat                                       (keys "trnid", "valid", "tstid": 1-based image IDs)"""

INFO = DatasetInfo(
    title="Oxford Flowers 102",
    num_classes=102,
    metric="mean_per_class",
    layout=LAYOUT,
    split_sizes={"train": 1020, "val": 1020, "test": 6149},
    resources=(
        Resource(_URL + "102flowers.tgz", "102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa"),
        Resource(_URL + "imagelabels.mat", "imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d", extract=False),
        Resource(_URL + "setid.mat", "setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c", extract=False),
    ),
    checksums={
        "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
        "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
    },
    torchvision="Flowers102",
)

# setid.mat key of each split (torchvision's _splits_map)
SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}

# Label order (0..101), as in torchvision.datasets.Flowers102.classes, TFDS and TLlib.
CLASSES = (
    "pink primrose",
    "hard-leaved pocket orchid",
    "canterbury bells",
    "sweet pea",
    "english marigold",
    "tiger lily",
    "moon orchid",
    "bird of paradise",
    "monkshood",
    "globe thistle",
    "snapdragon",
    "colt's foot",
    "king protea",
    "spear thistle",
    "yellow iris",
    "globe-flower",
    "purple coneflower",
    "peruvian lily",
    "balloon flower",
    "giant white arum lily",
    "fire lily",
    "pincushion flower",
    "fritillary",
    "red ginger",
    "grape hyacinth",
    "corn poppy",
    "prince of wales feathers",
    "stemless gentian",
    "artichoke",
    "sweet william",
    "carnation",
    "garden phlox",
    "love in the mist",
    "mexican aster",
    "alpine sea holly",
    "ruby-lipped cattleya",
    "cape flower",
    "great masterwort",
    "siam tulip",
    "lenten rose",
    "barbeton daisy",
    "daffodil",
    "sword lily",
    "poinsettia",
    "bolero deep blue",
    "wallflower",
    "marigold",
    "buttercup",
    "oxeye daisy",
    "common dandelion",
    "petunia",
    "wild pansy",
    "primula",
    "sunflower",
    "pelargonium",
    "bishop of llandaff",
    "gaura",
    "geranium",
    "orange dahlia",
    "pink-yellow dahlia?",
    "cautleya spicata",
    "japanese anemone",
    "black-eyed susan",
    "silverbush",
    "californian poppy",
    "osteospermum",
    "spring crocus",
    "bearded iris",
    "windflower",
    "tree poppy",
    "gazania",
    "azalea",
    "water lily",
    "rose",
    "thorn apple",
    "morning glory",
    "passion flower",
    "lotus",
    "toad lily",
    "anthurium",
    "frangipani",
    "clematis",
    "hibiscus",
    "columbine",
    "desert-rose",
    "tree mallow",
    "magnolia",
    "cyclamen",
    "watercress",
    "canna lily",
    "hippeastrum",
    "bee balm",
    "ball moss",
    "foxglove",
    "bougainvillea",
    "camellia",
    "mallow",
    "mexican petunia",
    "bromelia",
    "blanket flower",
    "trumpet creeper",
    "blackberry lily",
)


def image_relpath(image_id: int) -> str:
    return f"jpg/image_{image_id:05d}.jpg"


def _int_field(mat: dict, key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise DatasetError(f"{path} has no field {key!r} (it has {sorted(k for k in mat if not k.startswith('__'))})")
    values = as_array(mat[key]).ravel()
    if values.size and not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{path}: field {key!r} is not numeric")
    return values.astype(np.int64)


@register_dataset("flowers102", INFO)
def flowers102(root: str | None = None, trainval: bool = False) -> DatasetSplits:
    """Official splits: train (trnid), val (valid), test (tstid). `trainval=True` trains on
    trnid + valid (2,040 images, the Kornblith et al. protocol) and has no val split."""
    base = resolve_root("flowers102", root, "setid.mat", subdirs=("flowers-102",))
    require_paths("flowers102", base, ["jpg", "imagelabels.mat", "setid.mat"])

    labels_path, setid_path = base / "imagelabels.mat", base / "setid.mat"
    labels_1based = _int_field(load_mat(labels_path), "labels", labels_path)
    if labels_1based.size == 0 or labels_1based.min() < 1 or labels_1based.max() > len(CLASSES):
        raise DatasetError(f"{labels_path}: labels must lie in 1..{len(CLASSES)}")
    label_of = labels_1based - 1  # label of image ID i is label_of[i - 1]; 0-based from here on

    set_ids = load_mat(setid_path)
    ids = {split: _int_field(set_ids, key, setid_path) for split, key in SPLIT_KEYS.items()}
    for split, values in ids.items():
        bad = values[(values < 1) | (values > len(label_of))]
        if bad.size:
            raise DatasetError(
                f"{setid_path}: {SPLIT_KEYS[split]} has image IDs outside 1..{len(label_of)} "
                f"(the number of labels in {labels_path.name}): {bad[:5].tolist()}"
            )
    if trainval:
        ids = {"train": np.concatenate([ids["train"], ids["val"]]), "test": ids["test"]}

    splits = {}
    for split, values in ids.items():
        relpaths = [image_relpath(int(i)) for i in values]
        splits[split] = FileSamples(base, relpaths, label_of[values - 1])
    return DatasetSplits(name="flowers102", classes=list(CLASSES), splits=splits, root=str(base))

"""One module per dataset family; each registers its datasets with `register_dataset` when imported.

The list is explicit: a new dataset module is added here, and nothing is found by scanning the folder.
"""

from tlbench.data.datasets import (
    caltech101,
    cifar,
    cub200,
    digits,
    dtd,
    fgvc_aircraft,
    flowers102,
    food101,
    imagefolder,
    knots,
    mit67,
    pets,
    stanford_cars,
    stanford_dogs,
    sun397,
)

__all__ = [
    "caltech101",
    "cifar",
    "cub200",
    "digits",
    "dtd",
    "fgvc_aircraft",
    "flowers102",
    "food101",
    "imagefolder",
    "knots",
    "mit67",
    "pets",
    "stanford_cars",
    "stanford_dogs",
    "sun397",
]

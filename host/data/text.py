"""`text`: real English sentences from Debian's `fortunes` package, tokenized for the zoo's MiniLM.

fortune-mod's data files (/usr/share/games/fortunes, the plain-prose categories below; ascii-art,
definitions and song lyrics left out) are split on their `%` lines, whitespace-normalised, kept when
4-60 words long and de-duplicated. Split, deterministic and independent of file order or count:
sha256 of the text, first byte even -> `text:calib`, odd -> `text:check` (disjoint by construction).
Unlabelled: the metrics are embedding cosine and nearest-neighbour agreement with the FP32 model.

The Dataset holds both model inputs: `inputs` = {"input_ids", "attention_mask"} (int64 [N, 128]), with
`x` = input_ids so single-input pipelines still work (MiniLM derives the mask from the ids when it is
not given); `meta["texts"]` keeps the sentences.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

from host.data.datasets import Dataset, DatasetError, Preprocess

FORTUNES_DIR = Path("/usr/share/games/fortunes")
CATEGORIES = ("fortunes", "wisdom", "science", "computers", "literature", "people", "education", "work",
              "humorists", "platitudes")
MIN_WORDS, MAX_WORDS = 4, 60
# token ids are not pixels: nothing is scaled; recorded in manifests as what the data is
TOKENS = Preprocess(scale=1.0, layout="NT", dtype="int64", channels=1)


def sentences(root: Path = FORTUNES_DIR) -> list[str]:
    """Every usable fortune, in file order (categories as listed), de-duplicated."""
    files = [root / c for c in CATEGORIES if (root / c).is_file()]
    if not files:
        raise DatasetError(f"no fortune files under {root}: apt-get install fortunes")
    seen: set[str] = set()
    out = []
    for f in files:
        for entry in re.split(r"^%$", f.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            if "\t" in entry or "  " in entry.strip("\n").replace("\n", " ").strip():
                continue  # tables, indented verse, ASCII layouts: not sentences
            s = " ".join(_unstrike(entry).split())
            if MIN_WORDS <= len(s.split()) <= MAX_WORDS and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _unstrike(s: str) -> str:
    """Typewriter overstrikes (`_ BS c` underlines, `c BS c` bold; `___ BS BS BS abc`) -> plain text."""
    while "\x08" in s:
        t = re.sub(r"[^\x08]\x08", "", s)
        s = t if t != s else s.replace("\x08", "")
    return s


def split_of(text: str) -> str:
    return "calib" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 else "check"


def load(split: str = "calib", limit: Optional[int] = None, root: Path = FORTUNES_DIR) -> Dataset:
    split = {"train": "calib", "test": "check"}.get(split, split)
    if split not in ("calib", "check"):
        raise DatasetError(f"text has the splits calib and check, not {split!r}")
    texts = [s for s in sentences(root) if split_of(s) == split]
    if limit:
        texts = texts[:limit]
    from host.zoo.minilm import tokenize  # the corpus is tokenized for the one text model, MiniLM

    ids, mask = tokenize(texts)
    return Dataset(f"text:{split}", ids, None, preprocess=TOKENS, task="embedding",
                   meta={"texts": texts}, inputs={"input_ids": ids, "attention_mask": mask})

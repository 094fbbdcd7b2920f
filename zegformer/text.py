"""Class vocabularies, prompt templates and cached CLIP text embeddings.

A class name may hold synonyms, written `tv | television` by users; names from the official
class lists use ", " for the same purpose (ADE20K: "pot, flowerpot"). Each synonym is put into
every template, all prompts are encoded, L2-normalised, averaged and normalised again, which is
exactly the official `zeroshot_classifier`.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import resources
from .errors import VocabularyError

if TYPE_CHECKING:  # torch loads with the first TextEmbedder: parsing names needs none of it
    import torch

    from .text_cache import TextDiskCache

MAX_CLASSES = 1000  # per request (ADE20K-Full has 847)
MAX_NAME_LENGTH = 160  # characters per class name, synonyms included (official ADE names reach 113)
MAX_VOCABULARY_TEXT = 50_000  # characters of all names together, checked before any parsing
#                               (the ADE20K-Full preset, 847 classes with synonyms: 13,417)
TEMPLATES_FILE = resources.prompt_templates_file()
CLIP_TEMPLATES = "imagenet_select_clip"  # the official template set for CLIP crop classification


@lru_cache(maxsize=None)
def prompt_templates(name: str) -> tuple[str, ...]:
    """The official template list `name`: imagenet_select, imagenet, single, imagenet_select_clip."""
    with open(TEMPLATES_FILE, encoding="utf-8") as f:
        table = json.load(f)
    if name not in table:
        raise VocabularyError(f"unknown prompt ensemble {name!r}; known: {sorted(table)}")
    return tuple(table[name])


def _clean(name: str) -> str:
    # Whitespace (tabs, the \r of Windows line ends) becomes one space before the control check.
    name = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", name))
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in name):
        raise VocabularyError(f"class name {name!r} contains control or invisible characters")
    return name.strip()


def _check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise VocabularyError(
            f"class name too long ({len(name)} characters, at most {MAX_NAME_LENGTH}): {name[:40]!r}...")
    for syn in synonyms(name):
        if not any(ch.isalnum() for ch in syn):
            raise VocabularyError(f"class name {syn!r} has no letters or digits")
    return name


def parse_classes(classes: str | Sequence[str], max_classes: int = MAX_CLASSES) -> list[str]:
    """Validate and normalise a vocabulary.

    Args:
        classes: one string with classes separated by commas or new lines (`"cat, tv | television"`)
            or a list of names (list items are not split on commas, so official names such as
            "pot, flowerpot" stay one class).
        max_classes: the most classes accepted.

    Returns:
        The class names, whitespace-normalised (NFKC), synonyms written "a | b".

    Raises:
        VocabularyError: more than MAX_VOCABULARY_TEXT characters (refused before parsing), empty
        list, too many classes, duplicates (case-insensitive), a name that is too long, has
        control characters or no letters.
    """
    if isinstance(classes, str):
        length = len(classes)
        items = re.split(r"[,\n;]", classes) if length <= MAX_VOCABULARY_TEXT else []
    else:
        classes = list(classes)
        if 2 * len(classes) > MAX_VOCABULARY_TEXT:  # each name counts with a separator
            raise VocabularyError(f"too many classes ({len(classes)}); at most {max_classes}")
        items = [str(c) for c in classes]
        length = sum(len(c) + 2 for c in items)
    if length > MAX_VOCABULARY_TEXT:
        raise VocabularyError(f"the class list is too long ({length} characters; at most "
                              f"{MAX_VOCABULARY_TEXT})")
    names = []
    for item in items:
        item = _clean(item)
        if not item:
            continue
        parts = [p.strip() for p in item.split("|")]
        if any(not p for p in parts):
            raise VocabularyError(f"empty synonym in {item!r}: write synonyms as 'tv | television'")
        names.append(_check_name(" | ".join(parts)))
        if len(names) > max_classes:
            count = sum(1 for i in items if i.strip())
            raise VocabularyError(f"too many classes ({count}); at most {max_classes}")
    if not names:
        raise VocabularyError("no class names given: type at least one, e.g. 'cat, dog, grass'")
    seen: dict[str, str] = {}
    for n in names:
        key = n.casefold()
        if key in seen:
            raise VocabularyError(f"class {n!r} is listed twice")
        seen[key] = n
    return names


def synonyms(name: str) -> list[str]:
    """"tv | television" -> ["tv", "television"]; official "pot, flowerpot" -> ["pot", "flowerpot"]."""
    parts = [p.strip() for p in re.split(r"\s*\|\s*|, ", name)]
    return [p for p in parts if p]


def is_seen(name: str, training_vocabulary: frozenset[str]) -> bool:
    """A class is seen when its name, its official ", "-joined form, or one of its synonyms appears
    exactly in the checkpoint's training vocabulary; otherwise it is novel."""
    syns = synonyms(name)
    return (name in training_vocabulary or ", ".join(syns) in training_vocabulary
            or any(s in training_vocabulary for s in syns))


@lru_cache(maxsize=None)
def _templates_digest(name: str) -> str:
    return hashlib.sha256(json.dumps(prompt_templates(name)).encode("utf-8")).hexdigest()[:16]


class TextEmbedder:
    """Class name -> L2-normalised text embedding, cached per (model, template set, class name).

    Two levels: an in-memory LRU, and (when `weights_digest` is given) files on disk that outlive
    the process (`zegformer.text_cache`), keyed by the digest of the text tower's weights, the
    precision, the template set and the class name.

    Args:
        encode_text: tokens N x 77 -> N x D features (CLIP's text tower).
        tokenizer: list[str] -> N x 77 tokens.
        model_id: distinguishes CLIP weights in the in-memory cache key.
        max_entries: in-memory cache bound (least recently used entries are evicted).
        batch_size: prompts per text-tower call.
        weights_digest: digest of the weights behind `encode_text`, or a function computing it
            (called once, on the first lookup), e.g. `text_cache.text_tower_digest(clip)`. Without
            it nothing is read from or written to disk.
        disk_cache: a `TextDiskCache`, None for the default folder, False for none.
    """

    def __init__(self, encode_text: Callable[[torch.Tensor], torch.Tensor],
                 tokenizer: Callable[[list[str]], torch.Tensor], model_id: str,
                 device: torch.device | str = "cpu", max_entries: int = 8192,
                 batch_size: int = 256, *,
                 weights_digest: str | Callable[[], str] | None = None,
                 disk_cache: TextDiskCache | bool | None = None) -> None:
        import torch

        from .text_cache import TextDiskCache

        self.encode_text = encode_text
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = torch.device(device)
        self.max_entries = max_entries
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0  # names found on disk
        self.encoded = 0  # names run through the text tower
        self._digest_source = weights_digest
        self._digest: str | None = None
        self.disk: TextDiskCache | None = None
        if weights_digest is not None and disk_cache is not False:
            self.disk = disk_cache if isinstance(disk_cache, TextDiskCache) else TextDiskCache()

    def __call__(self, class_names: Sequence[str], templates: str) -> torch.Tensor:
        """Embeddings of `class_names` with the template set `templates` -> K x D float32 (CPU)."""
        import torch

        with torch.no_grad():
            return self._embed(class_names, templates)

    def _embed(self, class_names: Sequence[str], templates: str) -> torch.Tensor:
        import torch

        keys = [(self.model_id, templates, n) for n in class_names]
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            names = [k[2] for k in missing]
            found = self._read_disk(names, templates)
            self.disk_hits += len(found)
            rest = [n for n in names if n not in found]
            computed = self._compute(rest, templates) if rest else {}
            self._write_disk(computed, templates)
            for name, e in {**found, **computed}.items():
                self._cache[(self.model_id, templates, name)] = e
        for k in keys:
            self._cache.move_to_end(k)
        out = torch.stack([self._cache[k] for k in keys])
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out

    def _disk_key(self, templates: str, name: str) -> tuple[str, ...]:
        if self._digest is None:
            source = self._digest_source
            self._digest = source() if callable(source) else str(source)
        precision = "cuda-autocast-fp16" if self.device.type == "cuda" else "native"
        return (self._digest, precision, templates, _templates_digest(templates), name)

    def _read_disk(self, names: list[str], templates: str) -> dict[str, torch.Tensor]:
        if self.disk is None or not self.disk.enabled:
            return {}
        import torch

        found = {}
        for name in names:
            vec = self.disk.get(self._disk_key(templates, name))
            if vec is not None:
                found[name] = torch.from_numpy(vec.copy())
        dims = {v.shape[0] for v in found.values()}
        return found if len(dims) <= 1 else {}  # mixed sizes cannot come from one tower

    def _write_disk(self, computed: dict[str, torch.Tensor], templates: str) -> None:
        if self.disk is None or not self.disk.enabled or not computed:
            return
        self.disk.put_many((self._disk_key(templates, n), e.numpy()) for n, e in computed.items())

    def _compute(self, names: list[str], templates: str) -> dict[str, torch.Tensor]:
        """Run the text tower on every prompt of `names` -> {name: D float32 CPU embedding}."""
        import torch

        self.encoded += len(names)
        tmpl = prompt_templates(templates)
        prompts, owner = [], []
        for i, name in enumerate(names):
            for t in tmpl:
                for syn in synonyms(name):
                    prompts.append(t.format(syn))
                    owner.append(i)
        feats = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(prompts[start:start + self.batch_size]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16,
                                enabled=self.device.type == "cuda"):
                f = self.encode_text(tokens).float()
            feats.append(f / f.norm(dim=-1, keepdim=True))
        allf = torch.cat(feats)  # P x D
        owner_t = torch.tensor(owner, device=allf.device)
        out = {}
        for i, name in enumerate(names):
            e = allf[owner_t == i].mean(dim=0)
            out[name] = (e / e.norm()).cpu()
        return out

"""Vocabularies, synonyms, the seen/novel rule, prompt templates and the text-embedding cache."""
from __future__ import annotations

import zlib

import pytest
import torch

from zegformer import VocabularyError, parse_classes
from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH, TextEmbedder, is_seen, \
    prompt_templates, synonyms
from zegformer.data.vocabularies import class_list_for_official_path

# ---------------------------------------------------------------- parse_classes


@pytest.mark.parametrize("text, expected", [
    ("cat, dog, sky", ["cat", "dog", "sky"]),
    ("cat\ndog\n\nsky\n", ["cat", "dog", "sky"]),
    ("cat;dog , sky", ["cat", "dog", "sky"]),
    ("cat\r\ndog\r\n", ["cat", "dog"]),  # Windows line ends
    ("cat,\tdog", ["cat", "dog"]),  # a tab is whitespace, not a control character
    ("tv | television, cat", ["tv | television", "cat"]),
    ("tv|television", ["tv | television"]),
    ("  tv   |\ttelevision  ", ["tv | television"]),
    ("  big   red\tcar ", ["big red car"]),
    ("\uff43\uff41\uff54, \ufb01sh", ["cat", "fish"]),  # NFKC: full-width letters, "fi" ligature
    ("big\u00a0\u00a0dog", ["big dog"]),  # no-break spaces
    ("R2-D2, 3d printer", ["R2-D2", "3d printer"]),
    ("caf\u00e9, cafe\u0301", None),  # composed and decomposed e-acute are the same name
])
def test_parse_classes_splits_and_normalises(text, expected):
    if expected is None:
        with pytest.raises(VocabularyError, match="listed twice"):
            parse_classes(text)
    else:
        assert parse_classes(text) == expected


def test_list_input_is_not_split_on_commas():
    assert parse_classes(["pot, flowerpot", " cat ", "tv|television"]) == \
        ["pot, flowerpot", "cat", "tv | television"]


@pytest.mark.parametrize("bad", ["", "   ", ", , ,", "\n\n", ";", [], ["", "  "]])
def test_empty_vocabulary(bad):
    with pytest.raises(VocabularyError, match="no class names"):
        parse_classes(bad)


@pytest.mark.parametrize("bad", ["cat, Cat", "cat, dog, CAT ", ["Sky", "sky"],
                                 "tv | television, TV | Television", "Stra\u00dfe, STRASSE"])
def test_duplicates_are_case_insensitive(bad):
    with pytest.raises(VocabularyError, match="listed twice"):
        parse_classes(bad)


def test_class_count_limit():
    names = [f"class {i}" for i in range(MAX_CLASSES)]
    assert len(parse_classes(names)) == MAX_CLASSES == 1000
    with pytest.raises(VocabularyError, match="too many classes \\(1001\\)"):
        parse_classes(names + ["one more"])
    with pytest.raises(VocabularyError, match="at most 2"):
        parse_classes("a, b, c", max_classes=2)


def test_name_length_limit():
    n = MAX_NAME_LENGTH
    assert parse_classes("x" * n) == ["x" * n]
    with pytest.raises(VocabularyError, match=f"too long \\({n + 1} characters, at most {n}\\)"):
        parse_classes("x" * (n + 1))


def test_every_official_class_name_is_accepted():
    for path in ("datasets/ADE20K_2021_17_01/ADE20K_847_pure_class.json",
                 "datasets/coco/coco_stuff/split/all_classnames.json",
                 "datasets/VOCZERO/all_classnames.json"):
        names = list(class_list_for_official_path(path))
        assert parse_classes(names) == names, path


@pytest.mark.parametrize("bad", ["cat\x00", "ca\x07t", "zero\u200bwidth", "bidi\u202eeman",
                                 ["dog\x1b[31m"]])
def test_control_and_invisible_characters(bad):
    with pytest.raises(VocabularyError, match="control or invisible"):
        parse_classes(bad)


@pytest.mark.parametrize("bad", ["!!!", "cat, ---", "tv | ???", "\u2603"])
def test_names_without_letters_or_digits(bad):
    with pytest.raises(VocabularyError, match="no letters or digits"):
        parse_classes(bad)


@pytest.mark.parametrize("bad", ["tv |", "| tv", "tv || television"])
def test_empty_synonym(bad):
    with pytest.raises(VocabularyError, match="empty synonym"):
        parse_classes(bad)


# ---------------------------------------------------------------- synonyms and seen classes


@pytest.mark.parametrize("name, expected", [
    ("cat", ["cat"]),
    ("tv | television", ["tv", "television"]),
    ("pot, flowerpot", ["pot", "flowerpot"]),  # official ADE20K-Full style
    ("a | b, c", ["a", "b", "c"]),
    ("sky-other", ["sky-other"]),
])
def test_synonyms(name, expected):
    assert synonyms(name) == expected


TRAINING = frozenset({"person", "pot, flowerpot", "tv"})


@pytest.mark.parametrize("name, seen", [
    ("person", True),  # exact name
    ("Person", False),  # the rule is exact
    ("pot | flowerpot", True),  # its official ", "-joined form is listed
    ("pot, flowerpot", True),
    ("television | tv", True),  # one synonym is listed
    ("flowerpot", False),  # a synonym inside a listed entry is not the entry
    ("grass", False),
])
def test_is_seen_rule(name, seen):
    assert is_seen(name, TRAINING) is seen


def test_is_seen_with_the_coco_stuff_split():
    # OFFICIAL_PIPELINE: person, dog, car seen; grass (one of the 15 unseen) and sky (COCO-Stuff
    # calls it "sky-other") novel.
    seen = frozenset(class_list_for_official_path(
        "datasets/coco/coco_stuff/split/seen_classnames.json"))
    assert len(seen) == 156
    assert [is_seen(n, seen) for n in ["person", "dog", "grass", "sky", "car"]] == \
        [True, True, False, False, True]


# ---------------------------------------------------------------- templates


def test_prompt_template_counts():
    assert len(prompt_templates("imagenet_select")) == 8
    assert len(prompt_templates("imagenet")) == 80
    assert prompt_templates("single") == ("A photo of a {} in the scene",)
    assert len(prompt_templates("imagenet_select_clip")) == 32
    for name in ("imagenet_select", "imagenet", "single", "imagenet_select_clip"):
        assert all(tpl.count("{}") == 1 for tpl in prompt_templates(name))
        assert len(set(prompt_templates(name))) == len(prompt_templates(name))
    # CLIP's published lists: the 80 ImageNet templates start and end as in the CLIP notebook,
    # and the 7 "selected" ones are part of imagenet_select.
    assert prompt_templates("imagenet")[0] == "a bad photo of a {}."
    assert prompt_templates("imagenet")[-1] == "a tattoo of the {}."
    assert {"itap of a {}.", "a bad photo of the {}.", "a origami {}.",
            "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
            "a photo of the small {}."} <= set(prompt_templates("imagenet_select"))


def test_unknown_template_set():
    with pytest.raises(VocabularyError, match="unknown prompt ensemble"):
        prompt_templates("imagenet_selected")


# ---------------------------------------------------------------- TextEmbedder with a fake CLIP

D = 8


def prompt_vector(prompt: str) -> torch.Tensor:
    """Deterministic, deliberately not normalised feature of one prompt (norm about 3..4)."""
    g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
    return 3.0 * torch.randn(D, generator=g, dtype=torch.float64).float() + 0.5


class FakeClip:
    """Tokenizer + text tower that record what they are asked to encode."""

    def __init__(self) -> None:
        self.vocab: list[str] = []
        self.calls = 0
        self.encoded: list[str] = []

    def tokenizer(self, prompts: list[str]) -> torch.Tensor:
        ids = []
        for p in prompts:
            self.vocab.append(p)
            ids.append(len(self.vocab) - 1)
        return torch.tensor(ids)[:, None]  # N x 1

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        prompts = [self.vocab[i] for i in tokens[:, 0].tolist()]
        self.encoded += prompts
        return torch.stack([prompt_vector(p) for p in prompts])


def expected_embedding(name: str, templates: str) -> torch.Tensor:
    """Official zeroshot_classifier: normalise each prompt feature, mean, normalise again."""
    prompts = [t.format(s) for t in prompt_templates(templates) for s in synonyms(name)]
    feats = [prompt_vector(p) for p in prompts]
    feats = [f / f.norm() for f in feats]
    mean = torch.stack(feats).mean(0)
    return mean / mean.norm()


@pytest.fixture()
def fake():
    clip = FakeClip()
    return clip, TextEmbedder(clip.encode_text, clip.tokenizer, "fake")


def test_embeddings_are_the_normalised_mean_of_normalised_prompts(fake):
    _, embed = fake
    out = embed(["cat", "tv | television"], "imagenet_select")
    assert out.shape == (2, D) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out[0], expected_embedding("cat", "imagenet_select"))
    # 8 templates x 2 synonyms = 16 prompts averaged into one embedding.
    torch.testing.assert_close(out[1], expected_embedding("tv | television", "imagenet_select"))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_synonym_embedding_with_the_single_template(fake):
    _, embed = fake
    out = embed(["tv | television"], "single")[0]
    a = prompt_vector("A photo of a tv in the scene")
    b = prompt_vector("A photo of a television in the scene")
    m = a / a.norm() + b / b.norm()  # the mean's direction; normalising removes the 1/2
    torch.testing.assert_close(out, m / m.norm())
    assert not torch.allclose(out, (a + b) / (a + b).norm())  # normalising first matters


def test_repeated_vocabulary_is_a_cache_hit(fake):
    clip, embed = fake
    first = embed(["cat", "dog"], "imagenet_select")
    assert clip.calls == 1 and len(clip.encoded) == 16  # 2 classes x 8 templates
    assert (embed.hits, embed.misses) == (0, 2)
    second = embed(["cat", "dog"], "imagenet_select")
    assert clip.calls == 1 and len(clip.encoded) == 16  # nothing new encoded
    assert (embed.hits, embed.misses) == (2, 2)
    assert torch.equal(first, second)


def test_shared_classes_only_encode_the_new_ones(fake):
    clip, embed = fake
    embed(["cat", "dog"], "single")
    clip.encoded.clear()
    out = embed(["dog", "bird", "cat"], "single")
    assert clip.encoded == ["A photo of a bird in the scene"]
    assert (embed.hits, embed.misses) == (2, 3)
    torch.testing.assert_close(out[1], expected_embedding("bird", "single"))
    torch.testing.assert_close(out[0], expected_embedding("dog", "single"))  # order kept


def test_cache_is_keyed_by_template_set(fake):
    clip, embed = fake
    embed(["cat"], "single")
    embed(["cat"], "imagenet_select_clip")
    assert len(clip.encoded) == 1 + 32 and embed.misses == 2


def test_batches_do_not_change_the_result():
    clip = FakeClip()
    small = TextEmbedder(clip.encode_text, clip.tokenizer, "fake", batch_size=3)
    out = small(["cat", "tv | television"], "imagenet_select")  # 8 + 16 = 24 prompts
    assert clip.calls == 8  # ceil(24 / 3)
    torch.testing.assert_close(out[1], expected_embedding("tv | television", "imagenet_select"))


def test_lru_bound():
    clip = FakeClip()
    embed = TextEmbedder(clip.encode_text, clip.tokenizer, "fake", max_entries=2)
    embed(["a"], "single")
    embed(["b"], "single")
    embed(["a"], "single")  # hit: "a" becomes the most recently used
    assert embed.misses == 2
    embed(["c"], "single")  # evicts "b", the least recently used
    assert len(embed._cache) == 2
    embed(["a"], "single")
    assert embed.misses == 3  # "a" was kept
    embed(["b"], "single")
    assert embed.misses == 4  # "b" had been evicted
    out = embed(["x", "y", "z"], "single")  # more names than the bound: all returned
    assert out.shape == (3, D) and len(embed._cache) == 2

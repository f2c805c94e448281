"""One tar-shard reader for both stages: WebDataset's key rule (the member path up to the first dot of its
basename), the same samples in stage 1 and stage 2, and an unreadable shard skipped and counted (named when
strict) in both."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from fc_helpers import add_member, png_bytes
from PIL import Image

from contrastive_encoder.data.sources import ImageTextPairs, open_source
from contrastive_encoder.shared.records import BadSampleError, SkipCounter
from contrastive_encoder.shared.shards import TarShards, sample_key
from contrastive_encoder.shared.stores import TarStore
from flamingo_core.data import build_source


def test_sample_key_is_webdataset_base_plus_ext():
    assert sample_key("a.b/0001.jpg") == ("a.b/0001", "jpg")
    assert sample_key("x/y/0001.seg.PNG") == ("x/y/0001", "seg.png")
    assert sample_key("0001.txt") == ("0001", "txt")
    assert sample_key("a.b/README") is None and sample_key("dir/.hidden") is None


@pytest.fixture
def dotted_shard(tmp_path):
    """Samples under a dotted folder (``v1.0/``) and at the top, plus a member of no sample."""
    shard = tmp_path / "shard-000.tar"
    captions = {"v1.0/0001": "a red square", "v1.0/0002": "a blue circle", "0003": "a green star"}
    colours = {"v1.0/0001": (255, 0, 0), "v1.0/0002": (0, 0, 255), "0003": (0, 255, 0)}
    with tarfile.open(shard, "w") as tf:
        for key, text in captions.items():
            add_member(tf, f"{key}.png", png_bytes(colours[key]))
            add_member(tf, f"{key}.txt", text.encode())
        add_member(tf, "v1.0/LICENSE", b"no extension: not a sample")
    return shard, captions


def test_both_stages_read_a_shard_to_the_same_samples(dotted_shard):
    shard, captions = dotted_shard
    stage1 = open_source(str(shard))
    stage2 = TarStore(str(shard))
    assert isinstance(stage1, ImageTextPairs) and len(stage1) == len(stage2) == len(captions)
    keys2 = [stage2.where(i).rsplit(":", 1)[1] for i in range(len(stage2))]
    assert keys2 == list(captions)
    for i, key in enumerate(keys2):
        image1, text1 = stage1.load(i)
        assert stage1.where(i) == stage2.where(i) and stage1.where(i).endswith(f":{key}")
        record = stage2.record(i)
        assert text1 == record["text"] == captions[key]
        image2 = Image.open(io.BytesIO(stage2.media(i, record["png"]).value)).convert("RGB")
        assert image1.tobytes() == image2.tobytes()


def test_an_unreadable_shard_is_skipped_and_counted_or_named_when_strict(tmp_path, dotted_shard):
    good, captions = dotted_shard
    (tmp_path / "shard-001.tar").write_bytes(b"not a tar file" * 100)
    spec = str(tmp_path / "shard-*.tar")
    for open_one in (lambda **kw: open_source(spec, **kw), lambda **kw: build_source("w", "pairs", spec, **kw)):
        skipped = SkipCounter()
        source = open_one(skipped=skipped)
        assert len(source) == len(captions) and sum(skipped.values()) == 1
        assert next(iter(skipped)).startswith("unreadable tar shard")
        with pytest.raises(BadSampleError, match="shard-001.tar: unreadable tar shard"):
            open_one(strict=True)
    assert isinstance(build_source("w", "pairs", str(good)).load(0, random.Random(0)), tuple)


def test_shards_index_pickles_without_open_handles(dotted_shard):
    import pickle

    tars = TarShards(str(dotted_shard[0]))
    tars.read(0, tars[0].members["txt"])
    copy = pickle.loads(pickle.dumps(tars))
    assert copy.read(0, copy[0].members["txt"]) == b"a red square"

"""Bad rows in stage-2 training data (issue 15): a caption that is not a string, a literal ``<image>`` / ``<EOC>``
in a text, a media path that is not a string, undecodable text in a tar shard, a decompression-bomb image. Each
is one skipped and counted sample naming where it is, or ``BadSampleError`` with ``strict``; never a crash of
the batch."""

from __future__ import annotations

import io
import json
import random
import tarfile
import warnings
from pathlib import Path

import pytest
from fc_helpers import add_member
from PIL import Image
from test_bad_inputs_generate import png_claiming

import flamingo_core as fc
from contrastive_encoder.shared.records import BadSampleError, SkipCounter
from flamingo_core.data import EOC, FlamingoCollator, SkippedSample, build_source, make_loader

GOOD = "a red square"


@pytest.fixture(scope="module")
def processor():
    return fc.create_model("tiny").processor


def _png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(path)
    return path.name


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _load_both(kind: str, path, index: int, **options):
    """Load record ``index`` leniently (a SkippedSample) and strictly (raises); return the skip and the error."""
    lenient = build_source("s", kind, path, **options).load(index, random.Random(0))
    with pytest.raises(BadSampleError) as err:
        build_source("s", kind, path, strict=True, **options).load(index, random.Random(0))
    assert isinstance(lenient, SkippedSample) and lenient.reason == "bad record", lenient
    return lenient, str(err.value)


BAD_PAIRS = {
    "caption object": {"text": {"a": 1}},
    "caption number": {"text": 5},
    "caption list of numbers": {"text": None, "caption": [1, 2]},
    "literal image": {"text": "a red <image> square"},
    "literal eoc": {"text": "a red square<EOC> and more"},
    "image number": {"image": 123},
    "image list": {"image": ["a.png"]},
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_bad_pair_rows_are_skipped_or_named_when_strict(tmp_path, case):
    image = _png(tmp_path / "a.png")
    path = _jsonl(tmp_path / "pairs.jsonl", [{"image": image, "text": GOOD}, {"image": image, "text": GOOD,
                                                                                **BAD_PAIRS[case]}])
    skip, strict = _load_both("pairs", path, 1)
    assert "pairs.jsonl" in skip.where and "pairs.jsonl" in strict and "\n" not in strict
    items, _ = build_source("s", "pairs", path).load(0, random.Random(0))
    assert items[1] == GOOD + EOC  # the good row is untouched


def test_a_caption_list_is_read_by_both_stages(tmp_path):
    """One rule for a record's fields in both stages: stage 1 makes a pair of each caption, stage 2 draws one per
    sample from the sample's seeded rng (so it is the same draw in a resumed run)."""
    from contrastive_encoder.data.sources import open_source

    image = _png(tmp_path / "a.png")
    path = _jsonl(tmp_path / "pairs.jsonl", [{"image": image, "caption": ["a red one", "a round one"]}])
    assert [open_source(path).load(i)[1] for i in range(2)] == ["a red one", "a round one"]
    source = build_source("s", "pairs", path)
    drawn = {source.load(0, random.Random(seed))[0][1] for seed in range(20)}
    assert drawn == {"a red one" + EOC, "a round one" + EOC}
    assert source.load(0, random.Random(3))[0][1] == source.load(0, random.Random(3))[0][1]


@pytest.mark.parametrize("texts, images, what", [
    (["hello", {"a": 1}, None], [None, None, "a.png"], "texts[1]"),
    (["a literal <image> here", None], [None, "a.png"], "<image>"),
    (["hello<EOC>", None], [None, "a.png"], "<EOC>"),
    (["hello", None], [None, 123], "123"),
])
def test_bad_interleaved_rows_are_skipped_or_named_when_strict(tmp_path, texts, images, what):
    _png(tmp_path / "a.png")
    path = _jsonl(tmp_path / "m3w.jsonl", [{"texts": texts, "images": images}])
    skip, strict = _load_both("interleaved", path, 0, p_next=0.0)
    assert what in skip.where and "m3w.jsonl" in strict


@pytest.mark.parametrize("row, what", [({"video": "frames", "text": {"b": 2}}, "'text'"),
                                       ({"video": 123, "text": GOOD}, "123"),
                                       ({"video": "frames", "text": "<image> moves"}, "<image>")])
def test_bad_video_rows_are_skipped_or_named_when_strict(tmp_path, row, what):
    for k in range(2):
        _png(tmp_path / "frames" / f"{k:03d}.png")
    path = _jsonl(tmp_path / "vtp.jsonl", [row])
    skip, strict = _load_both("video", path, 0, num_frames=2)
    assert what in skip.where and "vtp.jsonl" in strict


def test_records_of_decoded_datasets_are_checked_too():
    # any sequence of dicts is an HFStore: a datasets.Dataset gives such rows
    image = Image.new("RGB", (16, 16))
    rows = [{"image": image, "text": GOOD}, {"image": image, "text": 7}, {"image": 123, "text": GOOD},
            {"image": image, "text": "an <image>"}]
    src = build_source("hf", "pairs", rows)
    got = [src.load(i, random.Random(0)) for i in range(len(rows))]
    assert isinstance(got[0], tuple)
    assert all(isinstance(g, SkippedSample) and "(row " in g.where for g in got[1:]), got


def test_undecodable_tar_members_are_skipped_naming_shard_and_member(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="PNG")
    with tarfile.open(tmp_path / "pairs.tar", "w") as tf:
        for key, ext, data in [("good", "txt", GOOD.encode()), ("latin", "txt", "caf\xe9".encode("latin-1")),
                               ("badjson", "json", b"{nope"), ("list", "json", b"[1, 2]"),
                               ("object", "json", json.dumps({"caption": {"x": 1}}).encode())]:
            add_member(tf, f"{key}.png", buf.getvalue())
            add_member(tf, f"{key}.{ext}", data)
    src = build_source("w", "pairs", tmp_path / "pairs.tar")
    got = {src.store.where(i).rsplit(":", 1)[1]: src.load(i, random.Random(0)) for i in range(len(src))}
    assert isinstance(got.pop("good"), tuple)
    assert all(isinstance(g, SkippedSample) and "pairs.tar" in g.where for g in got.values()), got
    assert "latin.txt" in got["latin"].where and "UTF-8" in got["latin"].where


def test_decompression_bomb_images_are_refused_before_decoding(tmp_path):
    # 100M pixels: over PIL's limit but under twice it, where PIL only warns and would decode it
    (tmp_path / "bomb.png").write_bytes(png_claiming(10000, 10000))
    path = _jsonl(tmp_path / "pairs.jsonl", [{"image": "bomb.png", "text": GOOD}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = build_source("s", "pairs", path).load(0, random.Random(0))
    assert isinstance(got, SkippedSample) and "bomb.png" in got.where and "exceeds limit" in got.where
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_literal_image_token_no_longer_fails_the_batch(tmp_path, processor):
    """Before: the collator's processor raised for the whole batch ('2 <image> tokens ... 1 image'), the run
    stopped with rc 2 and no row named. Now the reader skips that row and the batch goes on."""
    image = _png(tmp_path / "a.png")
    rows = [{"image": image, "text": GOOD}] * 3 + [{"image": image, "text": "an <image> token"}]
    src = build_source("s", "pairs", _jsonl(tmp_path / "pairs.jsonl", rows))
    batch = next(iter(make_loader(src, FlamingoCollator(processor, 64, processor.media_token_id), batch_size=4)))
    counter = SkipCounter()
    for s in batch["skipped"]:
        counter.skip(s.reason, s.where, strict=False)
    assert batch["input_ids"].shape[0] == 3 and counter == {"bad record": 1}

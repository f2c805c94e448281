"""Data: JSONL, tar shards and `datasets` give the same pairs; the step planner's three strategies; the
caption-aware flip; augmentation is a function of the sample key."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
from PIL import Image

from contrastive_encoder.data.mixing import StepPlanner
from contrastive_encoder.data.pairs import PairDataset
from contrastive_encoder.data.sources import ImageTextPairs, open_source
from contrastive_encoder.transforms import TrainTransform, swap_left_right


def pixels_of(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def test_tar_and_datasets_sources_match_jsonl(tmp_path, pairs_file):
    jsonl = open_source(pairs_file)
    rows = [(str(pairs_file.parent / r["image"]), r["text"]) for r in map(json.loads, pairs_file.read_text().splitlines())]
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, (image, text) in enumerate(rows):
            for name, data in ((f"{i:05d}.png", open(image, "rb").read()), (f"{i:05d}.txt", text.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tars = open_source(str(tmp_path / "shard-*.tar"))
    assert isinstance(tars, ImageTextPairs) and len(tars) == len(jsonl)
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [im for im, _ in rows], "text": [t for _, t in rows]}
    ).cast_column("image", datasets.Image())
    hf = open_source(ds)
    for i in (0, 5, len(jsonl) - 1):
        ref_img, ref_text = jsonl.load(i)
        for source in (tars, hf):
            img, text = source.load(i)
            assert text == ref_text and pixels_of(img) == pixels_of(ref_img)
    assert open_source(ds.rename_column("text", "caption")).load(i)[1] == ref_text  # the stores' key rule
    with pytest.raises(ValueError, match="no records with both an image"):
        open_source(ds.rename_column("text", "description"))


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'x.csv'"):
        open_source("x.csv")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        open_source(str(tmp_path / "nope.jsonl"))


def test_accumulation_takes_one_batch_per_dataset_and_covers_epochs():
    planner = StepPlanner([10, 7], batch_size=5, weights=[1.0, 0.2], seed=3)
    seen = []
    for step in range(2):
        micro = planner.plan(step)
        assert [m.weight for m in micro] == [1.0, 0.2]
        assert [{k[0] for k in m.keys} for m in micro] == [{0}, {1}]
        seen += [k[1] for k in micro[0].keys]
    assert sorted(seen) == list(range(10))  # two steps = one epoch of dataset 0, each example once
    assert planner.plan(1)[0].keys == StepPlanner([10, 7], 5, [1.0, 0.2], seed=3).plan(1)[0].keys
    assert planner.positions(2) == [10, 10]


def test_merge_mixes_by_weight_and_round_robin_alternates():
    merge = StepPlanner([50, 50], batch_size=10, weights=[3, 1], strategy="merge")
    (micro,) = merge.plan(0)
    assert [k[0] for k in micro.keys].count(0) == 8 and len(micro.keys) == 10  # 7.5 -> 8 by largest remainder
    rr = StepPlanner([50, 50], batch_size=4, weights=[2, 1], strategy="round-robin")
    order = [rr.plan(s)[0].keys[0][0] for s in range(9)]
    assert order.count(0) == 6 and order.count(1) == 3
    assert len(rr.plan(5)) == 1 and rr.positions(9) == [24, 12]
    # no dataset repeats an example before its epoch is done
    firsts = [k[1] for s in range(9) for k in rr.plan(s)[0].keys if k[0] == 1]
    assert len(set(firsts)) == len(firsts)
    with pytest.raises(ValueError, match="unknown strategy"):
        StepPlanner([5], 2, strategy="mix")
    with pytest.raises(ValueError, match="2 dataset weights given for 1"):
        StepPlanner([5], 2, weights=[1, 2])


def test_shard_is_a_contiguous_slice():
    (micro,) = StepPlanner([20], batch_size=8).plan(0)
    assert micro.shard(0, 2) + micro.shard(1, 2) == micro.keys


def test_swap_left_right():
    assert swap_left_right("A red circle on the left of a Right square.") == "A red circle on the right of a Left square."
    assert swap_left_right("leftover rights") == "leftover rights"


def test_flip_swaps_caption_and_augmentation_is_keyed(pairs_file):
    source = open_source(pairs_file)
    flip = TrainTransform(32, flip_p=1.0, brightness=0, contrast=0, saturation=0)
    image, text = source.load(0)
    x, new_text = flip(image, text, torch.Generator().manual_seed(0))
    assert "left" in text and new_text == swap_left_right(text)
    plain = TrainTransform(32, flip_p=0.0, brightness=0, contrast=0, saturation=0)(image, text, torch.Generator())[0]
    torch.testing.assert_close(x, plain.flip(-1))
    keep = TrainTransform(32, flip_p=1.0, swap_lr=False)(image, text, torch.Generator().manual_seed(0))[1]
    assert keep == text
    dataset = PairDataset([source], TrainTransform(32))
    a, b, c = dataset[(0, 3, 11)], dataset[(0, 3, 11)], dataset[(0, 3, 12)]
    assert torch.equal(a["pixels"], b["pixels"])
    assert not torch.equal(a["pixels"], c["pixels"])


def test_jsonl_bad_rows_counted_and_caption_lists_expanded(tmp_path, pairs_file):
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    rows[0]["text"] = ["first caption", "second caption"]
    lines = [json.dumps(r) for r in rows] + ["[1, 2]", json.dumps({"image": "x.png"})]
    pairs_file.write_text("\n".join(lines) + "\n")
    from contrastive_encoder.shared.records import SkipCounter

    skipped = SkipCounter()
    source = open_source(pairs_file, skipped=skipped)
    assert len(source) == len(rows) + 1 and sum(skipped.values()) == 2

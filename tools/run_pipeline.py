#!/usr/bin/env python
"""The whole Flamingo pipeline on generated data: the README's `make demo`.

    ShapesWorld -> contrastive-encoder train -> export the frozen tower -> flamingo train
                -> fewshot-eval run (captioning, VQA, classification, video QA) -> report

Every stage calls a package's public command line, writes its outputs under ``runs/<name>/<stage>/`` and a
``.done`` marker last; a stage whose marker exists is skipped, so an interrupted run continues where it stopped
(the training stages also resume from their last checkpoint).

Usage:
    python tools/run_pipeline.py --preset quick          # what `make demo` runs (minutes on 2 cores)
    python tools/run_pipeline.py --preset full           # each stage's default training, better numbers
    python tools/run_pipeline.py --preset tiny --out /tmp/run   # the test suite's chain (tiny models)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline_report  # noqa: E402
import shapesworld  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Preset:
    """What each stage does under one preset."""

    world_size: str  # ShapesWorld size name (tools/shapesworld.py)
    image_size: int  # pixels, every stage
    stage1_preset: str  # contrastive_encoder model preset
    stage1_args: list[str]  # extra `contrastive-encoder train` flags
    stage2_preset: str  # flamingo_core model preset
    stage2_args: list[str]  # extra `flamingo train` flags
    eval_shots: list[int]  # few-shot counts
    eval_args: list[str]  # extra `fewshot-eval run` flags
    eval_tasks: list[str] = field(default_factory=lambda: ["caption", "vqa", "classify", "video-qa"])
    task_args: dict[str, list[str]] = field(default_factory=lambda: {"caption": ["--max-new-tokens", "12"]})
    min_free_gb: float = 2.0  # refuse to start with less free disk than this


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        world_size="small",
        image_size=32,
        stage1_preset="tiny",
        stage1_args=["--steps", "4", "--batch-size", "8", "--warmup-steps", "1"],
        stage2_preset="tiny",
        stage2_args=["--max-steps", "4", "--batch-size", "2"],
        eval_shots=[0, 2],
        eval_args=["--limit", "2", "--trials", "1", "--ensemble", "2", "--num-beams", "1"],
        min_free_gb=0.2,
    ),
    "quick": Preset(
        world_size="default",
        image_size=64,
        stage1_preset="nano-minilm",
        stage1_args=["--max-minutes", "3"],
        stage2_preset="smollm2",
        stage2_args=["--max-minutes", "4", "--eval-samples", "16"],
        eval_shots=[0, 4, 8],
        # greedy decoding and 4 queries keep the demo within 15 minutes on 2 cores; `full` decodes with 3 beams
        eval_args=["--limit", "4", "--trials", "1", "--ensemble", "3", "--num-beams", "1"],
    ),
    "full": Preset(
        world_size="default",
        image_size=64,
        stage1_preset="nano-minilm",
        stage1_args=[],
        stage2_preset="smollm2",
        stage2_args=[],
        eval_shots=[0, 4, 8],
        # 40 queries x 2 random trials keep stage 3 under an hour on 2 cores (beam 3, prompt ensembles of 6)
        eval_args=["--limit", "40", "--trials", "2", "--ensemble", "6", "--num-beams", "3"],
    ),
}


class PipelineError(RuntimeError):
    """An expected failure: the message says what to delete or rerun."""


def _cli(name: str) -> str:
    """The console script installed beside this interpreter (the packages' public command lines)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            raise PipelineError(f"command '{name}' not found: run `make setup` (or pip install the packages)")
        return found
    return str(path)


class Pipeline:
    def __init__(self, preset_name: str, out: Path, data: Path, seed: int):
        self.preset_name = preset_name
        self.preset = PRESETS[preset_name]
        self.out = out
        self.data = data
        self.seed = seed
        self.timings: dict[str, float] = {}

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def check_folder(self) -> None:
        """Refuse an output folder made by another preset, and a disk too full to finish."""
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = self.out / "pipeline.json"
        wanted = {"preset": self.preset_name, "seed": self.seed, "data": str(self.data)}
        if manifest.exists():
            have = json.loads(manifest.read_text())
            if have != wanted:
                raise PipelineError(
                    f"{self.out} holds a run with {have}, not {wanted}: delete {self.out} or pass another --out"
                )
        else:
            manifest.write_text(json.dumps(wanted, indent=2) + "\n")
        free_gb = shutil.disk_usage(self.out).free / 2**30
        if free_gb < self.preset.min_free_gb:
            raise PipelineError(
                f"only {free_gb:.1f} GiB free under {self.out}; the '{self.preset_name}' preset needs "
                f"{self.preset.min_free_gb:.1f} GiB: free some space or pass --out on another disk"
            )

    def done_marker(self, stage: str) -> Path:
        return self.out / stage / ".done"

    def run_stage(self, index: int, total: int, stage: str, title: str, fn) -> None:
        marker = self.done_marker(stage)
        if marker.exists():
            print(f"[{index}/{total}] {title}: done earlier, skipped ({marker.parent})", flush=True)
            self.timings[stage] = json.loads(marker.read_text()).get("seconds", 0.0)
            return
        print(f"[{index}/{total}] {title} ...", flush=True)
        start = time.time()
        (self.out / stage).mkdir(parents=True, exist_ok=True)
        fn()
        seconds = round(time.time() - start, 1)
        self.timings[stage] = seconds
        marker.write_text(json.dumps({"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        print(f"[{index}/{total}] {title}: finished in {seconds:.0f} s", flush=True)

    def sh(self, args: list[str], log_name: str) -> None:
        print("  $ " + " ".join(args), flush=True)
        proc = subprocess.run(args, cwd=ROOT)
        if proc.returncode != 0:
            raise PipelineError(
                f"`{' '.join(args[:2])}` failed (exit {proc.returncode}); rerun the same command to resume "
                f"the stage, or delete {self.out / log_name} to start it over"
            )

    # -- stages --------------------------------------------------------------------------------------------
    def stage_data(self) -> None:
        shapesworld.generate(self.data, seed=self.seed, image_size=self.preset.image_size,
                             counts=self.preset.world_size, progress=True)

    def _resume(self, run: Path) -> list[str]:
        return ["--resume", "latest"] if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()) else []

    def stage_encoder(self) -> None:
        run, w = self.out / "stage1", self.data
        self.sh([_cli("contrastive-encoder"), "train", "--model", self.preset.stage1_preset,
                 "--data", str(w / "ltip" / "train.jsonl"), "--data", str(w / "align" / "train.jsonl"),
                 "--data-weights", "1.0", "0.2", "--image-size", str(self.preset.image_size),
                 "--zero-shot", str(w / "eval" / "colour" / "val"), "--zero-shot", str(w / "eval" / "classify" / "val"),
                 "--seed", str(self.seed), "--out", str(run), *self._resume(run), *self.preset.stage1_args], "stage1")

    def stage_export(self) -> None:
        self.sh([_cli("contrastive-encoder"), "export", "--checkpoint", str(self.out / "stage1"),
                 "--out", str(self.out / "vision")], "vision")

    def stage_flamingo(self) -> None:
        run = self.out / "stage2"
        self.sh([_cli("flamingo"), "train", "--data", str(self.data), "--vision-encoder", str(self.out / "vision"),
                 "--preset", self.preset.stage2_preset, "--seed", str(self.seed), "--out", str(run),
                 *self._resume(run), *self.preset.stage2_args], "stage2")

    def eval_data(self, task: str) -> Path:
        return self.data / "eval" / {"caption": "coco", "vqa": "vqav2", "classify": "classify",
                                     "video-qa": "videoqa", "video-caption": "videoqa"}[task]

    def stage_eval(self) -> None:
        for task in self.preset.eval_tasks:
            out = self.out / "eval" / task
            if (out / ".done").exists():
                continue
            print(f"  few-shot {task}", flush=True)
            self.sh([_cli("fewshot-eval"), "run", "--model", str(self.out / "stage2" / "model"), "--task", task,
                     "--data", str(self.eval_data(task)), "--shots", *map(str, self.preset.eval_shots),
                     "--selection", "random", "rices", "--seed", str(self.seed), "--out", str(out), "--resume",
                     "--cache-dir", str(self.out / "eval" / "rices-cache"), *self.preset.eval_args,
                     *self.preset.task_args.get(task, [])], f"eval/{task}")
            (out / ".done").write_text("ok\n")

    def stage_report(self) -> None:
        (self.out / "report.md").unlink(missing_ok=True)  # a failed rebuild must not leave an old report behind
        path = pipeline_report.write_report(self.out, self.data, self.preset_name, self.eval_data, self.timings)
        print(f"  report: {path}")

    def stages(self) -> list[tuple[str, str, object]]:
        p = self.preset
        return [
            ("data", f"ShapesWorld ({p.world_size}, {p.image_size} px) -> {self.data}", self.stage_data),
            ("stage1", f"stage 1: contrastive pretraining of the vision encoder ({p.stage1_preset})", self.stage_encoder),
            ("vision", "stage 1: export the frozen vision tower", self.stage_export),
            ("stage2", f"stage 2: Flamingo training on the M3W/LTIP/ALIGN/VTP mixture ({p.stage2_preset})",
             self.stage_flamingo),
            ("eval", f"stage 3: few-shot evaluation ({', '.join(p.eval_tasks)}; shots {p.eval_shots})", self.stage_eval),
            ("report", "report", self.stage_report),
        ]

    def run(self) -> int:
        self.check_folder()
        stages = self.stages()
        start = time.time()
        for i, (name, title, fn) in enumerate(stages, 1):
            self.run_stage(i, len(stages), name, title, fn)
        print(f"\nPipeline '{self.preset_name}' finished in {(time.time() - start) / 60:.1f} min (this run).")
        for name, _, _ in stages:
            print(f"  {name:<7} {self.timings.get(name, 0.0):7.0f} s   {self.out / name}")
        print(f"  report  {self.out / 'report.md'}")
        return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="how much each stage trains")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--data", type=Path, default=None, help="ShapesWorld folder (default data/world-<preset>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated world and every stage")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "runs" / args.preset
    data = args.data or ROOT / "data" / f"world-{args.preset}"
    try:
        return Pipeline(args.preset, out.resolve(), data.resolve(), args.seed).run()
    except (PipelineError, pipeline_report.ReportError, shapesworld.ShapesWorldError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

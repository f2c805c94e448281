#!/usr/bin/env python
"""The whole Flamingo pipeline on generated data: the README's `make demo`.

    ShapesWorld -> contrastive-encoder train -> export the frozen tower -> flamingo train
                -> fewshot-eval run (novel-label binding, captioning, VQA, classification, video QA) -> report

Every stage calls a package's public command line, writes its outputs under ``runs/<name>/<stage>/`` and a
``.done`` marker last; a stage whose marker exists is skipped (unless the stage before it finished later: its
inputs were redone), so an interrupted run continues where it stopped. A training stage resumes from its last
checkpoint, and starts again (``--overwrite``) when it was killed before its first one or its inputs were
redone; a few-shot task continues its predictions (``--resume``) unless the model was trained again since.
A stage's process dies with the pipeline, even when the pipeline is killed with SIGKILL, and SIGTERM / SIGINT /
SIGHUP are passed on to it (a second one kills it).

Usage:
    python tools/run_pipeline.py --budget quick          # what `make demo` runs (minutes on 2 cores)
    python tools/run_pipeline.py --budget full           # each stage's default training, better numbers
    python tools/run_pipeline.py --budget tiny --out /tmp/run   # the test suite's chain (tiny models)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline_report  # noqa: E402
import shapesworld  # noqa: E402
from contrastive_encoder.shared.checkpoint import latest_checkpoint  # noqa: E402
from contrastive_encoder.shared.outputs import RUN_MARKER, OutputError, prepare_run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOUR_PROBE = ROOT / "tools" / "shapesworld" / "probes.py"


# the pipeline's few-shot tasks: fewshot-eval's tasks, and "bind", novel-label classification of the colour set
# (Frozen's fast concept binding: nonce class names drawn fresh per episode, so 0-shot is chance by construction)
TASK_FLAGS = {"bind": ["--task", "classify", "--nonce-labels"]}
# demonstration selection per task: balanced (n-way, k per class) needs labels; RICES for binding would retrieve
# same-colour images, which measures retrieval rather than reading the prompt
SELECTIONS = {"caption": ["random", "rices"], "vqa": ["random", "rices"], "video-qa": ["random", "rices"],
              "classify": ["random", "rices", "balanced"], "bind": ["balanced", "random"]}


@dataclass
class Budget:
    """What each stage does under one budget (how much data, training and evaluation a run gets)."""

    world_size: str  # ShapesWorld size name (tools/shapesworld)
    image_size: int  # pixels, every stage
    stage1_model: str  # contrastive_encoder model preset
    stage1_args: list[str]  # extra `contrastive-encoder train` flags
    stage2_model: str  # flamingo_core model preset
    stage2_args: list[str]  # extra `flamingo train` flags
    eval_shots: list[int]  # few-shot counts
    eval_args: list[str]  # extra `fewshot-eval run` flags
    eval_tasks: list[str] = field(default_factory=lambda: ["bind", "caption", "vqa", "classify", "video-qa"])
    task_args: dict[str, list[str]] = field(default_factory=lambda: {"caption": ["--max-new-tokens", "12"]})
    world_counts: dict[str, int] = field(default_factory=dict)  # ShapesWorld count overrides
    selections: dict[str, list[str]] = field(default_factory=lambda: dict(SELECTIONS))  # per task
    m3w_structured: float = 0.5  # share of M3W pages with in-context structure (tools/shapesworld/m3w_pages.py)
    min_free_gb: float = 2.0  # refuse to start with less free disk than this


# M3W pages and batch: binding is learnt from the page-local names of structured pages; one M3W page a step gives
# too few of them in a budget of minutes (docs/benchmarks.md, "Few-shot learning")
_M3W = ["--batch-sizes", "m3w=4,ltip=2,align=2"]
BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        world_size="small",
        image_size=32,
        stage1_model="tiny",
        stage1_args=["--max-steps", "4", "--batch-size", "8", "--warmup-steps", "1"],
        stage2_model="tiny",
        stage2_args=["--max-steps", "4", "--batch-size", "2"],
        eval_shots=[0, 2],
        eval_args=["--limit", "2", "--trials", "1", "--ensemble", "2", "--num-beams", "1"],
        min_free_gb=0.2,
    ),
    "quick": Budget(
        world_size="default",
        image_size=64,
        stage1_model="nano-minilm",
        stage1_args=["--max-minutes", "2.5"],
        stage2_model="smollm2",
        stage2_args=["--max-minutes", "4", "--eval-samples", "16", *_M3W],
        eval_shots=[0, 4, 8],
        # greedy decoding and 32 queries keep the demo within 15 minutes on 2 cores; `full` decodes with 3 beams
        eval_args=["--limit", "32", "--trials", "1", "--ensemble", "1", "--num-beams", "1"],
        world_counts={"m3w_train": 2000},
        selections={**SELECTIONS, "classify": ["random", "rices"]},  # balanced is the bind task's
    ),
    "full": Budget(
        world_size="default",
        image_size=64,
        stage1_model="nano-minilm",
        stage1_args=[],
        stage2_model="smollm2",
        stage2_args=[*_M3W],
        eval_shots=[0, 1, 2, 4, 8, 16, 32],
        # 48 queries, 2 trials, beam 3 (the paper's); no prompt ensembling (the paper's 6 orderings cost 6x on
        # 2 cores at 7 shot counts; `fewshot-eval run --ensemble 6` on the saved model adds it)
        eval_args=["--limit", "48", "--trials", "2", "--ensemble", "1", "--num-beams", "3"],
        world_counts={"m3w_train": 2000},
    ),
}


class PipelineError(RuntimeError):
    """An expected failure: the message says what to delete or rerun."""


class Interrupted(Exception):
    """The pipeline got SIGTERM / SIGINT / SIGHUP while a stage ran; the stage was told and has stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when the pipeline dies, even by SIGKILL (which
    no handler sees); None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the pipeline died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _run_child(args: list[str]) -> int:
    """Run a stage's command and wait for it; a signal to the pipeline goes to the child (a second one kills
    it), and once the child has stopped the pipeline stops too (``Interrupted``)."""
    proc = subprocess.Popen(args, cwd=ROOT, preexec_fn=_die_with_parent())
    received: list[int] = []

    def forward(signum, frame) -> None:
        # a terminal's Ctrl-C reaches the child as well (same process group), so it may see SIGINT twice:
        # harmless, as every save is atomic; a kill of the pipeline alone reaches it only through here
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum if len(received) == 1 else signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0])
    return rc


def _cli(name: str) -> str:
    """The console script installed beside this interpreter (the packages' public command lines)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            raise PipelineError(f"command '{name}' not found: run `make setup` (or pip install the packages)")
        return found
    return str(path)


# what the pipeline writes at the top of its folder
RUN_OUTPUTS = ("pipeline.json", "data", "stage1", "vision", "stage2", "eval", "report", "report.md", "figures")


class Pipeline:
    """The stages of one run. ``budget`` replaces the named budget's settings (an ablation's variant), and
    ``vision_from`` skips stage 1: the frozen tower exported by another run is used (ablations share one)."""

    def __init__(self, budget_name: str, out: Path, data: Path, seed: int, overwrite: bool = False,
                 budget: Budget | None = None, vision_from: Path | None = None):
        self.budget_name = budget_name
        self.budget = budget or BUDGETS[budget_name]
        self.out = out
        self.data = data
        self.seed = seed
        self.overwrite = overwrite
        self.vision_from = vision_from
        self.vision = vision_from or out / "vision"
        self.timings: dict[str, float] = {}
        self.stage = ""  # the stage running now, for the interruption message

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def check_folder(self) -> None:
        """Refuse a file, an unwritable folder, a foreign non-empty folder (unless --overwrite), an output
        folder made with another budget, seed or data, and a disk too full to finish."""
        # a rerun continues the previous one (finished stages are skipped), so the run folder is always resumed
        prepare_run_dir(self.out, "run_pipeline", RUN_OUTPUTS, resume=True, overwrite=self.overwrite,
                        legacy=("pipeline.json",))
        manifest = self.out / "pipeline.json"
        wanted = {"budget": self.budget_name, "seed": self.seed, "data": str(self.data)}
        if manifest.exists():
            have = json.loads(manifest.read_text())
            if isinstance(have, dict) and "preset" in have and "budget" not in have:  # written before the rename
                have["budget"] = have.pop("preset")
            if have != wanted:
                raise PipelineError(
                    f"{self.out} holds a run with {have}, not {wanted}: delete {self.out} or pass another --out"
                )
        else:
            manifest.write_text(json.dumps(wanted, indent=2) + "\n")
        free_gb = shutil.disk_usage(self.out).free / 2**30
        if free_gb < self.budget.min_free_gb:
            raise PipelineError(
                f"only {free_gb:.1f} GiB free under {self.out}; the '{self.budget_name}' budget needs "
                f"{self.budget.min_free_gb:.1f} GiB: free some space or pass --out on another disk"
            )

    def done_marker(self, stage: str) -> Path:
        return self.out / stage / ".done"

    def older_than(self, path: Path, upstream: str) -> bool:
        """``path`` (a ``.done`` marker or a run's ``run.json``) predates the last completion of the stage
        ``upstream``: it was made from that stage's previous outputs, so it is stale."""
        up = self.done_marker(upstream)
        return up.exists() and path.exists() and path.stat().st_mtime_ns < up.stat().st_mtime_ns

    def run_stage(self, index: int, total: int, stage: str, title: str, fn, upstream: str | None = None) -> None:
        marker = self.done_marker(stage)
        if marker.exists() and not (upstream and self.older_than(marker, upstream)):
            print(f"[{index}/{total}] {title}: done earlier, skipped ({marker.parent})", flush=True)
            try:
                self.timings[stage] = float(json.loads(marker.read_text()).get("seconds", 0.0))
            except (ValueError, AttributeError, TypeError):  # a marker cut short: its timing is only a report line
                self.timings[stage] = 0.0
            return
        marker.unlink(missing_ok=True)  # a stale one (its inputs were redone) must not survive a failed rerun
        print(f"[{index}/{total}] {title} ...", flush=True)
        self.stage = stage
        start = time.time()
        (self.out / stage).mkdir(parents=True, exist_ok=True)
        fn()
        seconds = round(time.time() - start, 1)
        self.timings[stage] = seconds
        marker.write_text(json.dumps({"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        print(f"[{index}/{total}] {title}: finished in {seconds:.0f} s", flush=True)

    def sh(self, args: list[str], log_name: str) -> None:
        print("  $ " + " ".join(args), flush=True)
        rc = _run_child(args)
        if rc != 0:
            raise PipelineError(
                f"`{' '.join(args[:2])}` failed (exit {rc}); rerun the same command to resume "
                f"the stage, or delete {self.out / log_name} to start it over"
            )

    # -- stages --------------------------------------------------------------------------------------------
    def stage_data(self) -> None:
        shapesworld.generate(self.data, seed=self.seed, image_size=self.budget.image_size,
                             counts=self.budget.world_size, sizes=self.budget.world_counts,
                             m3w_structured=self.budget.m3w_structured, progress=True)

    def _rerun_flags(self, run: Path, upstream: str) -> list[str]:
        """How a training stage reruns in its folder: nothing in an empty folder; start again (``--overwrite``)
        when it was killed before its first checkpoint or its inputs were redone since it started; else
        continue from its last complete checkpoint."""
        if not (run.is_dir() and any(run.iterdir())):
            return []
        if latest_checkpoint(run) is not None and not self.older_than(run / RUN_MARKER, upstream):
            return ["--resume", "latest"]
        return ["--overwrite"]

    def stage_encoder(self) -> None:
        run, w = self.out / "stage1", self.data
        self.sh([_cli("contrastive-encoder"), "train", "--model", self.budget.stage1_model,
                 "--data", str(w / "ltip" / "train.jsonl"), "--data", str(w / "align" / "train.jsonl"),
                 "--data-weights", "1.0", "0.2", "--image-size", str(self.budget.image_size),
                 "--zero-shot", str(w / "eval" / "colour" / "val"), "--zero-shot", str(w / "eval" / "classify" / "val"),
                 "--seed", str(self.seed), "--out", str(run), *self._rerun_flags(run, "data"),
                 *self.budget.stage1_args], "stage1")

    def stage_export(self) -> None:
        out = self.out / "vision"  # the pipeline's own folder: a rerun replaces what an earlier try left there
        self.sh([_cli("contrastive-encoder"), "export", "--checkpoint", str(self.out / "stage1"),
                 "--out", str(out), *(["--overwrite"] if any(out.iterdir()) else [])], "vision")

    def stage_flamingo(self) -> None:
        run = self.out / "stage2"
        self.sh([_cli("flamingo"), "train", "--data", str(self.data), "--vision-encoder", str(self.vision),
                 "--model", self.budget.stage2_model, "--seed", str(self.seed), "--out", str(run),
                 "--eval-probe", f"{COLOUR_PROBE}:colour_probe",  # the report's "captions naming the colour"
                 *self._rerun_flags(run, "vision"), *self.budget.stage2_args], "stage2")

    def eval_data(self, task: str) -> Path:
        return self.data / "eval" / {"caption": "coco", "vqa": "vqav2", "classify": "classify", "bind": "colour",
                                     "video-qa": "videoqa", "video-caption": "videoqa"}[task]

    def stage_eval(self) -> None:
        for task in self.budget.eval_tasks:
            out = self.out / "eval" / task
            if (out / ".done").exists() and not self.older_than(out / ".done", "stage2"):
                continue
            print(f"  few-shot {task}", flush=True)
            (out / ".done").unlink(missing_ok=True)
            # --resume continues the predictions of an interrupted try; those of a model trained again since, or
            # a folder fewshot-eval never claimed (no run.json), are started again (--overwrite)
            stale = out.is_dir() and any(out.iterdir()) and (
                self.older_than(out / RUN_MARKER, "stage2") or not (out / RUN_MARKER).exists())
            rerun = ["--overwrite"] if stale else ["--resume"]
            self.sh([_cli("fewshot-eval"), "run", "--model", str(self.out / "stage2" / "model"),
                     *TASK_FLAGS.get(task, ["--task", task]), "--data", str(self.eval_data(task)),
                     "--shots", *map(str, self.budget.eval_shots), "--selection", *self.budget.selections[task],
                     "--seed", str(self.seed), "--out", str(out), *rerun,
                     "--cache-dir", str(self.out / "eval" / "rices-cache"), *self.budget.eval_args,
                     *self.budget.task_args.get(task, [])], f"eval/{task}")
            (out / ".done").write_text("ok\n")

    def stage_report(self) -> None:
        (self.out / "report.md").unlink(missing_ok=True)  # a failed rebuild must not leave an old report behind
        path = pipeline_report.write_report(self.out, self.data, self.budget_name, self.eval_data, self.timings)
        print(f"  report: {path}")

    def stages(self) -> list[tuple[str, str, object]]:
        p = self.budget
        encoder = [] if self.vision_from is not None else [
            ("stage1", f"stage 1: contrastive pretraining of the vision encoder ({p.stage1_model})", self.stage_encoder),
            ("vision", "stage 1: export the frozen vision tower", self.stage_export),
        ]
        return [
            ("data", f"ShapesWorld ({p.world_size}, {p.image_size} px) -> {self.data}", self.stage_data),
            *encoder,
            ("stage2", f"stage 2: Flamingo training on the M3W/LTIP/ALIGN/VTP mixture ({p.stage2_model})",
             self.stage_flamingo),
            ("eval", f"stage 3: few-shot evaluation ({', '.join(p.eval_tasks)}; shots {p.eval_shots})", self.stage_eval),
            # a run on another run's tower has no stage-1 logs to report; its caller compares the runs
            *([] if self.vision_from is not None else [("report", "report", self.stage_report)]),
        ]

    def run(self) -> int:
        self.check_folder()
        stages = self.stages()
        start = time.time()
        for i, (name, title, fn) in enumerate(stages, 1):
            self.run_stage(i, len(stages), name, title, fn, upstream=stages[i - 2][0] if i > 1 else None)
        print(f"\nPipeline '{self.budget_name}' finished in {(time.time() - start) / 60:.1f} min (this run).")
        for name, _, _ in stages:
            print(f"  {name:<7} {self.timings.get(name, 0.0):7.0f} s   {self.out / name}")
        if self.vision_from is None:
            print(f"  report  {self.out / 'report.md'}")
        return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                   help="how much data, training and evaluation each stage gets (default quick)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<budget>)")
    p.add_argument("--data", type=Path, default=None, help="ShapesWorld folder (default data/world-<budget>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the generated world and every stage")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out that is not a pipeline run (its files are kept)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "runs" / args.budget
    data = args.data or ROOT / "data" / f"world-{args.budget}"
    pipeline = Pipeline(args.budget, out.resolve(), data.resolve(), args.seed, args.overwrite)
    try:
        return pipeline.run()
    except (PipelineError, OutputError, pipeline_report.ReportError, shapesworld.ShapesWorldError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        where = f" during stage '{pipeline.stage}'" if pipeline.stage else ""
        print(f"interrupted by {signal.Signals(signum).name}{where}; rerun the same command to continue",
              file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    raise SystemExit(main())

"""Prompts against the language model's context (Flamingo, arXiv 2204.14198, Sec. 3: up to 32 shots in one
interleaved prompt).

A prompt longer than the frozen LM's positions would be cut or run past them and give garbage without a word,
so an evaluation refuses the whole run before anything is generated (not query by query: the scores of the shot
counts would then be over different queries). It is checked twice: from the saved model folder's tokenizer and
LM config before the weights load (``evaluate.check_context`` with a ``model.TokenCounter``), and with the loaded
model before the first prediction, where RICES' retrieved demonstrations are known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot_eval.datasets import CLOSE_ENDED_TASKS

__all__ = ["check_prompt_lengths", "shortest_demos"]


def check_prompt_lengths(model, runner, jobs: Sequence, source, rices_floor: bool = False) -> str | None:
    """A one-line message when a prompt and what follows it (the tokens to generate, or the longest candidate
    to score) do not fit in the model's context, else None.

    Args:
        model: anything with ``context_length`` and ``count_tokens`` (an ``EvalModel`` or a ``TokenCounter``);
            nothing is checked without both.
        runner: the evaluation's prompt builder (``runner.Runner``).
        jobs: the (selection, shots, trial) jobs with their queries to do and demonstrations.
        source: the query set, named in the message.
        rices_floor: RICES jobs hold the shortest possible demonstrations (``shortest_demos``), said so.
    """
    limit, count = getattr(model, "context_length", None), getattr(model, "count_tokens", None)
    if not limit or count is None:
        return None
    if runner.task in CLOSE_ENDED_TASKS:
        conts = [runner.template.continuation(c) for c in runner.candidates()]
        what = "to score the longest " + ("nonce word" if runner.nonce_words is not None else "class name")
        extra = max(count(conts, continuation=True), default=0)
    else:
        extra, what = runner.max_new_tokens, "to generate"
    for job in jobs:
        if not job.todo:
            continue
        lengths = count(runner.prompt_texts(job.todo, job.demo_idx, job.k, job.trial))
        over = [i for i, n in enumerate(lengths) if n + extra > limit]
        if over:
            worst = max(over, key=lengths.__getitem__)
            trial = f", trial {job.trial}" if job.sel in ("random", "balanced") else ""
            floor = f", even its {job.k} demonstrations with the fewest tokens" if rices_floor and job.sel == "rices" else ""
            return (
                f"{runner.task} {job.k}-shot ({job.sel}{trial}{floor}): {len(over)} of {len(lengths)} prompts do not "
                f"fit in the language model's context of {limit} tokens; the longest, for query "
                f"{job.todo[worst].id!r} of {source}, is {lengths[worst]} tokens + {extra} {what}; use fewer --shots, "
                "a shorter --template"
                + (" or a smaller --max-new-tokens" if runner.task not in CLOSE_ENDED_TASKS else " or shorter class names")
            )
    return None


def shortest_demos(counter, runner, queries: Sequence, k: int, trial: int) -> list[list[int]]:
    """For each query, the ``k`` support examples whose demonstrations have the fewest tokens (never the query
    itself): no retrieval can give a shorter prompt, so when this one does not fit, no RICES prompt does.

    Under nonce labels a classification demonstration's text is its answer only, the query's episode word for
    its class, so its length is looked up per query from the words' lengths.
    """
    support, tmpl = runner.support.examples, runner.template
    if runner.nonce_words is None:
        lengths = np.array(counter.count_tokens([tmpl.render_demo(e.target, e.question) for e in support],
                                                continuation=True))  # fmt: skip
        order = np.argsort(lengths, kind="stable")
    else:
        words = runner.candidates()
        word_len = dict(zip(words, counter.count_tokens([tmpl.render_demo(w) for w in words], continuation=True)))
        cls = {c: i for i, c in enumerate(runner.class_names)}
        of_class = np.array([cls[e.target] for e in support])
    out = []
    for q in queries:
        if runner.nonce_words is not None:
            names = runner.names(q, trial)
            lengths = np.array([word_len[names[c]] for c in runner.class_names])[of_class]
            order = np.argsort(lengths, kind="stable")
        out.append([int(i) for i in order[: k + 1] if support[i].key != q.key][:k])
    return out

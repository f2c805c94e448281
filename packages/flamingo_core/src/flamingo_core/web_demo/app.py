"""The web demo's page (Gradio): a visual dialogue with streamed answers, a few-shot prompt builder, the decoding
settings and the model's gates; every refused input is a line in the page's status box, and the server goes on.

It serves on 127.0.0.1 unless told another address, never makes a public share link, and sends no analytics.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from contrastive_encoder.shared.readers import first_line

from ..cli import Conversation, UserError, build_items, load_model
from .demonstrations import SELECTIONS, FewShotBuilder, read_support
from .dialogue import DECODING_MODES, Decoding, gate_table, respond, stream_answer
from .uploads import load_upload

__all__ = ["ModelSlot", "build_app", "launch"]

STATUS_ID, CHAT_ID, INPUT_ID = "demo-status", "chat", "chat-input"


class ModelSlot:
    """The model the server answers with (one for every browser session), or why none could be loaded."""

    def __init__(self, args: argparse.Namespace, model=None):
        self.args, self.model, self.error, self.version = args, None, None, 0
        if model is not None:
            self._use(model, args.model)
        else:
            self.load(args.model)

    def _use(self, model, source: str) -> None:
        self.model, self.source, self.error = model, source, None
        self.builder = FewShotBuilder(model)
        self.version += 1  # sessions start a new conversation with a new model

    def load(self, name: str) -> None:
        """Load ``name`` (a saved folder or a preset); on failure keep the model served so far and say why."""
        try:
            self._use(load_model(name.strip(), self.args.device), name.strip())
        except UserError as e:
            self.error = str(e)
            print(f"error: {e}", file=sys.stderr, flush=True)

    def require(self):
        if self.model is None:
            raise UserError(f"no model is loaded: {self.error} (type a saved model folder above and press Load)")
        return self.model

    def describe(self) -> str:
        if self.model is None:
            return f"**Model failed to load:** {self.error}"
        m = self.model
        text = (f"Model `{self.source}`: LM context {m.context_length or 'unbounded'} tokens (each image or video "
                f"counts one `{m.config.media_token}` token), videos read as up to {m.config.max_frames} frames, "
                f"images up to {self.args.max_image_pixels:,} pixels.")
        return text if self.error is None else f"{text}\n\n**Model failed to load:** {self.error}"


def _error(e: BaseException) -> str:
    if not isinstance(e, UserError):  # a bug, not the user's input: the server logs it and goes on
        traceback.print_exception(e, file=sys.stderr)
        return f"**Error:** internal error: {type(e).__name__}: {first_line(e)}"
    return f"**Error:** {e}"


def _conversation(slot: ModelSlot, state: dict | None) -> tuple[Conversation, dict]:
    model, args = slot.require(), slot.args
    if not state or state.get("version") != slot.version:
        template = None if args.plain_prompt else getattr(model.tokenizer, "chat_template", None)
        conv = Conversation(model.config.media_token, model.config.eoc_token, args.user_prefix,
                            args.assistant_prefix, tokenizer=model.tokenizer if template else None)
        state = {"conv": conv, "version": slot.version}
    return state["conv"], state


def _media(slot: ModelSlot, files: list) -> list:
    model = slot.require()
    frames = min(slot.args.video_frames, model.config.max_frames)
    return [load_upload(f, slot.args.max_image_pixels, frames) for f in files]


def _send(slot: ModelSlot, message: dict | None, history: list, state: dict | None, *settings):
    """The chat's submit: yields (chatbot, state, status, prompt, input box) as the answer streams."""
    message = message or {}
    text, files = (message.get("text") or "").strip(), [str(f) for f in message.get("files") or []]
    history = list(history or [])
    yield history, state, "reading the message ...", "", message  # the last turn's status goes at once
    try:
        conv, state = _conversation(slot, state)
        media = _media(slot, files)
        shown = history + [{"role": "user", "content": {"path": f}} for f in files]
        if not text:
            for item in media:
                conv.add_image(item)
            yield shown, state, (f"{len(media)} file(s) added; they go before your next message."), "", None
            return
        shown.append({"role": "user", "content": text})
        decoding = Decoding(*settings)
        args = decoding.args(slot.args)
        for prompt, reply in respond(slot.model, conv, text, media, args, decoding.streams):
            yield shown + [{"role": "assistant", "content": reply}], state, "answering ...", prompt, None
        yield shown + [{"role": "assistant", "content": reply}], state, "done", prompt, None
    except Exception as e:
        yield history, state, _error(e), "", {"text": text, "files": []}  # the text stays, to be sent again


def _build_fewshot(slot: ModelSlot, folder: str, selection: str, shots, seed, query, question: str):
    """The few-shot builder: yields (gallery, prompt, few-shot state, status)."""
    try:
        slot.require()
        if not query:
            raise UserError("upload a query image for the few-shot prompt")
        query_image = load_upload(query, slot.args.max_image_pixels, 1)
        if isinstance(query_image, list):
            raise UserError("the few-shot query must be an image, not a video")
        support = read_support(folder or "")
        demos = slot.builder.select(support, int(shots), selection, query_image, seed=int(seed or 0))
        text, images = slot.builder.build(support, demos, question)
        gallery = [(str(d.image), d.answer if d.question is None else f"{d.question} {d.answer}") for d in demos]
        state = {"prompt": text, "images": [*images, query_image], "version": slot.version}
        yield gallery, text, state, (f"{len(demos)} demonstrations from {support.source} ({support.task}, "
                                        f"{selection}); press Answer")
    except Exception as e:
        yield [], "", None, _error(e)


def _answer_fewshot(slot: ModelSlot, state: dict | None, *settings):
    """The few-shot Answer button: yields (answer, status) as it streams."""
    try:
        model = slot.require()
        if not state or state.get("version") != slot.version:
            raise UserError("build the few-shot prompt first (Build prompt)")
        decoding = Decoding(*settings)
        items = build_items(state["prompt"], state["images"], model.config.media_token)
        for reply in stream_answer(model, items, decoding.args(slot.args), decoding.streams):
            yield reply, ("answering ...")
        yield reply, ("done")
    except Exception as e:
        yield "", _error(e)


def _load(slot: ModelSlot, name: str):
    slot.load(name or "")
    model_ok = slot.model is not None
    return slot.describe(), gate_table(slot.model) if model_ok else "", [], None, (
        (f"serving {slot.source}") if slot.error is None else f"**Error:** {slot.error}")


def _decoding_panel(gr, args: argparse.Namespace) -> list:
    mode = "sampling" if args.sample else ("beam search" if args.num_beams > 1 else "greedy")
    with gr.Accordion("Decoding", open=True):
        controls = [
            gr.Radio(list(DECODING_MODES), value=mode, label="decoding", elem_id="decoding-mode",
                     info="greedy and sampling stream; beam search shows the answer when it is done"),
            gr.Slider(1, 512, value=args.max_new_tokens, step=1, label="max new tokens", elem_id="max-new-tokens"),
            gr.Slider(1, 8, value=max(args.num_beams, 2), step=1, label="beams (beam search)"),
        ]
    with gr.Accordion("Sampling", open=False):
        controls += [
            gr.Slider(0.05, 2.0, value=args.temperature, step=0.05, label="temperature (sampling)"),
            gr.Slider(0, 200, value=args.top_k, step=1, label="top-k (sampling, 0 = all)"),
            gr.Slider(0.05, 1.0, value=args.top_p, step=0.05, label="top-p (sampling)"),
            gr.Number(value=args.seed, precision=0, label="seed (sampling)"),
        ]
    return controls


def _fewshot_tab(gr, slot: ModelSlot, decoding: list, status) -> None:
    with gr.Row():
        folder = gr.Textbox(value=slot.args.data or "", label="dataset folder", elem_id="fewshot-folder",
                            info="COCO Karpathy dataset_*.json (captions) or VQAv2 train_questions.json + "
                                 "train_annotations.json, as tools/shapesworld writes them")
        selection = gr.Radio(list(SELECTIONS), value="random", label="demonstrations",
                             info="RICES: the most similar images by the vision encoder, the closest last")
        shots = gr.Slider(0, 32, value=4, step=1, label="shots")
        seed = gr.Number(value=0, precision=0, label="seed (random)")
    with gr.Row():
        query = gr.File(label="query image", file_types=["image"], type="filepath", elem_id="fewshot-query")
        question = gr.Textbox(label="question (VQA datasets)", elem_id="fewshot-question")
    with gr.Row():
        build = gr.Button("Build prompt", elem_id="fewshot-build")
        go = gr.Button("Answer", variant="primary", elem_id="fewshot-answer-button")
    gallery = gr.Gallery(label="demonstrations", columns=8, height=160)
    prompt = gr.Textbox(label="prompt (<image> marks each image)", lines=3, interactive=False,
                        elem_id="fewshot-prompt")
    reply = gr.Textbox(label="answer", interactive=False, elem_id="fewshot-reply")
    fewshot_state = gr.State(None)
    build.click(lambda *a: (yield from _build_fewshot(slot, *a)), [folder, selection, shots, seed, query, question],
                [gallery, prompt, fewshot_state, status])
    go.click(lambda *a: (yield from _answer_fewshot(slot, *a)), [fewshot_state, *decoding], [reply, status])


def build_app(args: argparse.Namespace, model=None):
    """The Gradio ``Blocks`` of the demo for the ``flamingo demo`` flags ``args``; ``model``: a loaded model to
    serve instead of loading ``args.model``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    slot = ModelSlot(args, model)
    with gr.Blocks(title="Flamingo demo", analytics_enabled=False) as app:
        gr.Markdown("## Flamingo\nInterleave images and videos with text: attach files to a message (they go "
                    "before its text, or at each `<image>` you type), then ask about them.")
        with gr.Row():
            model_box = gr.Textbox(value=slot.source if slot.model is not None else args.model, scale=4,
                                   label="model (saved folder or preset)", elem_id="model-path")
            load = gr.Button("Load", scale=1)
        info = gr.Markdown(slot.describe(), elem_id="model-info")
        status = gr.Markdown(f"**Error:** {slot.error}" if slot.error else "", elem_id=STATUS_ID)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Dialogue"):
                    chat = gr.Chatbot(elem_id=CHAT_ID, render_markdown=False, height=420, label="dialogue")
                    box = gr.MultimodalTextbox(file_types=["image", "video"], file_count="multiple",
                                               elem_id=INPUT_ID, label="message (drop images or videos here)", placeholder="Ask about the attached images ...")
                    clear = gr.Button("New conversation")
                    prompt = gr.Textbox(label="prompt of the last answer (<image> marks each image)", lines=3,
                                        interactive=False, elem_id="chat-prompt")
                with gr.Tab("Few-shot") as fewshot:
                    pass
            with gr.Column(scale=1):
                with gr.Accordion("Gates: tanh(alpha_xattn), tanh(alpha_dense) per block", open=True):
                    gates = gr.Markdown(gate_table(slot.model) if slot.model is not None else "", elem_id="gates")
                decoding = _decoding_panel(gr, args)
        with fewshot:
            _fewshot_tab(gr, slot, decoding, status)
        conv_state = gr.State(None)
        box.submit(lambda *a: (yield from _send(slot, *a)), [box, chat, conv_state, *decoding],
                   [chat, conv_state, status, prompt, box])
        clear.click(lambda: ([], None, "", "", None), None, [chat, conv_state, status, prompt, box])
        load.click(lambda name: _load(slot, name), [model_box], [info, gates, chat, conv_state, status])
    app.flamingo_slot = slot  # the served model, for callers embedding the demo
    return app


def launch(args: argparse.Namespace, model=None, block: bool = True):
    """Serve the demo on ``args.host``:``args.port`` (no share link); returns the app (``block=False``: at once,
    the server running in a thread; ``app.close()`` stops it)."""
    app = build_app(args, model)
    app.queue(default_concurrency_limit=1)  # one answer at a time: the model is shared
    try:
        app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
                   mcp_server=False, pwa=False, max_file_size=args.max_upload, show_error=False, quiet=True,
                   prevent_thread_lock=True, footer_links=[])
    except OSError as e:
        reason = first_line(e).split(". ")[0]  # Gradio goes on about its environment variables
        raise UserError(f"cannot serve on {args.host}:{args.port}: {reason} (--port chooses another)") from e
    print(f"Flamingo demo on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app

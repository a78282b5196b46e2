"""The gradio interface: upload an image, type an instruction, see the answer and every mask.

Turns on the same image form one conversation (the image encoding is reused); a new image starts a
new one. All user and model text is escaped before it is shown as HTML; any Unicode is accepted.
"""

from __future__ import annotations

import html
import logging
import shutil
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import ImageError, read_rgb
from ..inference.cache import image_key
from ..inference.pipeline import MAX_PROMPT_CHARS
from ..inference.visualize import PALETTE, overlay_all

log = logging.getLogger("lisa.app")

TITLE = "LISA: reasoning segmentation"
DESCRIPTION = (
    "Upload an image and ask for what you want segmented, e.g. *Can you segment the car in this "
    "image?* or *What can make the woman stand higher? Please output segmentation mask and explain why.* "
    "Every `[SEG]` in the answer gives one mask. Later questions about the same image continue the "
    "conversation; a new image starts a new one.")
CSS = """
.lisa-turn {white-space: pre-wrap; word-break: break-word; margin: 0.3em 0; padding: 0.4em 0.6em;
            border-radius: 6px;}
.lisa-user {background: rgba(100, 120, 255, 0.12);}
.lisa-assistant {background: rgba(120, 120, 120, 0.12);}
"""
KEEP_REQUEST_DIRS = 64


def render_conversation(history: list[tuple[str, str]], label: str = "LISA") -> str:
    """``label``: who answers (the model's kind: "LISA" or "LLaVA")."""
    if not history:
        return "<div class='lisa-conversation'><em>No conversation yet.</em></div>"
    rows = []
    for user, answer in history:
        rows.append(f"<div class='lisa-turn lisa-user'><b>You:</b> {html.escape(user)}</div>")
        rows.append(f"<div class='lisa-turn lisa-assistant'><b>{html.escape(label)}:</b> "
                    f"{html.escape(answer)}</div>")
    return "<div class='lisa-conversation'>" + "".join(rows) + "</div>"


def format_timings(t: dict, cache_hit: bool, n_masks: int) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    per_tok = t["decode"] / t["tokens"] if t.get("tokens") else 0.0
    encode = ("image encoding reused" if cache_hit else
              f"vision tower {ms(t['vision_tower'])} · SAM encoder {ms(t['sam_encoder'])}")
    return (f"**Timing:** {encode} · prefill {ms(t['prefill'])} · decode {t['tokens']} tokens in "
            f"{ms(t['decode'])} ({ms(per_tok)}/token) · mask decode {ms(t['mask_decode'])} · "
            f"**total {ms(t['total'])}** · {n_masks} mask(s)")


class SegmentApp:
    """The request handler behind the UI; a plain object so it can be tested without a browser."""

    def __init__(self, pipe, max_prompt_chars: int = MAX_PROMPT_CHARS, max_new_tokens: int | None = None,
                 work_dir: str | Path | None = None, max_pixels: int = 40_000_000):
        self.pipe = pipe
        self.max_pixels = max_pixels
        self.max_prompt_chars = min(max_prompt_chars, MAX_PROMPT_CHARS)
        self.max_new_tokens = max_new_tokens
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="lisa-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._request_dirs: deque[Path] = deque()
        self.label = getattr(pipe, "kind", "LISA")  # answers are labelled by the model's kind
        self._count = 0

    def check_prompt(self, prompt) -> str | None:
        """A message to show instead of running, or None when the prompt is fine."""
        if prompt is None or not str(prompt).strip():
            return "Type an instruction first."
        if len(prompt) > self.max_prompt_chars:
            return (f"The instruction is too long: {len(prompt)} characters, the limit is "
                    f"{self.max_prompt_chars}. Please shorten it.")
        return None

    def image_array(self, image) -> np.ndarray:
        """The upload as HxWx3 uint8: a file path (what the page sends) is read as every command
        reads images (header checked first, upright, 16-bit scaled); an array is taken as it is."""
        if isinstance(image, (str, Path)):
            return read_rgb(image, self.max_pixels, name=Path(image).name)
        arr = np.asarray(image)
        if arr.shape[0] * arr.shape[1] > self.max_pixels:
            raise ImageError(f"The image has {arr.shape[1]}x{arr.shape[0]} pixels, more than the limit of "
                             f"{self.max_pixels}. Please use a smaller image.")
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)

    def _mask_files(self, masks: list[np.ndarray]) -> list[str]:
        self._count += 1
        out = self.work_dir / f"request_{self._count:06d}"
        out.mkdir(parents=True, exist_ok=True)
        self._request_dirs.append(out)
        while len(self._request_dirs) > KEEP_REQUEST_DIRS:
            shutil.rmtree(self._request_dirs.popleft(), ignore_errors=True)
        files = []
        for i, m in enumerate(masks):
            path = out / f"mask_{i}.png"
            Image.fromarray(m.astype(np.uint8) * 255).save(path)
            files.append(str(path))
        return files

    def respond(self, image, prompt, state):
        """-> overlay, mask files, answer, conversation html, timing markdown, status markdown, state."""
        state = dict(state or {"key": None, "history": []})
        history = list(state.get("history") or [])
        no_change = (None, None, "", render_conversation(history, self.label), "", None, state)

        def refuse(message):
            out = list(no_change)
            out[5] = f"⚠️ {html.escape(message)}"
            return tuple(out)

        if image is None:
            return refuse("Upload an image first.")
        problem = self.check_prompt(prompt)
        if problem:
            return refuse(problem)
        try:
            arr = self.image_array(image)
        except ImageError as e:
            return refuse(str(e))
        key = image_key(arr)
        if key != state.get("key"):
            history = []
        try:
            result = self.pipe(arr, prompt, history=history or None, max_new_tokens=self.max_new_tokens, key=key)
        except ValueError as e:  # the pipeline's refusals (context length, invalid text, ...)
            return refuse(str(e))
        except Exception:  # noqa: BLE001 - logged; the page shows a short message, not a traceback
            log.exception("model error")
            return refuse("The model failed on this request (details are in the server log).")
        masks = result.masks
        history.append((prompt, result.text))
        state = {"key": key, "history": history}
        overlay = overlay_all(arr, masks) if masks else arr
        files = self._mask_files(masks)
        status = "No `[SEG]` in the answer, so no mask." if self.pipe.segments and not masks else ""
        if result.masks_dropped:
            status = (f"{result.masks_dropped} more `[SEG]` in the answer got no mask (at most "
                      f"{self.pipe.max_masks} masks per answer).")
        return (overlay, files or None, result.text, render_conversation(history, self.label),
                format_timings(result.timings, result.cache_hit, len(masks)), status, state)

    @staticmethod
    def reset():
        return None, None, "", render_conversation([]), "", "", {"key": None, "history": []}


def build_ui(app: SegmentApp, examples: list[list[str]] | None = None, title: str = TITLE,
             models: list[str] | None = None, concurrency: int = 1):
    """The page; with ``models`` (a client of a server) a model menu too, and ``app.respond`` takes it."""
    import gradio as gr

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {html.escape(title)}")
        gr.Markdown(DESCRIPTION)
        state = gr.State({"key": None, "history": []})
        with gr.Row():
            with gr.Column():
                # the uploaded file itself (image_mode=None: gradio does not decode it), read by lisa.images
                image = gr.Image(type="filepath", image_mode=None, label="Input image", sources=["upload", "clipboard"],
                                 height=360, elem_id="lisa-image")
                choice = gr.Dropdown(models, value=models[0], label="Model", elem_id="lisa-model") if models else None
                prompt = gr.Textbox(label="Instruction", lines=2, placeholder="Can you segment the ... in this image?",
                                    elem_id="lisa-prompt")
                with gr.Row():
                    submit = gr.Button("Segment", variant="primary", elem_id="lisa-submit")
                    clear = gr.Button("New conversation")
                status = gr.Markdown(label="Status")
                if examples:
                    gr.Examples(examples=examples, inputs=[image, prompt], label="Examples (from the model folder)")
            with gr.Column():
                overlay = gr.Image(type="numpy", label="Masks overlaid", interactive=False, format="png", height=360,
                                   elem_id="lisa-overlay")
                answer = gr.Textbox(label="Answer", interactive=False, lines=2, elem_id="lisa-answer")
                timing = gr.Markdown(label="Timing")
                conversation = gr.HTML(render_conversation([]), label="Conversation")
                files = gr.File(label="Masks (PNG, one per [SEG])", file_count="multiple", interactive=False,
                                height=140)
                colours = " ".join(f"<span style='color:rgb{c}'>&#9632;</span>" for c in PALETTE)
                gr.HTML(f"<small>Mask colours in order: {colours}</small>")

        outputs = [overlay, files, answer, conversation, timing, status, state]
        inputs = [image, prompt, state] if choice is None else [image, prompt, choice, state]
        submit.click(app.respond, inputs, outputs, api_name="segment", concurrency_limit=concurrency)
        prompt.submit(app.respond, inputs, outputs, api_name=False, concurrency_limit=concurrency)
        clear.click(app.reset, None, outputs, api_name="reset")
        image.clear(app.reset, None, outputs, api_name=False)
        image.upload(app.reset, None, outputs, api_name=False)
    return demo

"""``lisa app``: the gradio web demo (same model flags as ``lisa chat``), or with ``--server URL`` a
web front for a running ``lisa serve`` (its models, streamed answers) that loads no model itself."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..inference.request import MAX_PROMPT_CHARS


def build_parser() -> argparse.ArgumentParser:
    from ..inference.flags import add_model_args

    ap = argparse.ArgumentParser(prog="lisa app", description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    ap.add_argument("--max_prompt_chars", type=int, default=MAX_PROMPT_CHARS)
    ap.add_argument("--max_pixels", type=int, default=40_000_000, help="largest image (width x height)")
    ap.add_argument("--max_file_mb", type=float, default=20.0, help="largest upload (MiB)")
    ap.add_argument("--no_examples", action="store_true",
                    help="do not show the example queries of the model folder (examples.json)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    ap.add_argument("--title", default=None, help="page title")
    ap.add_argument("--server", default=None, metavar="URL",
                    help="use the models of this running `lisa serve` instead of loading --version")
    ap.add_argument("--api_key", default=None, help="the server's API key (default: $LISA_API_KEY)")
    ap.add_argument("--concurrency", type=int, default=4, help="with --server: requests sent to it at once")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.max_prompt_chars <= MAX_PROMPT_CHARS:
        print(f"lisa app: --max_prompt_chars must be between 1 and {MAX_PROMPT_CHARS}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import gradio as gr

    from ..inference.examples import model_examples
    from ..inference.flags import load_pipeline
    from .ui import CSS, TITLE, SegmentApp, build_ui

    work = Path(tempfile.mkdtemp(prefix="lisa-app-"))
    if args.server:
        app, models = remote_app(args, work)
        if app is None:
            return 2
        demo = build_ui(app, None, title=args.title or TITLE, models=models, concurrency=args.concurrency)
        demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    else:
        try:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            from ..export import load_merged

            pipe = load_pipeline(args, merged_loader=load_merged)
            examples = None if args.no_examples else model_examples(pipe.model_dir) or None
        except (ValueError, OSError) as e:
            print(f"lisa app: {e}", file=sys.stderr)
            return 2
        if examples:  # served from the app's own folder, the only one it lets the browser read
            (work / "examples").mkdir()
            examples = [[shutil.copy(image, work / "examples"), prompt] for image, prompt in examples]
        app = SegmentApp(pipe, args.max_prompt_chars, args.max_new_tokens, work / "masks", args.max_pixels)
        demo = build_ui(app, examples, title=args.title or TITLE)
        demo.queue(default_concurrency_limit=1, max_size=64)
    # System fonts only: the default theme would fetch web fonts, and the machine may be offline.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, theme=theme, css=CSS,
                ssr_mode=False, allowed_paths=[str(work)], show_error=False, footer_links=["api"],
                max_file_size=int(args.max_file_mb * 1024 * 1024))
    return 0


def remote_app(args, work: Path):
    """The client of ``--server`` and its model names (``None, []`` after an error message)."""
    import httpx

    from .remote import RemoteSegmentApp, list_models

    api_key = args.api_key or os.environ.get("LISA_API_KEY") or None
    try:
        models = list_models(args.server, api_key)
    except (httpx.HTTPError, ValueError, KeyError) as e:
        print(f"lisa app: cannot list the models of {args.server} ({e})", file=sys.stderr)
        return None, []
    if not models:
        print(f"lisa app: {args.server} serves no model", file=sys.stderr)
        return None, []
    app = RemoteSegmentApp(args.server, models, api_key, max_prompt_chars=args.max_prompt_chars,
                           max_new_tokens=args.max_new_tokens, work_dir=work / "masks", max_pixels=args.max_pixels)
    return app, models

"""A small Gradio app over the generate path: a title in, a streamed description out, optionally the base model
beside the fine-tuned one (same prompt, same settings), optionally grounded in the product's record from a tc3-index
(the record retrieved is shown beside the answer, or that nothing matched). The title read out of a question is
shown too.

Private by construction: binds 127.0.0.1 unless told otherwise (`--host`), never creates a share link, Gradio analytics off (set before gradio is
imported, and on the Blocks). The event is exposed as API ``/generate`` (through the queue only) so it can be driven
by ``gradio_client``. What a stranger can make it do when it serves on a network: docs/threat-model.md.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from contextlib import closing

from .errors import UserError, need, one_line
from .generate import GenerationSettings, LoadedModel, Stream, read_as, title_from_query
from .grounding import find, found_text, stream_found
from .user_text import MAX_CHARS, accept

HOST = "127.0.0.1"  # the default host: this machine only
QUEUE_SIZE = 16  # requests waiting for the model at once; one more is refused with gradio's "queue is full"


def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")
    import gradio as gr

    return gr


def describe_fn(loaded: LoadedModel, baseline: LoadedModel | None, settings: GenerationSettings, literal=False,
                index=None):
    """The streaming callback: yields the fine-tuned text so far, the baseline's (when there is one), and what was
    looked up: the title read out of the text and, grounded, the record retrieved. A request the app refuses (a
    text over `tc3.user_text.MAX_CHARS`, a prompt that does not fit the model) raises gradio's Error with the
    one-line reason: the page shows it, an API client receives it."""
    def describe(text: str):
        try:
            yield from _describe(text)
        except UserError as err:
            raise _gradio().Error(one_line(err)) from None

    def _describe(typed: str):
        text = accept(typed or "")  # cleaned as tc3-prep cleaned the training titles
        title = title_from_query(text, literal=literal)
        tuned, base = "", ""

        def state(info: str):
            return (tuned, base, info) if baseline is not None else (tuned, info)

        if not title:
            yield state("")
            return
        found = find(index, text, literal) if index is not None else None  # one lookup serves both models
        info = found_text(found) if found is not None else (read_as(typed, title) or "")

        def pieces(model: LoadedModel):
            stream = Stream(model, title, settings) if found is None else stream_found(model, found, settings)
            return closing(iter(stream))  # closed when the client goes (gradio closes `describe`): the model stops

        with pieces(loaded) as answer:
            for piece in answer:
                tuned += piece
                yield state(info)
        if baseline is not None:
            with pieces(baseline) as answer:
                for piece in answer:
                    base += piece
                    yield state(info)

    return describe


def build_app(loaded: LoadedModel, baseline: LoadedModel | None = None, settings: GenerationSettings | None = None,
              literal: bool = False, index=None):
    """Outputs of ``/generate``: the fine-tuned answer, the base model's (with a baseline), then what was looked up."""
    gr = _gradio()
    settings = settings or GenerationSettings()
    with gr.Blocks(analytics_enabled=False, title="tc3: product descriptions") as app:
        gr.Markdown("## tc3: a product description from its title\n"
                    f"Model: `{loaded.name}`" + (f" — beside the base: `{baseline.name}`" if baseline else "")
                    + ("\n\nGrounded: the product is looked up in the index and its record rewritten as the answer."
                       if index is not None else ""))
        title = gr.Textbox(label="Product title (or a question: What is 'X' about?)", lines=1, max_length=MAX_CHARS)
        button = gr.Button("Generate", variant="primary")
        with gr.Row():
            tuned = gr.Textbox(label="Fine-tuned", lines=10)
            outputs = [tuned]
            if baseline is not None:
                outputs.append(gr.Textbox(label="Base model", lines=10))
        outputs.append(gr.Textbox(label="Record retrieved" if index is not None else "Title asked about", lines=3))
        fn = describe_fn(loaded, baseline, settings, literal, index)
        button.click(fn, inputs=title, outputs=outputs, api_name="generate")
        title.submit(fn, inputs=title, outputs=outputs, api_name=False)
    # One answer at a time, in arrival order, at most QUEUE_SIZE waiting (then "queue full"); api_open=False: no
    # POST route around the queue (gradio opens one by default, where each call would run beside the others).
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE, api_open=False)
    return app


def check_can_serve(port: int, host: str = HOST) -> None:
    """Checked before any model loads: gradio is installed and `port` on `host` is free (UserError if not)."""
    need("demo", "gradio")
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, not {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot serve on {host} port {port} ({err.strerror}); choose another --port or "
                            "--host") from None


def launch(app, port: int | None = None, block: bool = True, host: str = HOST) -> str:
    """Serve on `host` (127.0.0.1: this machine only), no share link, Gradio's own start-up advice silenced.
    Returns the local URL; with `block`, first says in one line where the page is and serves until Ctrl-C."""
    # max_file_size: the page takes no file, so gradio's upload route (always there) takes none of any size
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                           footer_links=["api"], max_file_size=0)
    if not block:
        return url
    try:  # from here on, Ctrl-C at any point closes the server (its threads would keep the process alive)
        print(f"tc3-demo: serving on {url} (Ctrl-C stops it)", file=sys.stderr)
        if host != HOST:
            print(f"tc3-demo: listening on {host}: anyone who can reach this machine can use the page (no login)",
                  file=sys.stderr)
        threading.Event().wait()  # until Ctrl-C (Gradio's block_thread prints its own farewell)
    finally:
        app.close()
    return url

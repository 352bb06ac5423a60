"""tc3-demo, headless: the Gradio app served on 127.0.0.1 with the tiny model, driven through gradio_client."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_streams_the_same_answer_as_generate_side_by_side(tiny_model_dir):
    from gradio_client import Client
    from tc3.demo import build_app, launch
    from tc3.generate import GenerationSettings, generate_one, load_model

    settings = GenerationSettings(max_new_tokens=6)
    tuned = load_model(str(tiny_model_dir), device="cpu")
    baseline = load_model(str(tiny_model_dir), device="cpu")
    app = build_app(tuned, baseline, settings)
    assert app.analytics_enabled is False
    url = launch(app, port=_free_port(), block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert app.share is False or app.share is None
        assert app.share_url is None
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        job = client.submit("What is 'Sunflower' about?", api_name="/generate")
        final = job.result(timeout=60)
        updates = job.outputs()
        expected = generate_one(tuned, "Sunflower", settings).description
        # fine-tuned, then base (here the same model), then the title read out of the question
        assert list(final) == [expected, expected, '(read as the title "Sunflower")']
        assert len(updates) > 2  # streamed: partial answers came before the final one
        assert updates[0][0] != expected or updates[0][1] == ""
        assert all(not u[0] or expected.startswith(u[0].strip()) for u in updates)
        assert client.predict("Sunflower", api_name="/generate")[2] == ""  # a plain title: nothing to show
    finally:
        app.close()

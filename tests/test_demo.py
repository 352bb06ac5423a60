"""tc3-demo, headless: the Gradio app served on 127.0.0.1 with the tiny model, driven through gradio_client."""

from __future__ import annotations

import socket

import pytest
from conftest import generation_threads

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


def _first_output_s(client, text: str, timeout: float = 30.0):
    """(seconds until the first streamed output of /generate for `text`, the job)."""
    import time

    began = time.perf_counter()
    job = client.submit(text, api_name="/generate")
    while not job.outputs():
        assert not job.done() or job.outputs(), job.exception()
        assert time.perf_counter() - began < timeout
        time.sleep(0.005)
    return time.perf_counter() - began, job


def _abandon_a_stream(url: str, text: str) -> None:
    """Plain HTTP, as a closed tab or a dropped connection: join the queue with `text`, read the event stream until
    the answer is being generated, then close the connection without a word."""
    import http.client
    import json
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/config")
    fn = next(d["id"] for d in json.loads(conn.getresponse().read())["dependencies"] if d.get("api_name") == "generate")
    body = {"data": [text], "fn_index": fn, "session_hash": "abandoned1", "event_data": None, "trigger_id": None}
    conn.request("POST", "/gradio_api/queue/join", json.dumps(body), {"Content-Type": "application/json"})
    assert conn.getresponse().status == 200
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    stream.request("GET", "/gradio_api/queue/data?session_hash=abandoned1")
    events = stream.getresponse()
    while b"process_generating" not in events.fp.readline():
        pass
    stream.sock.shutdown(socket.SHUT_RDWR)
    stream.close()
    conn.close()


def _gone_within(seconds: float) -> bool:
    """Whether every streamed answer's thread ends within `seconds`."""
    import time

    began = time.perf_counter()
    while generation_threads() and time.perf_counter() - began < seconds:
        time.sleep(0.01)
    return not generation_threads()


def test_no_request_stalls_the_demo_for_another_client(tiny_model_dir):
    """Issue 26.4: a huge question is refused at once with one clear message; a cancelled stream, and one whose
    client goes without a word, stop generating (their thread is gone) instead of running to max_new_tokens beside
    the next answer; meanwhile another client's page loads and its answer starts within a second. No route runs the model around the queue, and the page takes
    no uploads."""
    import time
    import urllib.error
    import urllib.request

    from gradio_client import Client
    from tc3.demo import build_app, launch
    from tc3.generate import GenerationSettings, load_model

    # without a repetition penalty the tiny model writes about 1,100 tokens (seconds) before an end token
    settings = GenerationSettings(max_new_tokens=1500, repetition_penalty=1.0)
    app = build_app(load_model(str(tiny_model_dir), device="cpu"), None, settings)
    url = launch(app, port=_free_port(), block=False)

    def page_load_s() -> float:
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"tc3" in page.read()
        return time.perf_counter() - began

    try:
        stranger = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        other = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        text = "What is '" + "x " * 50_000 + "' about?"
        huge = stranger.submit(text, api_name="/generate")
        assert page_load_s() < 1.0
        with pytest.raises(Exception, match=f"{len(text):,} characters long; a title or question may have at most"):
            huge.result(timeout=10)

        started, abandoned = _first_output_s(stranger, "Sunflower")
        assert page_load_s() < 1.0
        abandoned.cancel()
        assert _gone_within(1.0), "the cancelled answer is still being generated"
        started, answer = _first_output_s(other, "Sunflower")
        assert started < 1.0
        assert page_load_s() < 1.0
        answer.cancel()
        assert _gone_within(1.0)

        _abandon_a_stream(url, "Sunflower")  # the client goes without cancelling
        assert _gone_within(1.0), "the abandoned answer is still being generated"
        started, answer = _first_output_s(other, "Sunflower")
        assert started < 1.0
        answer.cancel()

        around = urllib.request.Request(url + "gradio_api/api/generate/", data=b'{"data": ["Sunflower"]}',
                                        headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(around, timeout=10)
        assert refused.value.code == 404
        upload = urllib.request.Request(
            url + "gradio_api/upload", headers={"Content-Type": "multipart/form-data; boundary=x"},
            data=b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nhello\r\n--x--\r\n')
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(upload, timeout=10)
        assert refused.value.code == 413
    finally:
        app.close()

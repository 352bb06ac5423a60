"""tc3-demo as a person sees it: `tc3-demo` serves its page on 127.0.0.1, headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) types a title, clicks Generate, waits for the streamed answer and saves a
screenshot. Skips, saying why, where Chromium or its driver is missing.

Also a script for the README's screenshot: python tests/test_demo_browser.py MODEL_DIR TITLE OUT.png [--base BASE]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: str, port: int, *extra: str) -> subprocess.Popen:
    """`tc3-demo MODEL --port PORT` in a child process; returns once the page answers."""
    import urllib.request

    env = child_env()
    command = [sys.executable, "-m", "tc3.cli.demo", "--model", model, "--port", str(port), "--device", "cpu", *extra]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tc3-demo exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("tc3-demo did not serve its page within 180 s")


def ask_in_browser(url: str, title: str, screenshot: Path, timeout: float = 120) -> str:
    """Open `url` in headless Chromium, type `title`, press Generate, wait until the fine-tuned answer has stopped
    growing (streamed) and the button is usable again; save a screenshot; return the answer as shown."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        boxes = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "textarea, input[type=text]"))
        boxes[0].send_keys(title)
        next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Generate").click()
        answer_box = boxes[1] if len(boxes) > 1 else wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "textarea")[1])
        seen: list[str] = []

        def settled(_):
            seen.append(answer_box.get_attribute("value") or "")
            busy = driver.find_elements(By.CSS_SELECTOR, ".generating, .pending")
            return len(seen) > 3 and seen[-1] and seen[-1] == seen[-2] == seen[-3] and not busy

        wait.until(settled)
        driver.save_screenshot(str(screenshot))
        return seen[-1]
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="needs Chromium and its driver: apt-get install chromium chromium-driver")
def test_demo_page_answers_a_typed_title_in_chromium(tiny_model_dir, tmp_path):
    pytest.importorskip("selenium")
    from tc3.generate import GenerationSettings, generate_one, load_model

    title = "Girls Ballet Tutu Neon Pink"
    port = free_port()
    proc = serve(str(tiny_model_dir), port, "--max-new-tokens", "12")
    try:
        shown = ask_in_browser(f"http://127.0.0.1:{port}/", title, tmp_path / "demo.png")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    expected = generate_one(load_model(str(tiny_model_dir), device="cpu"), title,
                            GenerationSettings(max_new_tokens=12)).description
    assert shown.strip() == expected.strip() and expected.strip()
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


if __name__ == "__main__":
    model, title, out, *rest = sys.argv[1:]
    port = free_port()
    demo = serve(model, port, *rest)
    try:
        print(ask_in_browser(f"http://127.0.0.1:{port}/", title, Path(out)))
    finally:
        demo.terminate()

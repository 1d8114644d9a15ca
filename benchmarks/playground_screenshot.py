"""Take the README's playground screenshot (docs/playground.png) from a real `lmforge serve`.

    python benchmarks/playground_screenshot.py --checkpoint runs/shakespeare
    python benchmarks/playground_screenshot.py --train-seconds 900   # trains one first (tiny Shakespeare)

Starts `lmforge serve --port 0` on the run, drives headless Debian chromium through Playwright's
Python client (`apt-get install -y chromium`, `pip install playwright`; Playwright's own browser
download is not needed), samples a continuation of the prompt with a fixed seed, hovers a token
whose alternatives are worth seeing, and saves a 1280-pixel-wide screenshot. Without --checkpoint it
prepares tiny Shakespeare at character level (the copy in ../shared/data when there is one,
else the corpus by name, downloaded once) and pretrains gpt-nano for --train-seconds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def lmforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lmforge", *args], check=True)


def train(workdir: Path, seconds: int) -> Path:
    """A gpt-nano run on tiny Shakespeare, characters as tokens, trained for ``seconds``."""
    local = SHARED_DATA / "tinyshakespeare.txt"
    source = str(local) if local.is_file() else "tinyshakespeare"
    data, run = workdir / "shakespeare-char", workdir / "shakespeare"
    lmforge("prepare", "--data", source, "--tokenizer", "char", "--out", str(data))
    lmforge(
        "pretrain", "--data", str(data), "--out", str(run), "--max-time", str(seconds), "--block-size", "256"
    )
    return run


class Server:
    """`lmforge serve --port 0` in a subprocess; ``url`` once it has printed where it listens."""

    def __init__(self, checkpoint: Path) -> None:
        command = [sys.executable, "-m", "lmforge", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.found = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self.found.wait(180) or not self.url:
            self.process.kill()
            raise SystemExit("lmforge serve did not print its address")
        for _ in range(600):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # drained to the end so the server never blocks on the pipe
            print("serve:", line.rstrip())
            match = re.search(r"http://[^\s/]+", line)
            if match and not self.url:
                self.url = match.group(0)
                self.found.set()
        self.found.set()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def screenshot(
    url: str, out: Path, prompt: str, max_tokens: int, seed: int, temperature: float, height: int
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": height})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent !== 'connecting…'")
        page.get_by_label("Sample").check()
        for element, value in (("temperature", temperature), ("maxTokens", max_tokens), ("topK", 0)):
            page.eval_on_selector(
                f"#{element}",
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                value,
            )
        page.fill("#seed", str(seed))
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_function(
            "!document.getElementById('send').disabled && "
            "(document.getElementById('usage').dataset.completionTokens !== undefined || "
            " document.getElementById('error').textContent !== '')",
            timeout=300_000,
        )
        if page.text_content("#error"):
            raise SystemExit(f"the server refused: {page.text_content('#error')}")
        # hover an uncertain token in the middle third: its tooltip shows a real choice
        probabilities = page.eval_on_selector_all("#output .tok", "els => els.map(e => +e.dataset.p)")
        third = len(probabilities) // 3
        middle = range(third, max(third + 1, 2 * third))
        index = min(middle, key=lambda i: abs(probabilities[i] - 0.35))
        page.hover(f"#output .tok >> nth={index}")
        page.wait_for_selector("#tip:not([hidden])")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        print(f"{len(probabilities)} tokens; hovered #{index} (p={probabilities[index]:.2f}); wrote {out}")
        print(page.text_content("#usage"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="a run to serve (default: train one)")
    parser.add_argument("--train-seconds", type=int, default=900)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "playground.png")
    parser.add_argument("--prompt", default="ROMEO:\nGood morrow, cousin.\n\nBENVOLIO:\n")
    parser.add_argument("--max-tokens", type=int, default=210)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    # a 256-character context fills half of an 800-pixel-high window: the picture is cut shorter
    parser.add_argument("--height", type=int, default=660, help="the window's height in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        checkpoint = args.checkpoint or train(Path(workdir), args.train_seconds)
        server = Server(checkpoint)
        try:
            screenshot(
                server.url, args.out, args.prompt, args.max_tokens, args.seed, args.temperature, args.height
            )
        finally:
            server.close()


if __name__ == "__main__":
    main()

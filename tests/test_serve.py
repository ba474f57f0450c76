"""`lit-gpt serve` through the real openai client: completions and chat, streamed and not, temperature 0 equal to
`lit-gpt generate --temperature 0`, OpenAI's error body for bad requests, and a server that keeps serving."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from lit_gpt.chat import CHATML, ChatTemplate
from lit_gpt.checkpoint import save_folder
from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

for _module in ("fastapi", "uvicorn", "openai"):
    pytest.importorskip(_module, reason=f'{_module} is not installed: pip install -e ".[serve]"')

import openai  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 256
PROMPT = "Once upon a time"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lit-gpt serve`` in a subprocess on 127.0.0.1 and a free port; ``close`` stops it."""

    def __init__(self, checkpoint: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--checkpoint", checkpoint, "--port", self.port, "--model_name", "tiny", *flags]
        command = [sys.executable, "-m", "lit_gpt.cli", *map(str, args)]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                if get(self.url + "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise AssertionError("the server did not start")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, json.loads(response.read())


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, byte_encoding_module) -> Path:
    """A random tiny Llama with a byte-level BPE (ChatML's markers are plain text to it), as an exported folder."""
    torch.manual_seed(0)
    model = GPT(Config(vocab_size=257, block_size=BLOCK_SIZE, n_layer=2, n_head=4, n_embd=48))
    folder = tmp_path_factory.mktemp("serve") / "tiny"
    save_folder(model, Tokenizer(encoding=byte_encoding_module, bpe=True), folder)
    return folder


@pytest.fixture(scope="module")
def byte_encoding_module():
    import tiktoken

    return tiktoken.Encoding(
        name="bytes",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )


@pytest.fixture(scope="module")
def server(checkpoint):
    server = Server(checkpoint, "--max_batch_size", "8")
    yield server
    server.close()


def test_temperature_zero_completion_equals_generate(server, checkpoint, run_main):
    flags = ["--prompt", PROMPT, "--temperature", "0", "--max_new_tokens", "40"]
    code, out, err = run_main("generate", "--checkpoint", checkpoint, *flags)
    assert code == 0, err
    want = out[len(PROMPT) : -1]  # generate prints the prompt, the continuation and a newline
    reply = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0)
    assert reply.choices[0].text == want
    assert reply.object == "text_completion" and reply.model == "tiny"
    assert reply.usage.prompt_tokens == len(PROMPT.encode())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == ("length" if reply.usage.completion_tokens == 40 else "stop")
    streamed = server.client().completions.create(
        model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_chat_streamed_and_not_give_the_same_answer_in_chatml(server, checkpoint, byte_encoding_module):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
    client = server.client()
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    template = ChatTemplate(Tokenizer(encoding=byte_encoding_module, bpe=True))
    assert reply.usage.prompt_tokens == len(template.encode(messages, add_generation_prompt=True))
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_n_seed_stop_and_models(server):
    client = server.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=24, temperature=1.0, seed=3, extra_body={"top_k": 40})
    one = client.completions.create(n=3, **kwargs)
    again = client.completions.create(n=3, **kwargs)
    assert [c.index for c in one.choices] == [0, 1, 2]
    assert [c.text for c in one.choices] == [c.text for c in again.choices]  # seeded: reproducible
    alone = client.completions.create(**kwargs).choices[0].text
    stop = next(ch for ch in alone if ch.isascii() and ch.isalnum())  # the random model writes arbitrary bytes
    cut = client.completions.create(stop=[stop, "never written"], **kwargs).choices[0]
    assert cut.text == alone[: alone.index(stop)] and cut.finish_reason == "stop"


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "tiny"}, 400, "prompt"),
    ({"prompt": "hi"}, 400, "model"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": -5}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": 10**9}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "x" * (BLOCK_SIZE + 5), "max_tokens": 4}, 400, "prompt"),
    ({"model": "tiny", "prompt": "hi", "temperature": -0.5}, 400, "temperature"),
    ({"model": "tiny", "prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ({"model": "tiny", "prompt": "hi", "n": 1000}, 400, "n"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "gpt-4", "prompt": "hi"}, 404, "model"),
]


@pytest.mark.parametrize("body, status, param", BAD)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, body, status, param):
    code, reply = post(server.url + "/v1/completions", body)
    assert code == status
    assert set(reply["error"]) == {"message", "type", "param", "code"} and reply["error"]["message"]
    assert reply["error"]["param"] == param
    chat_body = body if isinstance(body, bytes) else {k: v for k, v in body.items() if k != "prompt"}
    if not isinstance(body, bytes) and "prompt" in body:
        chat_body["messages"] = [{"role": "user", "content": body["prompt"]}]
    code, reply = post(server.url + "/v1/chat/completions", chat_body)
    assert 400 <= code < 500 and "message" in reply["error"]
    assert get(server.url + "/health")[0] == 200


def test_the_openai_client_raises_on_a_bad_request(server):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        server.client().completions.create(model="tiny", prompt=PROMPT, temperature=-1)
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="other", prompt=PROMPT)
    code, reply = post(server.url + "/v1/nowhere", {})
    assert code == 404 and reply["error"]["type"] == "not_found_error"


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": BLOCK_SIZE - 20, "temperature": 0, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.close()  # mid-stream
    for _ in range(300):
        if get(server.url + "/health")[1]["pending"] == 0:
            break
        time.sleep(0.1)
    assert get(server.url + "/health")[1]["pending"] == 0
    reply = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=0)
    assert reply.usage.completion_tokens >= 1


def test_a_hundred_simultaneous_requests_all_complete(server):
    client, results, errors = server.client(), [], []

    def one(i: int) -> None:
        try:
            stream = i % 2 == 0
            prompt = f"{PROMPT} {i}"
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stream=stream)
            results.append("".join(c.choices[0].text for c in reply) if stream else reply.choices[0].text)
        except Exception as err:  # noqa: BLE001 - collected and reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and len(results) == 100
    assert get(server.url + "/health")[1]["pending"] == 0


@pytest.mark.slow
def test_memory_does_not_grow_with_requests(checkpoint):
    server = Server(checkpoint, "--max_batch_size", "8")
    try:
        client = server.client()

        def burst(count: int) -> None:
            for i in range(count):
                stream = i % 3 == 0
                prompt = f"{i}: {PROMPT}"
                reply = client.completions.create(
                    model="tiny", prompt=prompt, max_tokens=6, temperature=0.7, stream=stream
                )
                if stream:
                    list(reply)

        burst(100)
        after_100 = server.rss_kib()
        burst(900)
        after_1000 = server.rss_kib()
        assert after_1000 <= 1.10 * after_100, (after_100, after_1000)
    finally:
        server.close()


def test_the_playground_is_served_at_the_root(server):
    with urllib.request.urlopen(server.url + "/", timeout=30) as response:
        page = response.read().decode()
    assert response.headers["content-type"].startswith("text/html")
    assert "/v1/completions" in page and "/v1/chat/completions" in page and 'id="send"' in page


def headless_chromium():
    """A Selenium driver of headless Chromium, or a skip naming what to install."""
    webdriver = pytest.importorskip("selenium.webdriver", reason='selenium is not installed: pip install -e ".[test]"')
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium or chromedriver is not installed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_the_playground_streams_an_answer_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    text_of = lambda element_id: driver.execute_script(f"return document.getElementById('{element_id}').textContent")
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(server.url + "/")
        wait.until(lambda d: text_of("model") == "tiny")
        driver.execute_script(
            "document.getElementById('temperature').value = '0';"
            "document.getElementById('max_tokens').value = '24';"
            f"document.getElementById('prompt').value = {json.dumps(PROMPT)};"
        )
        driver.execute_script(
            "window.updates = 0; new MutationObserver(() => window.updates++).observe("
            "document.getElementById('output'), {childList: true, characterData: true, subtree: true});"
        )
        driver.find_element("id", "send").click()
        wait.until(lambda d: text_of("status").startswith("done"))
        assert driver.execute_script("return window.updates") > 2  # the text arrived in pieces, as streamed
        want = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0)
        assert text_of("output") == want.choices[0].text
        assert text_of("status") == f"done ({want.choices[0].finish_reason})"

        driver.execute_script("document.getElementById('mode').value = 'chat';")
        driver.find_element("id", "send").click()
        wait.until(lambda d: text_of("status").startswith("done"))
        messages = [{"role": "user", "content": PROMPT}]
        want = server.client().chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
        assert text_of("output") == want.choices[0].message.content
        turns = driver.execute_script(
            "return [...document.querySelectorAll('#history .turn b')].map(b => b.textContent)"
        )
        assert turns == ["user", "assistant"]
        assert driver.save_screenshot(str(tmp_path / "playground.png"))
    finally:
        driver.quit()


@pytest.mark.parametrize(
    "flags, message",
    [(["--max_batch_size", "0"], "--max_batch_size must be >= 1"), (["--port", "70000"], "--port must be in")],
)
def test_bad_serve_flags_are_one_error_line(checkpoint, run_main, errors, flags, message):
    code, _, err = run_main("serve", "--checkpoint", checkpoint, *flags)
    lines = errors(err)
    assert code == 2 and len(lines) == 1 and message in lines[0]


def test_chat_uses_the_checkpoint_template_and_its_end_of_turn(hf_folder):
    from lit_gpt.engine import Engine
    from lit_gpt.serve.app import Service
    from lit_gpt.serve.protocol import parse

    tokenizer = Tokenizer.from_name(str(hf_folder("qwen2")))
    assert tokenizer.chat_template
    model = GPT(Config(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16))
    service = Service(Engine(model, max_batch_size=2), tokenizer, "qwen")
    messages = [{"role": "user", "content": "Hello there"}]
    body = json.dumps({"model": "qwen", "messages": messages}).encode()
    ids, stop_ids, stops = service.encode(parse(body, chat=True, max_n=2))
    assert ids == ChatTemplate(tokenizer, tokenizer.chat_template).encode(messages, add_generation_prompt=True)
    assert tokenizer.decode(ids) != ChatTemplate(tokenizer, CHATML).render(messages, add_generation_prompt=True)
    assert tokenizer.encode("<|im_end|>", allow_special=True)[0] in stop_ids and stops == []

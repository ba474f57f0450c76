"""Load test of ``lit-gpt serve`` on localhost through the real ``openai`` client, in the terms of ``vllm bench serve``.

    python bench/serve_load.py --checkpoint runs/tinystories/checkpoints/last.ckpt
    python bench/serve_load.py --preset tiny --requests 8 --max_tokens 16 --concurrency 1,4   # a quick check

The model (a checkpoint, or a preset with random weights and GPT-2's tokenizer) is exported once as a Hugging Face
folder (``lit_gpt.checkpoint.save_hf``), and that one folder is served and timed everywhere:

1. ``lit-gpt serve`` starts in a subprocess (``--max_batch_size`` the largest concurrency). For each concurrency
   (1, 4 and 16 by default), ``--requests`` streamed completions (default 4 per client, at least 8) are sent by that
   many client threads, each request keeping its client busy until its last event. Every request asks for
   ``--max_tokens`` tokens with ``ignore_eos`` (so every answer has the same length) at ``--temperature``, from a
   prompt of ``--prompt_length`` random token ids, different per request. Reported: TTFT (send to first token),
   TPOT ((last - first token time) / (output tokens - 1), per request) and ITL (every gap between streamed events) at
   p50 and p99 in milliseconds, requests/s and output tokens/s over the level's wall time, and errors.
2. Single stream: the server at concurrency 1, greedy, beside ``lit_gpt.generate.iter_tokens`` (what
   ``lit-gpt generate`` runs) and transformers' ``generate``, each in its own process on the same folder and prompt
   (``bench/generate_throughput.py``'s contenders): time to first token and decode tokens/s, and whether the
   server's text equals lit_gpt's greedy tokens decoded.

Needs the ``serve`` extra (fastapi, uvicorn, openai) and, for the transformers row, transformers.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated (numpy's default); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class ServerProcess:
    """``lit-gpt serve`` on 127.0.0.1 and a free port, until ``close``."""

    def __init__(self, folder: str, max_batch_size: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "lit_gpt.cli", "serve", "--checkpoint", folder, "--port", str(self.port)]
        command += ["--max_batch_size", str(max_batch_size), "--model_name", "bench", "--device", "cpu"]
        self.process = subprocess.Popen(command, cwd=REPO)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"lit-gpt serve exited with status {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5).read()
                return
            except OSError:
                time.sleep(0.3)
        self.close()
        raise SystemExit("lit-gpt serve did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def one_request(client, prompt: list[int], args: argparse.Namespace, seed: int) -> dict:
    """Send one streamed completion; returns its send time, event times and output tokens (or its error)."""
    sent = time.perf_counter()
    times, text = [], ""
    try:
        stream = client.completions.create(
            model="bench",
            prompt=prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        tokens = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                times.append(time.perf_counter())
                text += chunk.choices[0].text
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return {"sent": sent, "times": times, "tokens": tokens, "text": text, "error": None}
    except Exception as err:  # counted and reported
        return {"sent": sent, "times": times, "tokens": 0, "text": text, "error": repr(err)[:200]}


def run_level(url: str, prompts: list[list[int]], concurrency: int, args: argparse.Namespace) -> dict:
    """Send ``prompts`` with ``concurrency`` client threads; the figures of the level."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    results, lock, queue = [], threading.Lock(), list(enumerate(prompts))

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, prompt = queue.pop(0)
            result = one_request(client, prompt, args, seed=i)
            with lock:
                results.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in results if r["error"] is None and r["times"]]
    ttft = [1000 * (r["times"][0] - r["sent"]) for r in ok]
    tpot = [1000 * (r["times"][-1] - r["times"][0]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    itl = [1000 * (b - a) for r in ok for a, b in zip(r["times"], r["times"][1:])]
    out_tokens = sum(r["tokens"] for r in ok)
    errors = [r["error"] for r in results if r["error"] is not None]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "first_error": errors[0] if errors else None,
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "output_tokens_per_s": out_tokens / wall,
        **{f"ttft_p{q}_ms": percentile(ttft, q) for q in (50, 99)},
        **{f"tpot_p{q}_ms": percentile(tpot, q) for q in (50, 99)},
        **{f"itl_p{q}_ms": percentile(itl, q) for q in (50, 99)},
    }


def single_stream(folder: str, url: str, prompt: list[int], args: argparse.Namespace, vocab_size: int) -> list[dict]:
    """Greedy single-stream figures of the server, lit_gpt's ``iter_tokens`` and transformers' ``generate``."""
    import openai

    from lit_gpt.checkpoint import load_tokenizer

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    greedy = argparse.Namespace(**{**vars(args), "temperature": 0.0})
    runs = [one_request(client, prompt, greedy, seed=0) for _ in range(3)]
    best = min(runs, key=lambda r: r["times"][-1] - r["sent"])
    rows = [
        {
            "contender": "lit-gpt serve",
            "ttft_ms": 1000 * (best["times"][0] - best["sent"]),
            "decode_tokens_per_s": (best["tokens"] - 1) / (best["times"][-1] - best["times"][0]),
        }
    ]
    text = best["text"]
    for name in args.single_stream.split(","):
        command = [sys.executable, str(REPO / "bench" / "generate_throughput.py"), "--_run", name, "--_folder", folder]
        command += ["--batch_size", "1", "--prompt_length", str(args.prompt_length)]
        command += ["--new_tokens", str(args.max_tokens), "--_vocab_size", str(vocab_size)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            rows.append({"contender": name, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        same = load_tokenizer(folder).decode(result["ids"][0]) == text
        rows.append(
            {
                "contender": {"lit_gpt": "lit_gpt iter_tokens (lit-gpt generate)", "hf": "transformers generate"}.get(
                    name, name
                ),
                "ttft_ms": 1000 * args.prompt_length / result["prefill_tokens_per_s"],
                "decode_tokens_per_s": result["decode_tokens_per_s"],
                "same_text_as_server": same,
            }
        )
    return rows


def export(args: argparse.Namespace, out_dir: str) -> tuple[str, int]:
    """The model of ``--checkpoint`` or ``--preset`` as a Hugging Face folder; returns it and the vocabulary size."""
    from lit_gpt.checkpoint import load_checkpoint, save_hf
    from lit_gpt.config import Config
    from lit_gpt.model import GPT
    from lit_gpt.tokenizer import Tokenizer

    if args.checkpoint:
        model, tokenizer = load_checkpoint(args.checkpoint)
        what = args.checkpoint
    else:
        torch.manual_seed(0)
        tokenizer = Tokenizer.from_name("gpt2")
        model = GPT(Config.from_name(args.preset, vocab_size=tokenizer.vocab_size))
        what = f"preset {args.preset} (random weights)"
    architecture = save_hf(model, tokenizer, out_dir)
    print(f"model: {what}, {model.num_params():,} parameters, block_size {model.config.block_size}, as {architecture}")
    return out_dir, tokenizer.vocab_size


def print_tables(levels: list[dict], single: list[dict]) -> None:
    header = "concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL"
    print(f"\n| {header} p50 / p99 ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in levels:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.2f} | "
            f"{r['output_tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
            f"{r['tpot_p50_ms']:.1f} / {r['tpot_p99_ms']:.1f} | {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} |"
        )
        if r["first_error"]:
            print(f"  first error at concurrency {r['concurrency']}: {r['first_error']}")
    base = levels[0]["output_tokens_per_s"]
    for r in levels[1:]:
        ratio = r["output_tokens_per_s"] / base
        print(f"output tokens/s at concurrency {r['concurrency']}: {ratio:.2f}x that at {levels[0]['concurrency']}")
    if single:
        print("\n| single stream, greedy | TTFT ms | decode tokens/s | same text as the server |")
        print("| --- | ---: | ---: | --- |")
        for r in single:
            if "error" in r:
                print(f"| {r['contender']} | failed: {r['error']} | | |")
                continue
            same = r.get("same_text_as_server", "")
            print(f"| {r['contender']} | {r['ttft_ms']:.1f} | {r['decode_tokens_per_s']:.1f} | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="any form lit-gpt generate reads")
    source.add_argument("--preset", default="tiny", help="a lit_gpt.config preset, random weights, GPT-2 tokenizer")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default max(8, 4 * clients))")
    parser.add_argument("--max_tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--prompt_length", type=int, default=32, help="prompt tokens per request")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--single_stream", default="lit_gpt,hf", help="contenders beside the server ('' for none)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder, vocab_size = export(args, str(Path(tmp) / "hf"))
        cpu = torch.backends.cpu.get_cpu_capability()
        print(f"{args.prompt_length} prompt tokens, {args.max_tokens} output tokens per request, temperature ", end="")
        print(f"{args.temperature}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {cpu}")
        generator = torch.Generator().manual_seed(0)
        server = ServerProcess(folder, max(levels))
        try:
            warm = [torch.randint(0, vocab_size, (args.prompt_length,), generator=generator).tolist() for _ in range(2)]
            run_level(server.url, warm, 2, args)
            results = []
            for c in levels:
                count = args.requests or max(8, 4 * c)
                shape = (count, args.prompt_length)
                prompts = torch.randint(0, vocab_size, shape, generator=generator).tolist()
                results.append(run_level(server.url, prompts, c, args))
            single = []
            if args.single_stream:
                prompt = torch.randint(0, vocab_size, (args.prompt_length,), generator=torch.Generator().manual_seed(0))
                single = single_stream(folder, server.url, prompt.tolist(), args, vocab_size)
        finally:
            server.close()
    print_tables(results, single)
    if args.out:
        Path(args.out).write_text(json.dumps({"levels": results, "single_stream": single}, indent=2))


if __name__ == "__main__":
    main()

"""The lm-evaluation-harness adapter on the local tasks of tests/lm_eval_tasks (no downloads): each kind of request
(loglikelihood, rolling loglikelihood, generation) against the same computation done with lit_gpt directly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lit_gpt.checkpoint import save_folder
from lit_gpt.config import Config
from lit_gpt.evaluate import evaluate_documents
from lit_gpt.generate import generate
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

pytest.importorskip("lm_eval", reason="the lm-eval adapter needs lm-eval: pip install -e '.[eval]'")
pytestmark = pytest.mark.slow  # lm-eval's task manager and its datasets take seconds to start

TASKS = Path(__file__).parent / "lm_eval_tasks"
NAMES = ["lit_gpt_choice", "lit_gpt_rolling", "lit_gpt_generate"]


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def _offline_datasets():
    """Hugging Face ``datasets`` (which lm-eval uses) never reaches for the Hub here: the tasks read local files."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def model_and_tokenizer() -> tuple[GPT, Tokenizer]:
    """A small random model over the characters of the task files (block 64: the passages need several windows)."""
    texts = [
        json.dumps(row)
        for name in ("shakespeare_choice.jsonl", "shakespeare_text.jsonl", "shakespeare_prompts.jsonl")
        for row in rows(name)
    ]
    tokenizer = Tokenizer.char(texts + ["\n"])
    torch.manual_seed(0)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def harness(model_and_tokenizer) -> dict:
    """lm-eval's simple_evaluate over the three local tasks, with every sample logged."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lit_gpt.lm_eval_adapter import LitGPTLM

    lm = LitGPTLM(*model_and_tokenizer, batch_size=3)
    manager = TaskManager(include_path=str(TASKS))
    return lm_eval.simple_evaluate(model=lm, tasks=NAMES, task_manager=manager, log_samples=True)


def logprob(model: GPT, tokenizer: Tokenizer, context: str, continuation: str) -> float:
    ids = tokenizer.encode(context + continuation)
    n = len(tokenizer.encode(continuation))
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0, -n:].float().log_softmax(-1)
    return logits.gather(-1, torch.tensor(ids[-n:])[:, None]).sum().item()


def test_multiple_choice_scores_each_choice_after_its_context(harness, model_and_tokenizer):
    questions = rows("shakespeare_choice.jsonl")
    correct = 0
    for sample in harness["samples"]["lit_gpt_choice"]:
        doc = sample["doc"]
        ours = [logprob(*model_and_tokenizer, doc["context"], choice) for choice in doc["choices"]]
        theirs = [response[0] for response in sample["filtered_resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        correct += max(range(len(ours)), key=ours.__getitem__) == doc["label"]
    assert harness["results"]["lit_gpt_choice"]["acc,none"] == pytest.approx(correct / len(questions))


def test_rolling_bits_per_byte_equals_lit_gpt_evaluate(harness, model_and_tokenizer):
    passages = [row["text"] for row in rows("shakespeare_text.jsonl")]
    nll, n_bytes = 0.0, 0
    for passage in passages:  # the harness scores each passage on its own, after end-of-text, in disjoint windows
        result = evaluate_documents(*model_and_tokenizer, [passage], stride=64)
        nll, n_bytes = nll + result.nll, n_bytes + result.bytes
    bits_per_byte = harness["results"]["lit_gpt_rolling"]["bits_per_byte,none"]
    assert bits_per_byte == pytest.approx(nll / n_bytes / math.log(2), rel=1e-5)


def test_generation_is_greedy_up_to_the_stop_string(harness, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    for sample in harness["samples"]["lit_gpt_generate"]:
        idx = torch.tensor([tokenizer.encode(sample["doc"]["prompt"])])
        new = generate(model, idx, 16, temperature=0.0, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eot_id)
        text = tokenizer.decode(t for t in new[0, idx.size(1) :].tolist() if t != tokenizer.eot_id)
        assert sample["resps"][0][0] == text.split("\n")[0]


def test_evaluate_command_runs_local_tasks(model_and_tokenizer, run_main, tmp_path):
    save_folder(*model_and_tokenizer, tmp_path / "model")
    code, out, err = run_main(
        "evaluate",
        "--checkpoint",
        tmp_path / "model",
        "--tasks",
        ",".join(NAMES),
        "--include_path",
        TASKS,
        "--out",
        tmp_path / "harness.json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result["results"]) == set(NAMES) and result["tasks"] == NAMES
    assert 0 <= result["results"]["lit_gpt_choice"]["acc,none"] <= 1
    assert json.loads((tmp_path / "harness.json").read_text()) == result
    code, _, err = run_main(
        "evaluate", "--checkpoint", tmp_path / "model", "--tasks", "no_such_task", "--include_path", TASKS
    )
    assert code == 2 and "unknown lm-eval task(s) ['no_such_task']" in err


def test_the_prefix_is_the_bos_of_a_tokenizer_that_adds_one(model_and_tokenizer, hf_folder):
    from lit_gpt.lm_eval_adapter import LitGPTLM

    model, char = model_and_tokenizer
    assert LitGPTLM(model, char).prefix_token_id == char.eot_id
    llama3 = Tokenizer.from_name(str(hf_folder("llama3")))
    lm = LitGPTLM(GPT(model.config.replace(vocab_size=llama3.vocab_size)).eval(), llama3)
    assert [lm.prefix_token_id] == llama3.document_prefix and lm.prefix_token_id != lm.eot_token_id

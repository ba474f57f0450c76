"""glibc's heap for CPU training (lit_gpt.train.host_memory): with the mmap threshold pinned, a freed large tensor's
memory goes back to the system, so the next one is mapped anew instead of coming from the heap; with the heap's top
padded, training steps reuse resident pages instead of page-faulting on fresh ones."""

import platform
import subprocess
import sys

import pytest

from lit_gpt.train.host_memory import configure_heap, pin_mmap_threshold

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process: allocate and free an 8 MiB tensor, then allocate another, and print how many bytes of mapped
# blocks (mallinfo2's hblkhd) the second allocation added. glibc's dynamic threshold rises to 8 MiB at the first
# free, so without the pin the second comes from the heap (0 bytes mapped); with it, it is mapped on its own.
PROBE = """
import ctypes, sys, torch
class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "pin":
    from lit_gpt.train.host_memory import configure_heap, pin_mmap_threshold
    assert pin_mmap_threshold()
first = torch.empty(2**21)
del first
before = libc.mallinfo2().hblkhd
second = torch.empty(2**21)
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes_of_second_tensor(mode: str, env: dict | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only (Linux with glibc)")
def test_pinned_threshold_maps_each_large_tensor_on_its_own(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert mapped_bytes_of_second_tensor("default") == 0  # glibc's dynamic threshold: from the heap
    assert mapped_bytes_of_second_tensor("pin") >= 8 * 2**20


# In a fresh process: minor page faults per training step of a small model (n_embd 128, batch 12 x 64), after warm-up
# steps, with glibc's defaults or with configure_heap. By default the heap's top is trimmed when a step frees its
# activations and grown again by the next, whose pages then fault in afresh.
STEPS = """
import resource, sys, torch, torch.nn.functional as F
if sys.argv[1] == "configure":
    from lit_gpt.train.host_memory import configure_heap
    assert configure_heap(saves_memory=False)
from lit_gpt.config import Config
from lit_gpt.model import GPT
torch.manual_seed(0)
model = GPT(Config(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(0, 65, (12, 64))
def step():
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    optimizer.step()
    optimizer.zero_grad()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only (Linux with glibc)")
def test_padded_heap_lets_training_steps_reuse_resident_pages(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    faults = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, timeout=300
            ).stdout.split()[-1]
        )
        for mode in ("default", "configure")
    }
    assert faults["configure"] * 5 < faults["default"], faults


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only (Linux with glibc)")
@pytest.mark.parametrize(
    "name, value",
    [
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("MALLOC_TOP_PAD_", "0"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
    ],
)
def test_a_users_allocator_setting_is_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert pin_mmap_threshold() is False
    assert configure_heap(saves_memory=False) is False
    assert configure_heap(saves_memory=True) is False


def test_negative_top_pad_is_refused():
    with pytest.raises(ValueError, match="at least 0 bytes"):
        configure_heap(saves_memory=False, top_pad=-1)


@pytest.mark.parametrize("threshold", [0, -1, 33 * 2**20])
def test_threshold_out_of_glibcs_range_is_refused(threshold):
    with pytest.raises(ValueError, match="between 1 byte and 32 MiB"):
        pin_mmap_threshold(threshold)


def test_only_runs_that_trade_speed_for_memory_pin_it():
    from jsonargparse import Namespace

    from lit_gpt.train.lightning_cli import saves_memory

    def model(**fields):
        return Namespace(
            config=Namespace(gradient_checkpointing=fields.get("checkpointing", False)),
            loss_chunk_size=fields.get("chunk"),
        )

    assert not saves_memory(model())
    assert saves_memory(model(checkpointing=True))
    assert saves_memory(model(chunk=1024))

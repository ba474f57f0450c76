"""Two "nodes" on localhost: two torchrun launches of one process each (static rendezvous, gloo), through Lightning's
TorchElasticEnvironment; and a run on several nodes refuses to prepare data it cannot prepare safely."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Callback

from lit_gpt.cli import main

REPO = Path(__file__).resolve().parents[1]


class RecordLosses(Callback):
    """Test-only probe, given to the CLI by class path: each rank writes who it is and the train/loss it logged (the
    mean over all ranks) at each step to ``out/rank<r>.json``."""

    def __init__(self, out: str) -> None:
        self.out, self.losses = Path(out), {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "train/loss" in trainer.callback_metrics:
            self.losses[trainer.global_step] = float(trainer.callback_metrics["train/loss"])

    def on_train_end(self, trainer, pl_module) -> None:
        record = {
            "rank": trainer.global_rank,
            "node": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "losses": self.losses,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_train_together(tiny, tmp_path):
    main(tiny(tmp_path, command="prepare"))  # once, ahead: a run on several nodes does not prepare data
    probe = json.dumps({"class_path": "tests.test_multinode.RecordLosses", "init_args": {"out": str(tmp_path)}})
    args = tiny(
        tmp_path,
        "--trainer.num_nodes",
        "2",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks",
        probe,
        "--samples.max_new_tokens",
        "0",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(node),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                "-m",
                "lit_gpt.cli",
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["node"], r["world_size"], r["num_nodes"]) for r in records] == [(0, 0, 2, 2), (1, 1, 2, 2)]
    assert len(records[0]["losses"]) == 6 and records[0]["losses"] == records[1]["losses"]  # both trained, agree


def test_a_run_on_several_nodes_does_not_prepare_data(tiny, tmp_path, errors, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(tmp_path, "--trainer.num_nodes", "2"))
    assert exit_info.value.code == 2
    (line,) = errors(capsys.readouterr().err)
    assert "does not prepare them" in line and "run `lit-gpt prepare` with the same config and flags first" in line
    assert not (tmp_path / "cache" / "meta.json").exists()

"""Distributed helpers: single-process identities, torchrun environment, and 2 real Gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from cspdet.engine import distributed as D


def test_single_process_helpers_are_identities():
    assert not D.is_distributed()
    assert D.get_rank() == 0 and D.get_world_size() == 1
    t = torch.tensor([1.0, 2.0])
    out = D.all_reduce_sum(t)
    assert torch.equal(out, t) and out is not t
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert D.broadcast_object("x") == "x"
    D.barrier()


def test_env_dist_info_and_init_without_torchrun(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert D.env_dist_info() == D.DistInfo(0, 0, 1)
    assert D.init_distributed("cpu") == D.DistInfo(0, 0, 1)  # no process group for one process
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = D.env_dist_info()
    assert (info.rank, info.local_rank, info.world_size, info.is_main) == (3, 1, 4, False)
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(RuntimeError, match="WORLD_SIZE"):
        D.env_dist_info()


def test_select_device():
    assert D.select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert D.select_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            D.select_device("cuda")
    with pytest.raises(RuntimeError, match="expected auto, cpu"):
        D.select_device("tpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failing_evaluation() -> str:
    """Rank 0 fails while scoring (e.g. a full disk): every rank must leave the collective and raise."""
    from cspdet.engine.coco_metrics import EvaluationError
    from cspdet.engine.evaluator import COCOEvaluator

    class Failing(COCOEvaluator):
        def __init__(self):  # no loader needed: predict and scoring are replaced
            pass

        def predict(self, model, progress=False):
            return {}

        def _score_and_write(self, per_image, output_dir, plots):
            raise OSError("No space left on device")

    try:
        Failing().evaluate(model=None)
    except EvaluationError as err:
        return str(err)
    return "no error"


def _worker(rank: int, world_size: int, port: int, queue) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        info = D.init_distributed("cpu")
        result = {
            "info": (info.rank, info.world_size),
            "backend": torch.distributed.get_backend(),
            "rank": D.get_rank(),
            "sum": D.all_reduce_sum(torch.tensor([rank + 1.0])).tolist(),
            "gather": D.all_gather_objects({"r": rank}),
            "bcast": D.broadcast_object(f"from {rank}"),
            "eval_error": _failing_evaluation(),
        }
        D.barrier()
        queue.put((rank, result))
    finally:
        D.destroy_distributed()


def test_two_gloo_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, res in results.items():
        assert res["info"] == (rank, 2) and res["rank"] == rank
        assert res["backend"] == "gloo"
        assert res["sum"] == [3.0]
        assert res["gather"] == [{"r": 0}, {"r": 1}]
        assert res["bcast"] == "from 0"
        assert res["eval_error"] == "evaluation failed on rank 0: OSError: No space left on device"

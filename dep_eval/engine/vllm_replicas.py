"""``data_parallel_size=N`` for the vLLM engine: N whole ``vllm.LLM`` replicas, one process each.

vLLM's offline ``LLM`` refuses ``data_parallel_size > 1`` in one process, so each replica is a
spawned process of its own, on its own ``tensor_parallel_size`` GPUs (or its share of the CPU
cores), fed interleaved shares of each call. Per-request seeds make a document's text
independent of the replica that serves it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import weakref
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

# one batch: (requests, SamplingParams arguments, LoRA requests' arguments or None)
Batch = tuple[list[dict], list[dict], list[tuple[str, int, str] | None]]
Generator = Callable[[Any, list[dict], list[dict], list[tuple[str, int, str] | None]], list]


def replica_env(rank: int, replicas: int, tp: int, on_cpu: bool) -> dict[str, str]:
    """Replica ``rank``'s own devices: its GPUs, or on a CPU its share of the cores."""
    if on_cpu:
        cores = sorted(os.sched_getaffinity(0))
        share = len(cores) // replicas
        if share == 0:
            return {}
        mine = cores[rank * share : (rank + 1) * share]
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, mine))}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    if len(gpus) < replicas * tp:
        raise ValueError(
            f"data_parallel_size={replicas} x tensor_parallel_size={tp} needs "
            f"{replicas * tp} GPUs; {len(gpus)} are visible"
        )
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus[rank * tp : (rank + 1) * tp])}


class Replica:
    """One ``vllm.LLM`` in a spawned process, answering ``Batch`` messages."""

    def __init__(self, options: dict[str, Any], env: dict[str, str], generate: Generator) -> None:
        context = multiprocessing.get_context("spawn")  # vLLM and CUDA need a fresh process
        self.connection, child = context.Pipe()
        # not a daemon: vLLM starts processes of its own inside
        self.process = context.Process(
            target=_serve, args=(child, options, env, generate), daemon=False
        )
        self.process.start()
        child.close()

    def send(self, batch: Batch) -> None:
        self.connection.send(batch)

    def receive(self) -> Any:
        try:
            answer = self.connection.recv()
        except EOFError as error:
            raise RuntimeError(
                f"A vLLM replica (pid {self.process.pid}) died; its log is above"
            ) from error
        if isinstance(answer, str):  # the replica's traceback
            raise RuntimeError(f"A vLLM replica failed:\n{answer}")
        return answer

    def wait_ready(self) -> int:
        """Blocks until the replica's engine is up; returns its max_model_len."""
        return self.receive()["max_model_len"]


class ReplicaPool:
    """``replicas`` whole engines; ``generate`` splits a batch between them and joins."""

    def __init__(
        self, options: dict[str, Any], replicas: int, on_cpu: bool, generate: Generator
    ) -> None:
        tp = int(options.get("tensor_parallel_size", 1))
        self.replicas = [
            Replica(options, replica_env(rank, replicas, tp, on_cpu), generate)
            for rank in range(replicas)
        ]
        self.max_model_len = min(replica.wait_ready() for replica in self.replicas)
        self._finalizer = weakref.finalize(self, stop, self.replicas)

    def generate(self, batch: Batch) -> list[list[int]]:
        n = len(self.replicas)
        for rank, replica in enumerate(self.replicas):
            # interleaved: balanced lengths
            replica.send((batch[0][rank::n], batch[1][rank::n], batch[2][rank::n]))
        shares = [replica.receive() for replica in self.replicas]
        outputs: list[list[int]] = [[] for _ in batch[0]]
        for rank, share in enumerate(shares):
            outputs[rank::n] = share
        return outputs

    def close(self) -> None:
        self._finalizer()


def _serve(
    connection: Any, options: dict[str, Any], env: dict[str, str], generate: Generator
) -> None:
    """A replica's main loop (in its own process)."""
    import traceback

    for stale in ("VLLM_DP_RANK", "VLLM_DP_RANK_LOCAL", "VLLM_DP_SIZE", "VLLM_DP_MASTER_PORT"):
        os.environ.pop(stale, None)  # each replica is a whole engine, not a DP rank
    os.environ.update(env)
    try:
        import vllm

        llm = vllm.LLM(**options)
        connection.send({"max_model_len": llm.llm_engine.model_config.max_model_len})
        while (message := connection.recv()) is not None:
            connection.send(generate(llm, *message))
        llm.llm_engine.engine_core.shutdown()  # its processes, before this one exits
    except EOFError:  # the parent is gone
        return
    except Exception:
        connection.send(traceback.format_exc())


def stop(replicas: list[Replica]) -> None:
    """Asks every replica to stop, then waits (terminating one that does not)."""
    for replica in replicas:
        with contextlib.suppress(OSError):
            replica.connection.send(None)
    for replica in replicas:
        replica.process.join(timeout=60)
        if replica.process.is_alive():
            logger.warning(
                "vLLM replica pid %d did not stop in 60 s: terminating it", replica.process.pid
            )
            replica.process.terminate()
            replica.process.join(timeout=10)

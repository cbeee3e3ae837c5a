"""Two start-up shortcuts for ray.serve.llm model replicas (measured: ~45 s -> ~22 s on 2 cores).

Both use Ray's internal LLM API (ray 2.60); they are only applied where noted and are the first
thing to check after a Ray upgrade.
"""

from __future__ import annotations

from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine


class SkipNodeInit(CallbackBase):
    """Skip the per-node "download model files" task for local weights.

    For a local folder it downloads nothing, yet starts an extra Ray worker (~10 s here).
    """

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False


class InProcessVLLMEngine(VLLMEngine):
    """Run the engine's workers as `vllm serve` does on one host, on the GPUs the manager chose.

    One device: inside vLLM's EngineCore process ("uni"); ray.serve.llm would spawn one more
    process (~9 s of start-up and ~0.5 GB here on CPU). Several (tensor_parallel_size N, one
    host): vLLM's multiprocessing workers, local ranks 0..N-1 of the CUDA_VISIBLE_DEVICES the
    replica was started with (app/engines/llm_config.py). ray.serve.llm's own choice on GPUs is
    Ray's executor, whose workers take whole GPUs from the placement group, where Ray (not the
    manager) picks which, and which would book whole GPUs that other models share.
    """

    def _prepare_engine_config(self, callback_ctx):
        args, frontend_args, config = super()._prepare_engine_config(callback_ctx)
        parallel = config.parallel_config
        backend = executor(parallel.world_size, parallel.pipeline_parallel_size)
        parallel.distributed_executor_backend = backend
        args.distributed_executor_backend = backend
        return args, frontend_args, config


def executor(world_size: int, pipeline_parallel_size: int) -> str:
    """vLLM's executor for an engine: in-process for one device, multiprocessing workers for TP on one
    node, Ray's executor for pipeline stages on several nodes (the only one that crosses nodes)."""
    if pipeline_parallel_size > 1:
        return "ray"
    return "uni" if world_size == 1 else "mp"

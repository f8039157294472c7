"""A vLLM weight-transfer engine that reads pushed weights from a safetensors file.

None of the engines shipped with vLLM works on CPU (nccl, ipc, ... all need CUDA), so the trainer writes its
state dict to a file (in /dev/shm for speed) and this engine loads it through vLLM's layerwise reload, the same
path vLLM's own checkpoint-format engines take. Protocol (all vLLM RL endpoints, ``VLLM_SERVER_DEV_MODE=1``):
``/init_weight_transfer_engine`` once, then per push ``/pause`` → ``/start_weight_update`` →
``/update_weights {"update_info": {"path": ...}}`` → ``/finish_weight_update`` → ``/resume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)


@dataclass
class FileInitInfo(WeightTransferInitInfo):
    pass


@dataclass
class FileUpdateInfo(WeightTransferUpdateInfo):
    path: str  # safetensors file with Hugging Face parameter names, readable by the server


class FileWeightTransferEngine(WeightTransferEngine[FileInitInfo, FileUpdateInfo]):
    init_info_cls = FileInitInfo
    update_info_cls = FileUpdateInfo

    def init_transfer_engine(self, init_info: FileInitInfo) -> None:
        """Nothing to rendezvous with: the data plane is the file system."""

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class ends with torch.accelerator.synchronize(), which raises on CPU; loading is synchronous here.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: FileUpdateInfo) -> None:
        from safetensors.torch import load_file

        self.model.load_weights(list(load_file(update_info.path).items()))

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def shutdown(self) -> None:
        """No resources held between pushes."""

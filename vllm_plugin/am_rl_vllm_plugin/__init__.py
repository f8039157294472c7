"""Registers the ``am_rl_file`` weight-transfer engine with vLLM (selected by
``--weight-transfer-config '{"backend": "am_rl_file"}'``)."""

BACKEND = "am_rl_file"


def register() -> None:
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    try:
        WeightTransferEngineFactory.register_engine(BACKEND, "am_rl_vllm_plugin.file_engine", "FileWeightTransferEngine")
    except ValueError:  # vLLM may load general plugins more than once in one process
        pass

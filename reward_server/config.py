"""Worker-side settings: one commented default per knob. The server hands its own copy to the workers it
starts (as JSON on their command line); remote workers take the same flags."""

from typing import Literal

from pydantic import BaseModel, ConfigDict


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    math_timeout_s: float = 10.0  # hard kill of a math verification (Math-Verify's own alarms fire at 3 s)
    code_test_timeout_s: float = 5.0  # wall clock per test run; RLIMIT_CPU is this rounded up plus 1 s
    code_compile_timeout_s: float = 30.0  # g++ wall clock
    code_memory_mb: int = 256  # RLIMIT_AS of every sandboxed process (x max_procs bounds a fork+memory bomb)
    code_compile_memory_mb: int = 1536  # RLIMIT_AS while g++ compiles
    code_max_procs: int = 16  # RLIMIT_NPROC of the sandbox uid (fork bombs stop here)
    code_max_file_mb: int = 16  # RLIMIT_FSIZE: caps every file written, stdout/stderr included
    code_tmpfs_mb: int = 64  # size of the private writable /tmp
    rm_backend: Literal["none", "http", "hf"] = "none"
    rm_url: str | None = None  # http backend: a scores endpoint or an OpenAI-compatible /v1/chat/completions
    rm_api: Literal["scores", "openai"] = "scores"
    rm_model: str | None = None  # http/openai: model name; hf: local path of a 3-label sequence classifier
    rm_timeout_s: float = 30.0
    max_attempts: int = 3  # a job whose worker died this many times is answered with an error
    heartbeat_ttl_s: float = 10.0  # a worker silent this long is dead; its in-flight jobs go back on the queue
    cache_ttl_s: int = 7 * 24 * 3600

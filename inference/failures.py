"""What went wrong with a Live Avatar run, read from its exit status and the tail of its log.

Most specific cause first: out of memory, a size or sampler the engine rejected, an NCCL hang, a
rank killed by a signal, a missing Python module or FlashAttention, a compiler failure, missing
weights; anything else is a crash, named by its last exception line. Shared by both engines.
"""

from __future__ import annotations

import re

from inference.engine import Failure, FailureKind
from inference.liveavatar_config import CHECK_WEIGHT_SETTINGS, SETTING_COMPILE, LiveAvatarConfig
from inference.liveavatar_environment import COMPILE_REMEDY, flash_attention_missing
from inference.liveavatar_facts import MAX_SIZE, SAMPLE_STEPS, VALID_SIZES

_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUBLAS_STATUS_ALLOC_FAILED")
_EXPANDED = re.compile(r"The expanded size of the tensor \((\d+)\)")
_NCCL = re.compile(
    r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*(?:timeout|timed out|Timeout)"
    r"|NCCL (?:error|communicator was aborted|timeout)|ncclInternalError|ncclSystemError"
    r"|DistBackendError|ncclRemoteError"
)
_SOLVER = re.compile(r"Unsupported solver|NotImplementedError:.*solver")
# torchrun's ChildFailedError summary of a rank that died of a signal.
_RANK_KILLED = re.compile(r"Signal (\d+) \(SIG\w+\) received by PID")
# More than 4 steps index a per-step KV cache that does not exist: on one GPU the fifth step's
# _move_kv_cache_to_working_gpu reads self.kv_cache1[str(moved_id)] -> KeyError: '5'.
_STEPS = re.compile(r"(?:_move_kv_cache_to_working_gpu|kv_cache1\[str\()[\s\S]*KeyError: '\d+'")
# save_video swallowed its error and wrote nothing; merge_video_audio then raises outside its try.
_NO_VIDEO = re.compile(r"FileNotFoundError: video file (\S+) does not exist")
_MISSING_FILE = re.compile(
    r"(?:FileNotFoundError|No such file or directory|does not appear to have a file named"
    r"|Can't load|Repository Not Found|LocalEntryNotFoundError|no file named [\w.]+ found in directory"
    r"|is not a local folder and is not a valid model identifier|Incorrect path_or_model_id"
    r"|OfflineModeIsEnabled|couldn't connect to 'https://huggingface.co')[^\n]*"
)
_NO_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")
# Text and audio cross-attention call flash_attention, which asserts FlashAttention 2 when 3 is absent.
_FLASH_MISSING = re.compile(r"assert FLASH_ATTN_2_AVAILABLE|FLASH_ATTN_2_AVAILABLE")
# torch.compile on Python >= 3.12 (torch 2.11): a dynamo resume function after a graph break in
# attention.py's `[u[:v] for u, v in zip(v, k_lens)]` reads the comprehension's `v` unbound.
_COMPILE_UNBOUND = re.compile(r"UnboundLocalError: cannot access local variable")
# ... and with TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1, inductor on causal_model_s2v.py's
# `repeat_interleave(int(frame_seqlen))`.
_COMPILE_GUARD = re.compile(r"GuardOnDataDependentSymNode[^\n]*")
_COMPILE_FAILED = re.compile(
    r"torch\._dynamo\.exc\.\w+|BackendCompilerFailed|InductorError|torch\._inductor\.exc\.\w+")


def classify_text(text: str, config: LiveAvatarConfig | None = None) -> Failure | None:
    """The failure a log tail or error message shows, most specific cause first; None when unknown."""
    if _OOM.search(text):
        return Failure(FailureKind.OUT_OF_MEMORY, "CUDA out of memory: " + _last_line(text, _OOM))
    if match := _EXPANDED.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine rejected the size: 'The expanded size of the tensor ({match.group(1)})' means "
            f"the output area is larger than its fixed cache allows (at most {MAX_SIZE}; valid sizes: "
            f"{', '.join(VALID_SIZES)})",
        )
    if _NCCL.search(text):
        return Failure(
            FailureKind.NCCL_HANG,
            "a pipeline rank failed and the others blocked in NCCL: " + _last_line(text, _NCCL),
        )
    if match := _RANK_KILLED.search(text):
        return Failure(
            FailureKind.WORKER_DIED,
            f"a rank was killed by signal {match.group(1)} (the OOM killer, an operator, a crash of the "
            "host process): torchrun ended the job; the next job starts fresh ranks",
        )
    if _SOLVER.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine rejected the sampler: only sample_solver euler works ({_last_line(text, _SOLVER)})",
        )
    if _STEPS.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine has one KV cache per sampling step: sample_steps must be {SAMPLE_STEPS}",
        )
    if match := _NO_VIDEO.search(text):
        return Failure(FailureKind.NO_OUTPUT,
                       f"Live Avatar wrote no video file ({match.group(1)}): its save_video swallowed "
                       "the error (look for 'save_video failed' in the log); the mux then failed")
    if match := _NO_MODULE.search(text):
        return Failure(
            FailureKind.ENVIRONMENT,
            f"Live Avatar's environment lacks the Python module {match.group(1)!r} "
            f"({_last_line(text, _NO_MODULE)}); install Live Avatar's requirements there",
        )
    if _FLASH_MISSING.search(text) and "AssertionError" in text:
        return Failure(FailureKind.ENVIRONMENT,
                       flash_attention_missing(config.python_path if config is not None else None))
    if _COMPILE_UNBOUND.search(text) and ("_dynamo" in text or "flash_attention" in text):
        return Failure(
            FailureKind.ENVIRONMENT,
            "torch.compile failed at the first DiT forward (" + _last_line(text, _COMPILE_UNBOUND)
            + "): a dynamo bug with Python >= 3.12's inlined comprehensions in Live Avatar's "
            f"attention.py. {COMPILE_REMEDY}",
        )
    if guard := _COMPILE_GUARD.search(text):
        return Failure(
            FailureKind.ENVIRONMENT,
            f"torch.compile failed in inductor ({guard.group(0).strip()[:160]}): Live Avatar's "
            f"data-dependent shapes do not compile on this torch. {COMPILE_REMEDY}",
        )
    if _COMPILE_FAILED.search(text):
        return Failure(
            FailureKind.ENVIRONMENT,
            f"torch.compile failed ({_last_line(text, _COMPILE_FAILED)}); set {SETTING_COMPILE}=false "
            "or fix the compiler toolchain of Live Avatar's environment",
        )
    for line in reversed(text.splitlines()):
        if _MISSING_FILE.search(line) and _names_weights(line, config):
            return Failure(FailureKind.MISSING_WEIGHTS, f"{line.strip()} ({CHECK_WEIGHT_SETTINGS})")
    return None


def _names_weights(line: str, config: LiveAvatarConfig | None) -> bool:
    needles = ["ckpt", "safetensors", "Wan2.2", ".pth", "lora", "wav2vec", "umt5", "Quark-Vision",
               "config.json", "huggingface.co", "model identifier"]
    if config is not None:
        needles += [str(config.ckpt_dir), str(config.lora_path)]
    return any(n.lower() in line.lower() for n in needles)


def _last_line(text: str, pattern: re.Pattern[str]) -> str:
    for line in reversed(text.splitlines()):
        if pattern.search(line):
            return line.strip()[:400]
    return ""


def classify_exit(
    exit_status: int | None, tail: str, *, timed_out: bool, timeout_s: float,
    config: LiveAvatarConfig | None = None,
) -> Failure | None:
    """The failure of a finished or killed run; None when it exited 0 (the output still needs verifying)."""
    if timed_out:
        if _NCCL.search(tail):
            return Failure(FailureKind.NCCL_HANG, f"killed after {timeout_s:.0f} s blocked in NCCL: "
                           + _last_line(tail, _NCCL))
        return Failure(FailureKind.TIMEOUT,
                       f"no result after {timeout_s:.0f} s; the process group was killed")
    if exit_status == 0:
        return None
    known = classify_text(tail, config)
    if known is not None:
        return known
    return Failure(FailureKind.CRASHED, f"exited with status {exit_status}: {last_error_line(tail)}")


# torchrun's own summary of a failed child, which buries the child's real error.
_LAUNCHER_NOISE = re.compile(r"ChildFailedError|SignalException|elastic\.multiprocessing")
_EXCEPTION_LINE = re.compile(r"^(?:\[[^\]]*\]:?\s*)?[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b:?.*")


def last_error_line(tail: str) -> str:
    """The last exception line of the run (`RuntimeError: ...`), else its last lines."""
    for line in reversed(tail.splitlines()):
        if _EXCEPTION_LINE.match(line.strip()) and not _LAUNCHER_NOISE.search(line):
            return line.strip()[:500]
    return last_lines(tail)


def last_lines(tail: str, lines: int = 5) -> str:
    """The last few lines of a log tail, on one line."""
    return " | ".join(tail.strip().splitlines()[-lines:])[-800:]

"""The Live Avatar engine, warm mode: one long-lived worker per GPU gang, loaded once, fed job after job.

`WarmWorkerEngine` starts `inference/warm_worker.py` (through torchrun, inside the Live Avatar
environment), waits for it to load, sends it jobs as JSON lines and relays its progress. It
shares the request checks, argument values, failure classification and output verification with
the per-job engine (`inference/liveavatar.py` names the modules), so both modes run and accept
exactly the same thing. A job that runs past its timeout kills the worker's whole process group
(TIMEOUT); a worker that vanishes fails its job as WORKER_DIED; either way the next job starts a
fresh worker.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.engine import (
    Failure,
    FailureKind,
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    Progress,
    ProgressCallback,
)
from inference.failures import classify_exit, classify_text, last_lines
from inference.liveavatar_checks import preflight
from inference.liveavatar_command import (
    build_env,
    job_arguments,
    load_arguments,
    to_cli,
    torchrun_prefix,
)
from inference.liveavatar_config import CHECK_WEIGHT_SETTINGS, LiveAvatarConfig
from inference.liveavatar_facts import PIPELINE_GPUS
from inference.liveavatar_job import plan_job, plan_record, prepare_output, settle_output
from inference.ports import PortAllocator, PortLease
from inference.processes import LogSink, ProcessTree, kill_process_group, kill_survivors, pump
from inference.progress import seconds_per_clip
from inference.sampling import SamplerFactory, nvml_sampler_factory

WORKER_SCRIPT = Path(__file__).resolve().with_name("warm_worker.py")
ENGINE_NAME = "liveavatar-warm"
_EOF = object()  # put on the message queue when the worker's stdout closes


def worker_command(gang: GpuGang, config: LiveAvatarConfig, master_port: int,
                   backend: str = "liveavatar") -> list[str]:
    """`torchrun ... warm_worker.py` with the same load-time arguments as a per-job launch."""
    return [
        *torchrun_prefix(gang, config, master_port),
        str(WORKER_SCRIPT),
        "--backend", backend,
        "--checkout", str(config.checkout),
        *to_cli(load_arguments(gang, config)),
    ]


class _WorkerProcess:
    """One running worker: its process group, the reader threads and the message queue."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, lease: PortLease | None,
                 worker_log: Path | None) -> None:
        self.argv = argv
        self.lease = lease
        self.messages: queue.Queue[Any] = queue.Queue()
        self.worker_sink = LogSink(worker_log, tail_lines=200)
        self.job_sink: LogSink | None = None
        self._sink_lock = threading.Lock()
        self.load_seconds: float | None = None
        self.jobs_served = 0
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.tree = ProcessTree(self.proc.pid)
        self.threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=pump, args=(self.proc.stderr, self._on_stderr), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                self.messages.put(message)
            else:  # torchrun or a library wrote to stdout: keep it, never parse it as protocol
                self._on_stderr(f"[stdout] {line}", True)
        self.messages.put(_EOF)

    def _on_stderr(self, segment: str, ends_line: bool) -> None:
        with self._sink_lock:
            self.worker_sink.write(segment)
            if self.job_sink is not None:
                self.job_sink.write(segment)

    def set_job_sink(self, sink: LogSink | None) -> None:
        with self._sink_lock:
            self.job_sink = sink

    def send(self, message: dict[str, Any]) -> bool:
        """Write one request; False when the worker's stdin is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def tail(self) -> str:
        return self.worker_sink.tail_text()

    def stop(self, grace_s: float, *, polite: bool) -> int | None:
        """End the worker: ask it to shut down when `polite`, else (or then) kill its process group."""
        if polite and self.alive():
            self.send({"id": "shutdown", "op": "shutdown"})
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        # Kill the group even after a clean exit: no rank or helper may outlive the worker.
        kill_process_group(self.proc, grace_s if self.alive() else 0.5)
        kill_survivors(self.tree, grace_s)
        for thread in self.threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.worker_sink.close()
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        return self.proc.returncode


class WarmWorkerEngine:
    """Warm mode for one GPU gang: the model is loaded once and serves job after job."""

    name = ENGINE_NAME

    def __init__(
        self,
        config: LiveAvatarConfig,
        gang: GpuGang | None = None,
        *,
        launcher: Sequence[str] | None = None,
        backend: str = "liveavatar",
        load_timeout_s: float = 1800.0,
        ports: PortAllocator | None = None,
        sampler_factory: SamplerFactory = nvml_sampler_factory,
        worker_log: Path | None = None,
        health_timeout_s: float = 10.0,
    ) -> None:
        """`gang`: the GPUs this worker owns; when None, the gang of the first job (then fixed).
        `launcher`: a fixed argv to start the worker with (tests: `python warm_worker.py --backend fake`);
        by default `torchrun ... warm_worker.py` from `config`."""
        self.config = config
        self.gang = gang
        self.launcher = list(launcher) if launcher is not None else None
        self.backend = backend
        self.load_timeout_s = load_timeout_s
        self.ports = ports or PortAllocator.for_config(config)
        self.sampler_factory = sampler_factory
        self.worker_log = worker_log
        self.health_timeout_s = health_timeout_s
        self._worker: _WorkerProcess | None = None
        self._lock = threading.Lock()  # one job (or health check) at a time per gang
        self._jobs_served = 0
        self._starts = 0
        self._last_error: str | None = None
        self._last_load_seconds: float | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def _start(self, sink: LogSink | None) -> Failure | None:
        """Start a worker and wait until it has loaded the model; the failure when it cannot."""
        self._starts += 1
        lease = self.ports.acquire()
        argv = self.launcher or worker_command(self._gang, self.config, lease.port, self.backend)
        env = build_env(self._gang, self.config)
        if sink is not None:
            sink.write_command(argv, self.config.checkout)
        try:
            worker = _WorkerProcess(argv, env, self.config.checkout, lease, self.worker_log)
        except OSError as exc:
            lease.release()
            return Failure(FailureKind.CONFIG_REJECTED, f"cannot start the warm worker {argv[0]}: {exc}")
        worker.set_job_sink(sink)
        deadline = time.monotonic() + self.load_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = worker.messages.get(timeout=max(remaining, 0.01)) if remaining > 0 else None
            except queue.Empty:
                message = None
            if message is None:
                worker.stop(self.config.kill_grace_s, polite=False)
                return Failure(FailureKind.TIMEOUT, f"the warm worker did not finish loading in "
                               f"{self.load_timeout_s:.0f} s; its process group was killed")
            if message is _EOF:
                status = worker.stop(self.config.kill_grace_s, polite=False)
                tail = worker.tail()
                known = classify_text(tail, self.config)
                return known or Failure(
                    FailureKind.WORKER_DIED,
                    f"the warm worker exited (status {status}) while loading: {last_lines(tail)}")
            if message.get("event") == "load_failed":
                worker.stop(self.config.kill_grace_s, polite=False)
                return _failure_from_error(message.get("error") or {}, self.config)
            if message.get("event") == "ready":
                worker.load_seconds = float(message.get("load_seconds") or 0.0)
                self._last_load_seconds = worker.load_seconds
                self._worker = worker
                return None

    def _discard_worker(self, *, polite: bool) -> int | None:
        worker, self._worker = self._worker, None
        if worker is None:
            return None
        return worker.stop(self.config.kill_grace_s, polite=polite)

    def close(self) -> None:
        """Shut the worker down cleanly (then make sure its whole process group is gone)."""
        with self._lock:
            self._discard_worker(polite=True)

    # -- jobs -------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, gang: GpuGang,
                 progress: ProgressCallback | None = None) -> GenerationResult:
        with self._lock:
            if self.gang is None:
                self.gang = gang
            elif gang != self.gang:
                raise ValueError(f"this warm worker serves gang {self._gang.name}, not {gang.name}")
            return self._generate(request, progress)

    @property
    def _gang(self) -> GpuGang:
        assert self.gang is not None, "the gang is bound by the first job"
        return self.gang

    def _generate(self, request: GenerationRequest, progress: ProgressCallback | None) -> GenerationResult:
        preset, refused = preflight(request, self._gang, self.config, installation=self.launcher is None)
        record: dict[str, Any] = {"mode": "warm", "preset": request.preset, "gang": self._gang.name}
        if refused is not None or preset is None:
            return GenerationResult(self.name, record, failure=refused)
        plan = plan_job(request, preset, self.config)
        clips, timeout_s = plan.clips, plan.timeout_s
        partial = prepare_output(request)
        args = job_arguments(request, plan, partial)
        record.update(args=args, **plan_record(plan), enable_compile=self.config.enable_compile,
                      cuda_visible_devices=self._gang.cuda_visible_devices)
        metrics = GenerationMetrics(clips_planned=clips)
        sink = LogSink(request.log_path)
        try:
            if self._worker is None or not self._worker.alive():
                if self._worker is not None:
                    self._discard_worker(polite=False)
                failure = self._start(sink)
                if failure is not None:
                    self._last_error = failure.message
                    return GenerationResult(self.name, record, failure=failure, metrics=metrics)
                assert self._worker is not None
                metrics.load_seconds = self._worker.load_seconds  # this job paid for the load
            worker = self._worker
            assert worker is not None
            record.update(worker_pid=worker.pid, worker_argv=worker.argv)
            worker.set_job_sink(sink)
            failure = self._run_job(worker, args, clips, timeout_s, metrics, progress, sink, record)
            worker.set_job_sink(None)
            failure = settle_output(partial, request, plan, failure, record)
            if failure is not None:
                self._last_error = f"{failure.kind.value}: {failure.message}"
                if len(self._gang.devices) == PIPELINE_GPUS and self._worker is not None:
                    # After a failed job in the pipeline, a rank may still be blocked in NCCL:
                    # start the next job on fresh ranks rather than risk a deadlock.
                    self._discard_worker(polite=False)
                return GenerationResult(self.name, record, failure=failure, metrics=metrics)
            self._jobs_served += 1
            worker.jobs_served += 1
            return GenerationResult(self.name, record, output=request.output, metrics=metrics)
        finally:
            if self._worker is not None:
                self._worker.set_job_sink(None)
            sink.close()

    def _run_job(
        self, worker: _WorkerProcess, args: dict[str, Any], clips: int, timeout_s: float,
        metrics: GenerationMetrics, progress: ProgressCallback | None, sink: LogSink,
        record: dict[str, Any],
    ) -> Failure | None:
        """Send one job and wait for its answer; the failure, or None when the worker reports success."""
        job_id = uuid.uuid4().hex
        sampler = self.sampler_factory(self._gang)
        started = time.monotonic()
        clip_ends: list[float] = []
        sink.write(f"avatarflow: warm worker {worker.pid} job {job_id}")
        sampler.start()
        try:
            if not worker.send({"id": job_id, "op": "generate", "args": args}):
                return self._died(worker, metrics, "the warm worker's input is closed")
            deadline = started + timeout_s
            while True:
                remaining = deadline - time.monotonic()
                try:
                    message = worker.messages.get(timeout=remaining) if remaining > 0 else None
                except queue.Empty:
                    message = None
                if message is None:
                    sink.write(f"avatarflow: no result after {timeout_s:.0f} s; "
                               "killing the worker's process group")
                    tail = sink.tail_text()
                    metrics.exit_status = self._discard_worker(polite=False)
                    metrics.total_seconds = time.monotonic() - started
                    return classify_exit(None, tail, timed_out=True, timeout_s=timeout_s, config=self.config)
                if message is _EOF:
                    return self._died(worker, metrics, "the warm worker exited mid-job")
                if message.get("id") != job_id:
                    continue  # a late answer to an earlier, abandoned request
                if message.get("event") == "progress":
                    data = message.get("progress") or {}
                    done = min(int(data.get("clips_done", 0)), clips)
                    if done > metrics.clips_done:
                        now = time.monotonic() - started
                        clip_ends.append(now)
                        metrics.clips_done = done
                        if metrics.first_clip_seconds is None and done >= 1:
                            metrics.first_clip_seconds = now
                        if progress is not None:
                            progress(Progress(done, clips, f"clip {done}/{clips}"))
                    if data.get("first_step_s") is not None:
                        metrics.first_step_seconds = float(data["first_step_s"])
                    continue
                metrics.total_seconds = time.monotonic() - started
                metrics.seconds_per_clip = seconds_per_clip(clip_ends, metrics.first_step_seconds)
                if clip_ends:
                    metrics.tail_seconds = metrics.total_seconds - clip_ends[-1]
                if message.get("ok"):
                    result = message.get("result") or {}
                    if result.get("step_s") is not None:
                        metrics.seconds_per_step = float(result["step_s"])
                    if result.get("first_step_s") is not None:
                        metrics.first_step_seconds = float(result["first_step_s"])
                    record["worker_result"] = result
                    return None
                return _failure_from_error(message.get("error") or {}, self.config)
        finally:
            samples = sampler.stop()
            metrics.peak_memory_mb = dict(samples.peak_memory_mb)
            metrics.mean_utilisation = samples.mean_utilisation

    def _died(self, worker: _WorkerProcess, metrics: GenerationMetrics, what: str) -> Failure:
        tail = worker.tail()
        status = self._discard_worker(polite=False)
        metrics.exit_status = status
        return Failure(FailureKind.WORKER_DIED, f"{what} (exit status {status}); it is restarted for the "
                                                f"next job. Last output: {last_lines(tail)}")

    # -- health -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Alive, pid, jobs served, load seconds, last error; asks an idle worker itself."""
        report: dict[str, Any] = {
            "gang": self.gang.name if self.gang else None, "alive": False, "pid": None,
            "jobs_served": self._jobs_served, "load_seconds": self._last_load_seconds,
            "last_error": self._last_error, "restarts": max(0, self._starts - 1), "busy": False,
        }
        if not self._lock.acquire(blocking=False):
            worker = self._worker
            report.update(busy=True, alive=bool(worker and worker.alive()),
                          pid=worker.pid if worker else None)
            return report
        try:
            worker = self._worker
            if worker is None or not worker.alive():
                return report
            report.update(alive=True, pid=worker.pid, load_seconds=worker.load_seconds)
            ping_id = f"health-{uuid.uuid4().hex}"
            if not worker.send({"id": ping_id, "op": "health"}):
                report["alive"] = False
                return report
            deadline = time.monotonic() + self.health_timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    message = worker.messages.get(timeout=remaining)
                except queue.Empty:
                    break
                if message is _EOF:
                    report["alive"] = False
                    return report
                if message.get("id") == ping_id:
                    report["worker"] = message.get("health")
                    return report
            report["alive"] = False
            report["last_error"] = f"no answer to a health check in {self.health_timeout_s:.0f} s"
            return report
        finally:
            self._lock.release()


def _failure_from_error(error: dict[str, Any], config: LiveAvatarConfig) -> Failure:
    """A Failure from the worker's error; its text refines a generic 'crashed'."""
    message = str(error.get("message") or "the warm worker reported an error")
    try:
        kind = FailureKind(str(error.get("kind")))
    except ValueError:
        kind = FailureKind.CRASHED
    if kind in (FailureKind.CRASHED, FailureKind.MISSING_WEIGHTS):
        refined = classify_text(f"{message}\n{error.get('traceback', '')}", config)
        if refined is not None:
            return refined
    if kind == FailureKind.MISSING_WEIGHTS:
        return Failure(kind, f"{message} ({CHECK_WEIGHT_SETTINGS})")
    return Failure(kind, message)


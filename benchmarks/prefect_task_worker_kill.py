"""What Prefect does with a background task run whose task worker is SIGKILLed (why gang workers
do not use Prefect task workers; see the README's "GPU gang workers").

    .venv/bin/python benchmarks/prefect_task_worker_kill.py [--wait 60]

Starts a real `prefect server start` in a temporary PREFECT_HOME, a task worker
(`prefect.task_worker.serve`) for a 40 s task, submits one run with `.delay()`, SIGKILLs the
worker once the run is Running, then prints the run's state 5 s, 30 s and `--wait` s later, and
again after a second task worker has been serving for `--wait` s. Prints the Prefect version and
the machine. Not a test: an observation, printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

TASK = textwrap.dedent('''
    import time
    from prefect import task

    @task
    def slow(x: int) -> int:
        time.sleep(40)
        return x
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="task-worker-kill-") as tmp:
        folder = Path(tmp)
        (folder / "probe_tasks.py").write_text(TASK)
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        # Before Prefect is imported here: it reads its settings (the API URL) then.
        os.environ.update(PREFECT_HOME=str(folder / "home"), PREFECT_UI_ENABLED="false", PREFECT_API_URL=api,
                          PYTHONPATH=str(folder))
        env = dict(os.environ)
        import prefect

        print(f"prefect {prefect.__version__}")
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        workers: list[subprocess.Popen[bytes]] = []
        try:
            deadline = time.monotonic() + 240
            while True:
                try:
                    urllib.request.urlopen(f"{api}/health", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the Prefect server did not start") from None
                    time.sleep(0.5)
            sys.path.insert(0, str(folder))
            from prefect.client.orchestration import get_client
            from probe_tasks import slow  # type: ignore[import-not-found]

            def task_worker() -> subprocess.Popen[bytes]:
                code = "from prefect.task_worker import serve; from probe_tasks import slow; serve(slow)"
                worker = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                workers.append(worker)
                return worker

            def state(run_id: object) -> str:
                with get_client(sync_client=True) as client:
                    run = client.read_task_run(run_id)
                    return run.state.name if run.state else "no state"

            first = task_worker()
            time.sleep(8)  # the worker subscribes
            run_id = slow.delay(1).task_run_id
            started = time.monotonic()
            while state(run_id) != "Running" and time.monotonic() - started < 60:
                time.sleep(0.5)
            print(f"task run {run_id}: {state(run_id)} after {time.monotonic() - started:.1f} s")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed = time.monotonic()
            for after in (5.0, 30.0, args.wait):
                time.sleep(max(0.0, killed + after - time.monotonic()))
                print(f"{after:.0f} s after SIGKILL of its task worker: {state(run_id)}")
            task_worker()
            second = time.monotonic()
            time.sleep(args.wait)
            print(f"{time.monotonic() - second:.0f} s after a second task worker started: {state(run_id)}")
        finally:
            for process in (*workers, server):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A job attempt's processes are found by the mark in their environment, wherever a launcher
put them (torchrun gives each rank its own session), and only this studio's are stopped."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.job_processes import MARKER_VARIABLE, marked_processes, marker, stop_job_processes

SLEEPER = "import os, subprocess, sys, time\n" + (
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
    " start_new_session=True)\n"  # a 'rank' in a session of its own, as torchrun starts them
    "time.sleep(300)\n"
)


def _start(mark: str) -> subprocess.Popen:
    env = {**os.environ, MARKER_VARIABLE: mark}
    return subprocess.Popen([sys.executable, "-c", SLEEPER], env=env, start_new_session=True)


def test_stop_kills_every_marked_process_and_only_those() -> None:
    mine = _start(marker(424242, 1))
    next_attempt = _start(marker(424242, 2))
    other_studio = _start("/elsewhere/jobs/424242#1")  # another studio's job of the same id
    try:
        for mark, proc in ((marker(424242, 1), mine), (marker(424242, 2), next_attempt)):
            found: list[int] = []
            for _ in range(100):
                found = marked_processes(mark)
                if len(found) == 2:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
            assert proc.pid in found and len(found) == 2  # the launcher and its "rank"

        assert stop_job_processes(424242, 1, timeout=30)
        assert marked_processes(marker(424242, 1)) == []
        mine.wait(timeout=10)
        assert next_attempt.poll() is None and other_studio.poll() is None
        assert len(marked_processes(marker(424242, 2))) == 2
    finally:
        stop_job_processes(424242, 2, timeout=30)
        for proc in (mine, next_attempt, other_studio):
            proc.kill()
            proc.wait()
        for pid in marked_processes("/elsewhere/jobs/424242#1"):
            os.kill(pid, 9)

"""`make ui`: Airflow's api-server, scheduler, dag-processor and triggerer for
this project on one machine, on the embedded default (the SQLite metadata
database in AIRFLOW_HOME that `make run` uses, LocalExecutor).

Every address follows AIRFLOW_PORT (default 8080), so that several can run side
by side: the UI and REST API on the port, the execution API the workers call
back on under it, the worker log server on port + 10000 and the triggerer's on
port + 20000. Login is Airflow's simple auth manager: one user `admin`, whose
password Airflow generates on first start into AIRFLOW_HOME (printed here).

Ctrl+C (SIGINT) or SIGTERM stops every process started here, LocalExecutor
workers and task processes included: each component runs in its own process
group, and this process is a child subreaper, so nothing it started can
escape to init and stay behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USER = "admin"
WORKER_LOG_OFFSET, TRIGGER_LOG_OFFSET = 10000, 20000
STOP_GRACE_SECONDS = 10
PR_SET_CHILD_SUBREAPER = 36


def ports(api_port: int) -> dict[str, int]:
    """Every port one `make ui` listens on, derived from AIRFLOW_PORT."""
    return {"api": api_port, "worker_log": api_port + WORKER_LOG_OFFSET,
            "trigger_log": api_port + TRIGGER_LOG_OFFSET}


def airflow_environment(base: dict[str, str], home: Path, api_port: int, bin_dir: Path) -> dict[str, str]:
    """The environment of every component: the caller's, with the addresses and
    the executor this launcher stands for. The operator's other settings stay."""
    url = f"http://127.0.0.1:{api_port}"
    port = ports(api_port)
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",   # the venv, without asking for it on PATH
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port["worker_log"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port["trigger_log"]),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
    }
    # Two cores and a single-writer database: a handful of tasks at once, not 32.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    # Every component must sign and accept the same tokens; without a configured
    # secret each would invent its own.
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", os.urandom(24).hex())
    return env


def busy_ports(port_numbers) -> list[int]:
    busy = []
    for port in port_numbers:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def all_healthy(report: dict | None) -> bool:
    return bool(report) and all(report.get(part, {}).get("status") == "healthy"
                                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def password(home: Path, env: dict[str, str]) -> str | None:
    path = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                or home / "simple_auth_manager_passwords.json.generated")
    try:
        return json.loads(path.read_text()).get(USER)
    except (OSError, ValueError):
        return None


class Stack:
    """The four components, each in its own process group, logging to AIRFLOW_HOME/logs/ui/."""

    def __init__(self, airflow: Path, env: dict[str, str], log_dir: Path):
        self.airflow, self.env, self.log_dir = airflow, env, log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            with open(self.log_dir / f"{name}.log", "ab") as log:
                self.procs[name] = subprocess.Popen([str(self.airflow), name], env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)

    def dead(self) -> str | None:
        return next((name for name, proc in self.procs.items() if proc.poll() is not None), None)

    def stop(self) -> list[psutil.Process]:
        """SIGTERM to every component's group, then SIGKILL to whatever of this
        process's descendants is left after the grace period; what was killed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):        # ended meanwhile
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and psutil.Process().children(recursive=True):
            _reap()
            time.sleep(0.5)
        left = psutil.Process().children(recursive=True)
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(left, timeout=10)
        return left

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _reap() -> None:
    """Collect exited children, including orphans handed to this subreaper."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_subreaper() -> None:
    # Orphans of the components (a task process whose worker ended first) are
    # re-parented to this process instead of init, so stop() still finds them.
    with contextlib.suppress(AttributeError, OSError):     # not Linux: components' groups only
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    home = Path(os.environ.get("AIRFLOW_HOME", Path.cwd() / ".airflow")).resolve()
    api_port = int(os.environ.get("AIRFLOW_PORT", "8080"))
    bin_dir = Path(sys.executable).parent
    env = airflow_environment(dict(os.environ), home, api_port, bin_dir)
    url = env["AIRFLOW__API__BASE_URL"]
    if not (home / "airflow.db").exists() and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env:
        print(f"元数据库不存在：{home / 'airflow.db'}，请先运行 make setup 或 make run。", file=sys.stderr)
        return 2
    if max(ports(api_port).values()) > 65535:
        print(f"AIRFLOW_PORT 须不大于 {65535 - TRIGGER_LOG_OFFSET}（日志端口为其加 {WORKER_LOG_OFFSET} 与 {TRIGGER_LOG_OFFSET}）。",
              file=sys.stderr)
        return 2
    if busy := busy_ports(ports(api_port).values()):
        print(f"端口 {busy} 已被占用，请换一个 AIRFLOW_PORT（例如 make ui AIRFLOW_PORT=8081）。", file=sys.stderr)
        return 2

    _become_subreaper()
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    stack = Stack(bin_dir / "airflow", env, home / "logs" / "ui")
    print(f"正在启动 Airflow（{', '.join(COMPONENTS)}），日志在 {stack.log_dir}/ …", flush=True)
    status = 0
    try:
        stack.start()
        deadline = time.monotonic() + 300
        while not all_healthy(health(url)):
            if name := stack.dead():
                print(f"{name} 启动失败：\n{stack.log_tail(name)}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"Airflow 五分钟内未就绪：{health(url)}", file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"\nAirflow 已就绪：{url}\n"
              f"  用户名：{USER}\n"
              f"  密码：  {password(home, env) or '（见 Airflow 在 ' + str(home) + ' 生成的密码文件）'}\n"
              f"按 Ctrl+C 停止全部进程。\n", flush=True)
        while not (name := stack.dead()):
            time.sleep(1)
        print(f"{name} 意外退出，正在停止其余进程：\n{stack.log_tail(name)}", file=sys.stderr)
        status = 1
    except _Stop as stop:
        print(f"\n收到 {stop}，正在停止 Airflow …", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl+C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        killed = stack.stop()
        print("已全部停止" + (f"（{len(killed)} 个进程未在 {STOP_GRACE_SECONDS} 秒内退出，已强制结束）" if killed else "") + "。",
              flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

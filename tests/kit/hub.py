"""A real JupyterHub for the tests: local users, a test authenticator, local single-user servers.

:func:`start_hub` runs ``jupyterhub`` (with ``configurable-http-proxy``) on 127.0.0.1 with
``DummyAuthenticator`` (meant for tests: any password, here only for the users made by
:func:`make_users` with ``useradd``) and :class:`NamespaceSpawner`, JupyterHub's
``LocalProcessSpawner`` with one change for test machines: the students' servers must run as
the students, from the course environment, and on CI that environment (and the Python it was
made from) lives under ``/root``, which no other user may enter. Each server therefore starts
in a private mount namespace where ``/root`` (any such unreadable folder) is an empty,
traversable tmpfs with only those folders bind-mounted back, read-only, then drops to the
student with ``setpriv``. On a real hub the environment sits in a readable place
(``/opt/...``) and the plain ``LocalProcessSpawner`` is enough (autograde/README.md).

Everything is stopped by :meth:`Hub.stop` (the hub stops its servers on SIGTERM;
``cleanup_servers``) and the users are removed by :func:`remove_users`, their leftover
processes ended by process id; the test's fixtures call both, also when a test fails.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from autograde.sandbox import reachable_by_others
from kit import REPO

try:  # the hub process imports this module for its spawner; the tests import it without jupyterhub too
    from jupyterhub.spawner import LocalProcessSpawner
    from traitlets import List, Unicode
except ImportError:  # pragma: no cover - the tests skip (or fail in CI) with problem() first
    LocalProcessSpawner = object

HUB_START_S = 60      # the hub answers its API
SERVER_READY_S = 120  # a student's server is ready (login to JupyterLab: about 4 s on an idle machine)
USER_PREFIX = "ckhub"


def problem() -> str | None:
    """Why a hub cannot be started here, in words (None: it can)."""
    if os.geteuid() != 0:
        return "the hub test makes local users and starts servers as them: run it as root"
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed: pip install -r requirements.txt (the test extra)"
    if not proxy_command():
        return "configurable-http-proxy is not installed: npm install -g configurable-http-proxy"
    missing = [tool for tool in ("useradd", "userdel", "unshare", "setpriv", "mount") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)} (util-linux, passwd)"
    return None


def proxy_command() -> str | None:
    return shutil.which("configurable-http-proxy") or shutil.which(
        "configurable-http-proxy", path=str(Path(sys.executable).parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- users

def make_users(count: int) -> list[str]:
    """``count`` new local users with home folders, named uniquely for this run."""
    tag = secrets.token_hex(3)
    names = [f"{USER_PREFIX}{tag}{chr(ord('a') + i)}" for i in range(count)]
    made = []
    try:
        for name in names:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--key", "UMASK=022", name],
                           check=True, capture_output=True, text=True)
            made.append(name)
    except subprocess.CalledProcessError as exc:
        remove_users(made)
        raise RuntimeError(f"useradd {exc.args[1][-1]} failed: {exc.stderr.strip()}") from None
    return names


def user_pids(name: str) -> list[int]:
    proc = subprocess.run(["ps", "-u", name, "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()]


def remove_users(names: list[str]) -> None:
    """End the users' leftover processes (by id) and remove the users, their homes and what they left in
    the temp folder (PyTorch's compile cache, ``torchinductor_<user>``, for one)."""
    for name in names:
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
        for _ in range(3):
            pids = user_pids(name)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        temp = Path(tempfile.gettempdir())
        for entry in list(temp.iterdir()):
            try:
                if entry.lstat().st_uid != uid:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:
                pass
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def give(path: Path, name: str) -> None:
    """Make ``path`` (and everything below it) belong to user ``name``."""
    entry = pwd.getpwnam(name)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


# --------------------------------------------------------------------------- the spawner

def namespace_plan(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(folders to cover with an empty tmpfs, folders to bind back) so that other users reach ``paths``."""
    hide, expose = [], []
    for path in paths:
        path = path.resolve()
        if not path.exists() or reachable_by_others(path):
            continue
        blocked = next(p for p in [*reversed(path.parents), path] if not p.stat().st_mode & stat.S_IXOTH)
        if str(blocked) not in hide:
            hide.append(str(blocked))
        if str(path) not in expose:
            expose.append(str(path))
    return hide, expose


def namespace_cmd(hide: list[str], expose: list[str], server: list[str]) -> list[str]:
    """A command that starts ``server`` as ``$USER`` in a mount namespace laid out by ``hide``/``expose``."""
    q = shlex.quote
    script = ["set -e", "stage=$(mktemp -d /tmp/coursekit-hubns-XXXXXX)"]
    script += [f"mkdir $stage/{i}; mount --bind {q(p)} $stage/{i}" for i, p in enumerate(expose)]
    script += [f"mount -t tmpfs -o mode=0755,size=1m coursekit-hub {q(h)}" for h in hide]
    script += [f"mkdir -p {q(p)}; mount --bind $stage/{i} {q(p)}; mount -o remount,bind,ro {q(p)}; "
               f"umount $stage/{i}; rmdir $stage/{i}" for i, p in enumerate(expose)]
    script += ["rmdir $stage", 'cd "$HOME"',
               'exec setpriv --reuid="$(id -u "$USER")" --regid="$(id -g "$USER")" --init-groups -- "$@"']
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "; ".join(script),
            "coursekit-hub-server", *server]


class NamespaceSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose servers see the course environment even where it lives under /root.

    The server is started as root in a private mount namespace (``namespace_cmd``), which drops
    to the student before the server runs; the student's own rights apply from there on.
    """

    if LocalProcessSpawner is not object:
        hide = List(Unicode(), config=True, help="folders to cover with an empty tmpfs")
        expose = List(Unicode(), config=True, help="folders to bind back, read-only, below them")

        def make_preexec_fn(self, name):
            return None  # stay root until the namespace is laid out; setpriv drops to the student

        async def start(self):
            server = list(self.cmd)
            self.cmd = namespace_cmd(list(self.hide), list(self.expose), server)
            try:
                return await super().start()
            finally:
                self.cmd = server


# --------------------------------------------------------------------------- the hub

@dataclass
class Hub:
    """A running JupyterHub on 127.0.0.1."""

    work: Path
    port: int
    token: str
    process: subprocess.Popen
    log: Path
    users: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/hub/api/{path}", method=method, data=data,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, user: str, timeout: float = SERVER_READY_S) -> None:
        """Wait until the hub's API says ``user``'s server is ready (a user's server answers the hub cookie 403)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = (self.api(f"users/{user}").get("servers") or {}).get("")
            if server and server.get("ready"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{user}'s server was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # the hub stops every server it started (cleanup_servers) and its proxy
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def hub_config(work: Path, *, port: int, token: str, users: list[str], environment: dict[str, str],
               hide: list[str], expose: list[str]) -> str:
    """jupyterhub_config.py: the settings of the test's hub (autograde/README.md quotes them)."""
    hub_port, proxy_port = free_port(), free_port()
    singleuser = str(Path(sys.executable).parent / "jupyterhub-singleuser")
    return f"""# The test hub (tests/kit/hub.py): every address on 127.0.0.1, state in {work}.
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{proxy_command()!r}]
c.ConfigurableHTTPProxy.pid_file = {str(work / "proxy.pid")!r}
c.JupyterHub.pid_file = {str(work / "hub.pid")!r}
c.JupyterHub.db_url = {f"sqlite:///{work / 'jupyterhub.sqlite'}"!r}
c.JupyterHub.cookie_secret_file = {str(work / "cookie_secret")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
# Test logins: DummyAuthenticator takes any password (its `password` setting is deprecated;
# SharedPasswordAuthenticator.user_password replaces it), but only from the users made for the test.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(users)!r}
c.JupyterHub.spawner_class = "kit.hub.NamespaceSpawner"
c.NamespaceSpawner.hide = {hide!r}
c.NamespaceSpawner.expose = {expose!r}
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--LabApp.expose_app_in_browser=True"]  # the test reads cell outputs from JupyterLab's model
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
c.Spawner.environment = {environment!r}
c.Spawner.http_timeout = {SERVER_READY_S}
c.Spawner.start_timeout = {SERVER_READY_S}
# The test's own API token, to poll each server's `ready` (the hub cookie alone gets 403 from a server).
c.JupyterHub.services = [{{"name": "coursekit-test", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "coursekit-test", "services": ["coursekit-test"],
                             "scopes": ["admin:users", "admin:servers", "list:users"]}}]
"""


def start_hub(work: Path, users: list[str], environment: dict[str, str], timeout: float = HUB_START_S) -> Hub:
    """Start JupyterHub with its state in ``work`` for ``users``; return once its API answers."""
    work.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(24)
    hide, expose = namespace_plan([Path(sys.prefix), Path(sys.base_prefix), REPO,
                                   *[Path(v) for k, v in environment.items() if k == "COURSE_DATA_DIR"]])
    config = work / "jupyterhub_config.py"
    config.write_text(hub_config(work, port=port, token=token, users=users, environment=environment,
                                 hide=hide, expose=expose))
    log = work / "hub.log"
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    with open(log, "w") as fh:
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=work, env=env,
                                   stdout=fh, stderr=subprocess.STDOUT)
    hub = Hub(work, port, token, process, log, users)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with code {process.returncode}:\n{hub.log_tail()}")
        try:
            hub.api("")
            return hub
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            hub.stop()
            raise RuntimeError(f"jupyterhub did not answer within {timeout:.0f} s:\n{hub.log_tail()}")
        time.sleep(0.5)

"""A libvirtd of Basalt's own: private directories, optional network namespace.

Production hosts normally run the distribution's libvirtd (systemd starts it,
URI ``qemu:///system``) and Basalt's networks live in the host namespace. This
module is for the other cases: hosts without a system libvirtd (containers, CI,
this project's test machines), and Basalt networks kept in a network
namespace (the tests), where QEMU must run in that namespace to open the
taps on its bridges. The simplest robust way to get that is to run libvirtd
itself in the namespace: every QEMU it spawns inherits it.

A root libvirtd always uses the system paths (/etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt), so two of them would
share sockets, pid files and domain state. This one runs in a private mount
namespace (``unshare --mount``, inside ``ip netns exec NS`` when a namespace
is given) where each of those paths is bind-mounted from a directory under
`root`; where a path does not exist on the host its parent is covered with a
tmpfs first, so nothing is ever created outside `root`. The sockets are
therefore visible from the host as ``ROOT/run/libvirt-sock``:
``uri = qemu:///system?socket=ROOT/run/libvirt-sock``.

Its QEMU configuration suits a daemon that belongs to Basalt: QEMU runs as
root (it must open the NBD socket and the console log under Basalt's state
directory), no security driver or relabelling, no cgroups (no systemd
needed), and QEMU's stdout/stderr go to plain files (no virtlogd). libvirt
insists that its compiled-in QEMU user ``libvirt-qemu`` exists even when it is
not used; when the host lacks it (libvirt-daemon-system not installed), the
private mount namespace gets a copy of /etc/passwd and /etc/group that has it.

Stopping libvirtd leaves running guests running (libvirt reconnects to them
when it starts again), unless ``stop(destroy_domains=True)``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time

from network.processes import alive, pid_from_file

from .errors import HypervisorError

QEMU_CONF = """\
# Written by Basalt for its private libvirtd.
user = "{user}"
group = "{group}"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""

LIBVIRTD_CONF = """\
# Written by Basalt for its private libvirtd.
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
"""

_DIRS = (
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
)
_SOCKET_MAX = 107


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class PrivateLibvirtd:
    """One libvirtd with its state under `root`, in network namespace `netns` if given."""

    def __init__(self, root: str, netns: str | None = None, qemu_user: str = "root",
                 qemu_group: str = "root"):
        self.root = os.path.abspath(root)
        self.netns = netns
        self.qemu_user, self.qemu_group = qemu_user, qemu_group
        self.socket = os.path.join(self.root, "run", "libvirt-sock")
        if len(self.socket) > _SOCKET_MAX:
            raise ValueError(f"{self.socket} is too long for a Unix socket; use a shorter root")
        self.log_path = os.path.join(self.root, "libvirtd.log")
        self.pid_path = os.path.join(self.root, "run", "libvirtd.pid")
        self._proc: subprocess.Popen | None = None
        self._mnt_ns: str | None = None

    @property
    def uri(self) -> str:
        """The libvirt URI of this daemon."""
        return f"qemu:///system?socket={self.socket}"

    def pid(self) -> int | None:
        """Pid of the running daemon, or None."""
        return pid_from_file(self.pid_path,
                             lambda argv: os.path.basename(argv[0]) == b"libvirtd")

    def _script(self) -> str:
        lines = ["set -e"]
        for sub, target in _DIRS:
            src = shlex.quote(os.path.join(self.root, sub))
            dst = shlex.quote(target)
            parent = shlex.quote(os.path.dirname(target))
            lines.append(f"if [ ! -d {dst} ]; then mount -t tmpfs -o mode=0755 basalt {parent};"
                         f" mkdir -p {dst}; fi")
            lines.append(f"mount --bind {src} {dst}")
        passwd = shlex.quote(os.path.join(self.root, "passwd"))
        group = shlex.quote(os.path.join(self.root, "group"))
        lines += [
            "if ! getent passwd libvirt-qemu >/dev/null || ! getent group libvirt-qemu >/dev/null;"
            " then",
            f"  cp /etc/passwd {passwd}; cp /etc/group {group}",
            "  getent passwd libvirt-qemu >/dev/null || echo"
            f" 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/nonexistent:/usr/sbin/nologin' >> {passwd}",
            f"  getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >> {group}",
            f"  mount --bind {passwd} /etc/passwd; mount --bind {group} /etc/group",
            "fi",
            "exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon (or adopt the one already running from `root`) and wait for it."""
        import libvirt

        if self.pid() is not None and self._answers(libvirt):
            self._mnt_ns = _mount_ns(self.pid() or 0)
            return
        for tool in ("libvirtd", "unshare", "mount"):
            if shutil.which(tool) is None:
                raise HypervisorError(f"{tool} is not installed", status=503,
                                      code="HypervisorUnavailable")
        for sub, _ in _DIRS:
            os.makedirs(os.path.join(self.root, sub), mode=0o755, exist_ok=True)
        etc = os.path.join(self.root, "etc")
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write(QEMU_CONF.format(user=self.qemu_user, group=self.qemu_group))
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write(LIBVIRTD_CONF)
        script = os.path.join(self.root, "start.sh")
        with open(script, "w") as f:
            f.write(self._script())
        argv = ["unshare", "--mount", "--propagation", "private", "sh", script]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HypervisorError(f"libvirtd exited ({self._proc.returncode}): "
                                      f"{self._log_tail()}", status=503,
                                      code="HypervisorUnavailable")
            if os.path.exists(self.socket) and self._answers(libvirt):
                self._mnt_ns = _mount_ns(self._proc.pid)
                return
            time.sleep(0.1)
        self.stop()
        raise HypervisorError(f"libvirtd did not come up in {timeout:.0f}s: {self._log_tail()}",
                              status=503, code="HypervisorUnavailable")

    def _answers(self, libvirt) -> bool:
        try:
            libvirt.open(self.uri).close()
            return True
        except libvirt.libvirtError:
            return False

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if " error : " in ln or "rror" in ln]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(nothing in the log)"

    def stop(self, destroy_domains: bool = False, timeout: float = 15.0) -> None:
        """Stop the daemon. With `destroy_domains`, first destroy every running domain,
        and afterwards kill whatever still runs in the daemon's mount namespace."""
        if destroy_domains and self.pid() is not None:
            import libvirt

            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError:
                conn = None
            if conn is not None:
                try:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                        try:
                            dom.destroy()
                        except libvirt.libvirtError:
                            pass
                finally:
                    conn.close()
        pid = self._proc.pid if self._proc is not None and self._proc.poll() is None \
            else self.pid()
        mnt_ns = self._mnt_ns or (_mount_ns(pid) if pid else None)
        if pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and alive(pid):
                    if self._proc is not None and self._proc.pid == pid:
                        self._proc.poll()
                    time.sleep(0.05)
                if not alive(pid):
                    break
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        if destroy_domains and mnt_ns:
            self._kill_mount_namespace(mnt_ns)

    @staticmethod
    def _kill_mount_namespace(mnt_ns: str) -> None:
        """SIGKILL every process left in the private mount namespace (QEMUs)."""
        own = _mount_ns(os.getpid())
        if mnt_ns == own:
            return
        for _ in range(50):
            left = []
            for entry in os.listdir("/proc"):
                if entry.isdigit() and _mount_ns(int(entry)) == mnt_ns and alive(int(entry)):
                    left.append(int(entry))
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

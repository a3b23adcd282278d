"""ComputeManager: Basalt's VMs as persistent libvirt domains.

Records (LMDB under `state_dir`) say what each VM is; libvirt holds one
persistent domain per VM (named ``basalt-NAME``, tagged with Basalt metadata)
and is the truth about whether it runs. Both survive a restart of
``basalt serve``: `restore()` re-attaches to them, recreates the VM's tap and
address reservation if the host lost them, redefines a domain libvirt lost,
and restarts VMs that were meant to run but went down without the guest
asking (a host reboot). A guest that powered itself off stays off.

A VM is: one Basalt volume as its virtio disk (NBD over a Unix socket), one
virtio NIC on a Basalt network with the MAC/IP reserved in that network's IPAM
(dnsmasq hands the reserved address out), a serial console logged to
``state_dir/console/NAME.log`` that takes input on ``state_dir/console/NAME.sock``,
optionally a direct-boot kernel/initrd/cmdline
and a cloud-init seed disk.

Every method blocks (libvirt, netlink, subprocesses); from asyncio call them
through ``asyncio.to_thread``. One manager per state directory and process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import libvirt

from network import NetworkError, NetworkNotFoundError

from . import accel as accel_mod
from . import console as console_mod
from . import seed as seed_mod
from .domain import METADATA_NS, render
from .errors import (
    ComputeError,
    HypervisorError,
    VMExistsError,
    VMNotFoundError,
    VMStateError,
    VolumeUnavailableError,
    from_network_error,
)
from .spec import VMRecord, VMSpec, domain_name, owner, validate_name
from .store import RecordStore
from .volumes import ExportInfo, export_info

log = logging.getLogger("basalt.compute")

STOP_TIMEOUT = 30.0
_POLL = 0.2

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "guest-shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from-snapshot",
}
_UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; Basalt reports them itself."""


libvirt.registerErrorHandler(_quiet, None)


def _hv(what: str, exc: libvirt.libvirtError) -> HypervisorError:
    return HypervisorError(f"{what}: {exc.get_error_message() or exc}")


class ComputeManager:
    """Basalt's VMs on the libvirt at `libvirt_uri`, their disks at the NBD Unix socket.

    `network_manager` is the `network.NetworkManager` of the networks the
    VMs join (its bridges must be in the network namespace libvirtd and QEMU
    run in). `volume_lookup(name)` says whether a volume exists (an
    `ExportInfo` or None); by default it asks the NBD server at `nbd_socket`.
    `accel` forces "kvm" or "tcg"; by default `compute.accel.detect()` decides
    on the first create (cached in ``state_dir/accel.json``); ``test:`` URIs
    use libvirt's test driver. `nic="bridge"` lets libvirt create the taps
    (``<interface type='bridge'>``) instead of using Basalt's own.
    """

    def __init__(
        self,
        state_dir: str,
        libvirt_uri: str,
        network_manager: Any,
        nbd_socket: str,
        *,
        volume_lookup: Callable[[str], ExportInfo | None] | None = None,
        accel: str | None = None,
        nic: str = "tap",
    ):
        if accel not in (None, "kvm", "tcg"):
            raise ValueError(f"accel must be 'kvm', 'tcg' or None, not {accel!r}")
        if nic not in ("tap", "bridge"):
            raise ValueError(f"nic must be 'tap' or 'bridge', not {nic!r}")
        self.state_dir = os.path.abspath(state_dir)
        self.libvirt_uri = libvirt_uri
        self.networks = network_manager
        self.nbd_socket = os.path.abspath(nbd_socket)
        self.nic = nic
        self._accel = accel
        self._verdict: accel_mod.Verdict | None = None
        self._volume_lookup = volume_lookup or (lambda name: export_info(self.nbd_socket, name))
        self.console_dir = os.path.join(self.state_dir, "console")
        self.seed_dir = os.path.join(self.state_dir, "seed")
        for d in (self.state_dir, self.console_dir, self.seed_dir):
            os.makedirs(d, exist_ok=True)
        self.store = RecordStore(os.path.join(self.state_dir, "vms"))
        self._lock = threading.RLock()
        self._conn_lock = threading.Lock()
        self._accel_lock = threading.Lock()
        self._input_locks: dict[str, threading.Lock] = {}
        self._conn: libvirt.virConnect | None = None

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        """Drop the libvirt connection and the records handle; the VMs keep running."""
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
        self.store.close()

    def __enter__(self) -> ComputeManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self) -> libvirt.virConnect:
        """The libvirt connection, reopened if libvirtd was restarted."""
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                self._conn = libvirt.open(self.libvirt_uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(
                    f"cannot connect to libvirt at {self.libvirt_uri}: "
                    f"{exc.get_error_message()}", status=503, code="HypervisorUnavailable"
                ) from None
            return self._conn

    def accelerator(self) -> accel_mod.Verdict:
        """The accelerator new VMs get, and why (runs the KVM probe once)."""
        with self._accel_lock:  # the start-up probe and a first create must not both boot one
            if self._verdict is None:
                if self.libvirt_uri.startswith("test:"):
                    self._verdict = accel_mod.Verdict("test", "libvirt test driver", time.time())
                elif self._accel:
                    self._verdict = accel_mod.Verdict(self._accel, "chosen by the caller",
                                                      time.time())
                else:
                    self._verdict = accel_mod.detect(os.path.join(self.state_dir, "accel.json"))
            return self._verdict

    def _domain_type(self) -> str:
        verdict = self.accelerator()
        return "test" if verdict.accel == "test" else verdict.domain_type

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.connection().lookupByName(domain_name(name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise _hv(f"looking up VM {name}", exc) from None

    def _record(self, name: str) -> VMRecord:
        validate_name(name)
        record = self.store.get(name)
        if record is None:
            raise VMNotFoundError(f"no VM named {name!r}")
        return record

    def _is_ours(self, dom: libvirt.virDomain, name: str) -> bool:
        try:
            raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        except libvirt.libvirtError:
            return False
        try:
            return ET.fromstring(raw).get("name") == name
        except ET.ParseError:
            return False

    def _xml(self, record: VMRecord) -> str:
        bridge = None
        if self.nic == "bridge":
            bridge = self.networks.get(record.network).bridge
        return render(record, self.nbd_socket, bridge=bridge,
                      console_socket=console_mod.socket_path(record.console_log))

    def _define(self, record: VMRecord) -> libvirt.virDomain:
        try:
            return self.connection().defineXML(self._xml(record))
        except libvirt.libvirtError as exc:
            raise _hv(f"defining VM {record.name}", exc) from None

    def _attach_network(self, network: str, vm: str) -> tuple[str, str, str]:
        """Reserve the VM's (mac, ip) and make its tap; returns (mac, ip, tap or '').

        Idempotent: the same owner gets the same reservation and tap back.
        """
        try:
            mac, ip = self.networks.allocate(network, owner(vm))
            tap = self.networks.create_tap(network, owner(vm)) if self.nic == "tap" else ""
        except NetworkError as exc:
            raise from_network_error(exc) from None
        return mac, ip, tap

    def _detach_network(self, network: str, vm: str) -> None:
        """Remove the VM's tap and reservation; a network that is gone is not an error."""
        for step in (self.networks.delete_tap, self.networks.release):
            try:
                step(network, owner(vm))
            except NetworkNotFoundError:
                continue
            except Exception as exc:
                log.warning("could not clean up %s of VM %s on %s: %s",
                            step.__name__, vm, network, exc)

    def _state(self, dom: libvirt.virDomain | None) -> tuple[str, str]:
        if dom is None:
            return "undefined", ""
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "undefined", ""
            raise _hv("reading domain state", exc) from None
        name = _STATES.get(state, "unknown")
        why = _SHUTOFF_REASONS.get(reason, str(reason)) if state == libvirt.VIR_DOMAIN_SHUTOFF \
            else ""
        return name, why

    def _describe(self, record: VMRecord) -> dict[str, Any]:
        state, reason = self._state(self._lookup(record.name))
        return {**record.as_dict(), "state": state, "state_reason": reason}

    # -- lifecycle --------------------------------------------------------------

    def create(
        self,
        name: str,
        volume: str,
        network: str,
        memory: int | str = 256,
        cpus: int | str = 1,
        kernel: str | None = None,
        initrd: str | None = None,
        cmdline: str | None = None,
        user_data: str | None = None,
    ) -> VMRecord:
        """Define VM `name` (not started) on `volume` and `network`; returns its record.

        `memory` is MiB or a size string ("256M", "1G"). A `kernel` boots
        directly (with `initrd` and `cmdline`); without one the volume's boot
        loader runs. `user_data` adds a cloud-init NoCloud seed disk.
        Leaves nothing behind when it fails.
        """
        spec = VMSpec(name, volume, network, memory, cpus, kernel, initrd, cmdline,
                      user_data).validated()
        with self._lock:
            if self.store.get(spec.name) is not None:
                raise VMExistsError(f"VM {spec.name!r} already exists")
            try:
                self.networks.get(spec.network)
            except NetworkError as exc:
                raise from_network_error(exc) from None
            self._check_volume(spec.volume)
            stale = self._lookup(spec.name)
            if stale is not None:
                if not self._is_ours(stale, spec.name) or stale.isActive():
                    raise VMExistsError(
                        f"a libvirt domain named {domain_name(spec.name)!r} already exists"
                    )
                # Left over by a create that died before its record was written.
                stale.undefine()
            domain_type = self._domain_type()
            vm_uuid = str(uuid.uuid4())
            console_log = os.path.join(self.console_dir, f"{spec.name}.log")
            seed_path = None
            if spec.user_data is not None:
                seed_path = os.path.join(self.seed_dir, f"{spec.name}.img")
            defined = False
            mac = ip = tap = None
            try:
                mac, ip, tap = self._attach_network(spec.network, spec.name)
                if seed_path:
                    seed_mod.build(seed_path, instance_id=vm_uuid, hostname=spec.name, mac=mac,
                                   user_data=spec.user_data)
                if os.path.exists(console_log):  # from an earlier VM of that name
                    os.unlink(console_log)
                record = VMRecord(
                    name=spec.name, uuid=vm_uuid, volume=spec.volume, network=spec.network,
                    memory_mib=int(spec.memory), cpus=int(spec.cpus), mac=mac, ip=ip, tap=tap,
                    console_log=console_log, domain_type=domain_type, kernel=spec.kernel,
                    initrd=spec.initrd, cmdline=spec.cmdline, seed=seed_path,
                    want_running=False, created_at=time.time(),
                )
                self._define(record)
                defined = True
                self.store.add(record)
            except BaseException:
                if defined:
                    dom = self._lookup(spec.name)
                    if dom is not None:
                        try:
                            dom.undefine()
                        except libvirt.libvirtError:
                            pass
                if mac is not None:
                    self._detach_network(spec.network, spec.name)
                if seed_path and os.path.exists(seed_path):
                    os.unlink(seed_path)
                raise
        log.info("VM created", extra={"fields": {"vm": spec.name, "volume": spec.volume,
                                                 "network": spec.network, "ip": ip,
                                                 "accel": domain_type}})
        return record

    def _check_volume(self, volume: str) -> None:
        info = self._volume_lookup(volume)
        if info is None:
            raise VolumeUnavailableError(f"volume {volume!r} does not exist")
        if info.read_only:
            raise VolumeUnavailableError(
                f"volume {volume!r} is read-only (a snapshot?); clone it to boot from it",
                status=409, code="VolumeReadOnly")
        for other in self.store.all():
            if other.volume == volume:
                raise VolumeUnavailableError(
                    f"volume {volume!r} is already the disk of VM {other.name!r}",
                    status=409, code="VolumeInUse")

    def get(self, name: str) -> VMRecord:
        """The record of VM `name`; raises VMNotFoundError."""
        return self._record(name)

    def info(self, name: str) -> dict[str, Any]:
        """The record of VM `name` plus its live ``state`` and ``state_reason``."""
        return self._describe(self._record(name))

    def list(self) -> list[dict[str, Any]]:
        """`info()` of every VM, sorted by name."""
        return [self._describe(r) for r in self.store.all()]

    def state(self, name: str) -> str:
        """The live state of VM `name` ("running", "shutoff", ...)."""
        return self._state(self._lookup(self._record(name).name))[0]

    def start(self, name: str) -> dict[str, Any]:
        """Boot VM `name`; a no-op when it runs. Recreates its tap and reservation if lost."""
        with self._lock:
            record = self._record(name)
            dom = self._lookup(name)
            if dom is None or not dom.isActive():
                self._attach_network(record.network, name)
                # Redefine from the record: picks up a changed NBD socket path.
                dom = self._define(record)
                try:
                    dom.create()
                except libvirt.libvirtError as exc:
                    raise _hv(f"starting VM {name}", exc) from None
            if not record.want_running:
                record = _replace(record, want_running=True)
                self.store.put(record)
            return self._describe(record)

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
        """Press the ACPI power button, wait up to `timeout` s, then pull the plug.

        The result's ``stopped_by`` says which it took: "acpi" (the guest shut
        down), "destroy", or "" (it was not running).
        """
        with self._lock:
            record = self._record(name)
            dom = self._lookup(name)
            how = ""
            if dom is not None and dom.isActive():
                how = "destroy"
                try:
                    self._acpi(dom, "shutdown")
                    deadline = time.monotonic() + max(timeout, 0.0)
                    while time.monotonic() < deadline:
                        if not dom.isActive():
                            how = "acpi"
                            break
                        time.sleep(_POLL)
                except libvirt.libvirtError:
                    pass  # the guest may be gone already; destroy settles it
                if how == "destroy":
                    try:
                        dom.destroy()
                    except libvirt.libvirtError as exc:
                        if dom.isActive():
                            raise _hv(f"destroying VM {name}", exc) from None
                        how = "acpi"
            if record.want_running:
                record = _replace(record, want_running=False)
                self.store.put(record)
            return {**self._describe(record), "stopped_by": how}

    def _acpi(self, dom: libvirt.virDomain, action: str) -> None:
        if action == "shutdown":
            flagged, plain = dom.shutdownFlags, dom.shutdown
            flag = libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        else:
            flagged, plain = dom.reboot, (lambda: dom.reboot(0))
            flag = libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN
        try:
            flagged(flag)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _UNSUPPORTED:
                raise
            plain()

    def reboot(self, name: str, hard: bool = False) -> dict[str, Any]:
        """Reboot a running VM: ACPI reboot request, or with `hard` an immediate reset."""
        with self._lock:
            record = self._record(name)
            dom = self._lookup(name)
            if dom is None or not dom.isActive():
                raise VMStateError(f"VM {name!r} is not running")
            try:
                if hard:
                    dom.reset(0)
                else:
                    self._acpi(dom, "reboot")
            except libvirt.libvirtError as exc:
                raise _hv(f"rebooting VM {name}", exc) from None
            return self._describe(record)

    def delete(self, name: str) -> None:
        """Destroy (if running) and undefine VM `name`, release its address and tap.

        The volume is left alone: it is the user's data.
        """
        with self._lock:
            record = self._record(name)
            dom = self._lookup(name)
            if dom is not None:
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise _hv(f"deleting VM {name}", exc) from None
            self._detach_network(record.network, name)
            for path in (record.seed, record.console_log,
                         console_mod.socket_path(record.console_log)):
                if path:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            self.store.remove(name)
        log.info("VM deleted", extra={"fields": {"vm": name}})

    # -- console ------------------------------------------------------------------

    def console_path(self, name: str) -> str:
        return self._record(name).console_log

    def console(self, name: str, offset: int = 0, limit: int | None = None) -> tuple[bytes, int]:
        """The guest's serial output from `offset` (negative: from the end); (data, next offset)."""
        return console_mod.read(self.console_path(name), offset, limit)

    def running(self, name: str) -> bool:
        dom = self._lookup(name)
        try:
            return dom is not None and bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def follow_console(self, name: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Async iterator of serial output from `offset`, ending once the VM is not running."""
        path = self.console_path(name)
        return console_mod.follow(path, offset, until=lambda: not self.running(name))

    def console_input(self, name: str, data: bytes,
                      timeout: float = console_mod.INPUT_TIMEOUT) -> None:
        """Type `data` into the serial console of running VM `name`.

        One writer per VM at a time (QEMU serves one connection at a time);
        raises ComputeError ``ConsoleNotReading`` when the guest has not taken
        it within `timeout` seconds, ``ConsoleOutputOnly`` when the VM runs
        without a console socket (started by an older Basalt).
        """
        record = self._record(name)
        path = console_mod.socket_path(record.console_log)
        if path is None:
            raise ComputeError(
                f"the console of VM {name!r} is output-only: its socket path would be longer "
                f"than {console_mod.SOCKET_MAX} bytes (use a shorter --data-dir)",
                status=409, code="ConsoleOutputOnly")
        if not self.running(name):
            raise VMStateError(f"VM {name!r} is not running")
        if not data:
            return
        lock = self._input_locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise ComputeError(f"another input to the console of VM {name!r} is still waiting "
                               "for the guest", status=504, code="ConsoleNotReading")
        try:
            console_mod.send(path, data, timeout)
        except console_mod.ConsoleClosed as exc:
            if not self.running(name):
                raise VMStateError(f"VM {name!r} is not running") from None
            raise ComputeError(
                f"VM {name!r} takes no console input ({exc}): it was started with an "
                "output-only serial port by an older Basalt; stop and start it to type into it",
                status=409, code="ConsoleOutputOnly") from None
        except console_mod.ConsoleTimeout as exc:
            raise ComputeError(
                f"the guest of VM {name!r} did not read its serial port within {timeout:g} s "
                f"({exc}); is anything reading ttyS0?", status=504,
                code="ConsoleNotReading") from None
        finally:
            lock.release()

    # -- supervision ---------------------------------------------------------------

    def restore(self) -> list[str]:
        """Re-attach to the VMs after a restart; returns what was done, per VM.

        Idempotent. For each record: recreate the tap and reservation if the
        host lost them, redefine the domain if libvirt lost it (or update it
        while it is off), and start it again if it was meant to run but is off
        for a reason other than the guest shutting itself down. Problems of
        one VM do not stop the others; they are reported as "NAME: error: ...".
        """
        report: list[str] = []
        with self._lock:
            for record in self.store.all():
                try:
                    report += self._restore_one(record)
                except Exception as exc:
                    report.append(f"{record.name}: error: {exc}")
        return report

    def _restore_one(self, record: VMRecord) -> list[str]:
        done = []
        self._attach_network(record.network, record.name)
        dom = self._lookup(record.name)
        if dom is not None and dom.isActive():
            return [f"{record.name}: running"]
        state, reason = self._state(dom)
        self._define(record)
        if dom is None:
            done.append(f"{record.name}: redefined the domain libvirt had lost")
        if record.want_running and reason != "guest-shutdown":
            self.start(record.name)
            done.append(f"{record.name}: restarted (was {state}"
                        f"{', ' + reason if reason else ''})")
        elif record.want_running:
            self.store.put(_replace(record, want_running=False))
            done.append(f"{record.name}: off (the guest shut itself down)")
        else:
            done.append(f"{record.name}: off")
        return done


def _replace(record: VMRecord, **changes: Any) -> VMRecord:
    return dataclasses.replace(record, **changes)

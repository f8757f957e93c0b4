"""The limit stores: one suite for the in-process and the shared-memory store,
plus what only the shared one does (several workers, a dead worker's sockets)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from config.models import AuthConfig, LimitsConfig, RateLimit
from security.limits import ANONYMOUS, LimitPolicy, LimitStore, LocalLimits, SocketCap, bucket_take
from security.shared_limits import SharedLimits
from serving.cores import available_cores
from serving.supervisor import PortInUse, claim_port, describe_exit, restart_delay


def policy(max_sockets: int = 5, per_key: int | None = 3, rate: str | None = "2/s") -> LimitPolicy:
    auth = AuthConfig.model_validate(
        {
            "keys": [
                {"id": "a", "hash": "sha256:" + "0" * 64},
                {"id": "b", "hash": "sha256:" + "1" * 64, "max_sockets": 1, "rate_limit": "1/m"},
            ]
        }
    )
    limits = LimitsConfig.model_validate(
        {"max_sockets": max_sockets, "max_sockets_per_key": per_key, "rate_limit": rate}
    )
    return LimitPolicy.build(auth, limits)


def local(p: LimitPolicy) -> LimitStore:
    return LocalLimits(p)


def shared(p: LimitPolicy) -> LimitStore:
    return SharedLimits.create(p, workers=2).for_worker(0)


STORES: list[Callable[[LimitPolicy], LimitStore]] = [local, shared]


@pytest.mark.parametrize("make", STORES, ids=["local", "shared"])
def test_socket_caps_per_key_and_server(make: Callable[[LimitPolicy], LimitStore]) -> None:
    store = make(policy(max_sockets=5, per_key=3))
    assert [store.take_socket("a") for _ in range(4)] == [None, None, None, SocketCap.KEY]
    assert store.take_socket("b") is None
    assert store.take_socket("b") is SocketCap.KEY  # the key's own cap (1) wins over the default
    assert store.take_socket(ANONYMOUS) is None
    assert store.take_socket("unknown-id") is SocketCap.SERVER  # 5 open: the server's cap
    store.release_socket("a")
    assert store.take_socket("unknown-id") is None  # counted as anonymous
    assert store.take_socket(ANONYMOUS) is SocketCap.SERVER


@pytest.mark.parametrize("make", STORES, ids=["local", "shared"])
def test_release_never_goes_below_zero(make: Callable[[LimitPolicy], LimitStore]) -> None:
    store = make(policy(max_sockets=2, per_key=None))
    store.release_socket("a")
    assert store.take_socket("a") is None
    assert store.take_socket("a") is None
    assert store.take_socket("a") is SocketCap.SERVER


@pytest.mark.parametrize("make", STORES, ids=["local", "shared"])
def test_request_rate_per_key(make: Callable[[LimitPolicy], LimitStore]) -> None:
    store = make(policy(rate="2/s"))
    now = 1_000_000.0
    assert store.take_request("a", now) is None
    assert store.take_request("a", now) is None
    assert store.take_request("a", now) == pytest.approx(0.5)  # one token per 0.5 s
    assert store.take_request(ANONYMOUS, now) is None  # its own bucket
    assert store.take_request("a", now + 0.25) == pytest.approx(0.25)
    assert store.take_request("a", now + 0.5) is None
    assert store.take_request("b", now) is None
    assert store.take_request("b", now + 1.0) == pytest.approx(59.0)


@pytest.mark.parametrize("make", STORES, ids=["local", "shared"])
def test_no_rate_limit_admits_everything(make: Callable[[LimitPolicy], LimitStore]) -> None:
    store = make(policy(rate=None))
    assert all(store.take_request("a", 5.0) is None for _ in range(1000))


def test_bucket_refills_to_capacity_and_ignores_a_clock_step_back() -> None:
    limit = RateLimit(requests=3, per_seconds=3.0)
    level, at, wait = bucket_take(0.0, 10.0, limit, 100.0)
    assert (level, at, wait) == (2.0, 100.0, None)  # refilled to 3, one taken
    level, at, wait = bucket_take(0.5, 100.0, limit, 90.0)
    assert (level, at) == (0.5, 100.0) and wait == pytest.approx(0.5)


def test_shared_caps_hold_across_workers() -> None:
    store = SharedLimits.create(policy(max_sockets=4, per_key=3), workers=2)
    one, two = store.for_worker(0), store.for_worker(1)
    assert one.take_socket("a") is None
    assert two.take_socket("a") is None
    assert one.take_socket("a") is None
    assert two.take_socket("a") is SocketCap.KEY
    assert two.take_socket(ANONYMOUS) is None
    assert one.take_socket(ANONYMOUS) is SocketCap.SERVER
    now = 50.0
    assert one.take_request("a", now) is None
    assert two.take_request("a", now) is None
    assert one.take_request("a", now) is not None  # the bucket is shared too
    assert store.sockets() == 4


def test_a_dead_workers_sockets_are_released() -> None:
    store = SharedLimits.create(policy(max_sockets=3, per_key=None), workers=2)
    one, two = store.for_worker(0), store.for_worker(1)
    assert one.take_socket("a") is None
    assert one.take_socket("a") is None
    assert two.take_socket("a") is None
    assert two.take_socket("a") is SocketCap.SERVER
    store.reset_worker(0)
    assert store.sockets() == 1
    assert two.take_socket("a") is None


def _hold_lock_and_die(store: SharedLimits, ready: multiprocessing.synchronize.Event) -> None:
    store._lock.acquire()
    ready.set()
    signal.pause()


def test_reset_frees_the_lock_of_a_worker_killed_while_holding_it() -> None:
    ctx = multiprocessing.get_context("spawn")
    store = SharedLimits.create(policy(max_sockets=3, per_key=None), workers=2, context=ctx)
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock_and_die, args=(store.for_worker(0), ready))
    holder.start()
    try:
        assert ready.wait(20)
        holder.kill()
        holder.join(10)
        store.reset_worker(0)
        assert store.for_worker(1).take_socket("a") is None
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()
        holder.close()


def test_restart_delay_backs_off_quick_deaths() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [0.0, 0.5, 1, 2, 4, 8, 16, 30]


def test_describe_exit() -> None:
    assert describe_exit(0) == {"exit_status": 0}
    assert describe_exit(3) == {"exit_status": 3}
    assert describe_exit(-9) == {"signal": "SIGKILL"}


def test_claim_port_refuses_a_port_another_server_shares() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortInUse):
            claim_port("127.0.0.1", port)
    assert claim_port("127.0.0.1", port) == port
    assert claim_port("127.0.0.1", 0) > 0


def test_available_cores_follows_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 1
    cpu_max.write_text(f"{(affinity + 4) * 100000} 100000\n")
    assert available_cores(cpu_max) == affinity
    assert available_cores(tmp_path / "missing") == affinity


def reloaded_policy() -> LimitPolicy:
    """After a reload: key `a` removed, `b` allowed 2 sockets, key `c` added (1 socket, 1/m)."""
    auth = AuthConfig.model_validate(
        {
            "keys": [
                {"id": "b", "hash": "sha256:" + "1" * 64, "max_sockets": 2, "rate_limit": "1/m"},
                {"id": "c", "hash": "sha256:" + "2" * 64, "max_sockets": 1, "rate_limit": "1/m"},
            ]
        }
    )
    limits = LimitsConfig.model_validate({"max_sockets": 5, "max_sockets_per_key": 3})
    return LimitPolicy.build(auth, limits)


@pytest.mark.parametrize("make", STORES, ids=["local", "shared"])
def test_a_reload_keeps_open_sockets_counted_and_applies_new_limits(
    make: Callable[[LimitPolicy], LimitStore],
) -> None:
    store = make(policy(max_sockets=5, per_key=3))
    assert [store.take_socket(k) for k in ("a", "a", "b")] == [None, None, None]
    assert store.take_request("b", 100.0) is None
    store.set_policy(reloaded_policy())
    assert store.take_socket("c") is None  # a new key, with its own cap
    assert store.take_socket("c") is SocketCap.KEY
    assert store.take_socket("b") is None  # its new cap is 2
    assert store.take_socket(ANONYMOUS) is SocketCap.SERVER  # a, a, b, c, b are open
    store.release_socket("a")  # a removed key's socket closes against its own count
    assert store.take_socket("b") is SocketCap.KEY
    assert store.take_request("b", 100.0) is not None  # its spent token stays spent
    assert store.take_request("c", 100.0) is None
    assert store.take_request("c", 100.0) is not None
    store.release_socket("a")
    store.release_socket("c")
    assert [store.take_socket(k) for k in ("c", ANONYMOUS, ANONYMOUS)] == [None, None, None]
    assert store.take_socket(ANONYMOUS) is SocketCap.SERVER


def test_shared_limits_count_a_key_added_by_a_reload_per_worker() -> None:
    first = SharedLimits.create(policy(max_sockets=5, per_key=3), workers=2)
    workers = [first.for_worker(0), first.for_worker(1)]
    for store in workers:
        store.set_policy(reloaded_policy())
    assert [w.take_socket("c") for w in workers] == [None, None]  # cap 1, in each worker
    assert workers[0].take_socket("b") is None
    assert workers[1].take_socket("b") is None
    assert workers[1].take_socket("b") is SocketCap.KEY  # a start-up key: across workers
    assert first.sockets() == 4

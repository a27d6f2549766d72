"""serve.store.StateLock: exclusion within one process, whatever flock does."""

from __future__ import annotations

import threading

import pytest


@pytest.mark.parametrize("flock", ["per-process (as on NFS)", "real"])
def test_two_state_locks_of_one_process_exclude_each_other(tmp_path, monkeypatch, flock):
    """Two StateLock objects on one state dir, held from two threads: the
    second waits until the first lets go. On NFS Linux maps flock(2) to POSIX
    locks, which belong to the process, so there flock alone lets both in; NFS
    cannot be mounted here, so that case makes flock a no-op (what a lock the
    process already holds amounts to) and the process-wide lock must exclude."""
    import serve.store
    from serve.store import StateLock

    if flock != "real":
        monkeypatch.setattr(serve.store.fcntl, "flock", lambda fd, operation: None)
    first, second = StateLock(tmp_path / "lock"), StateLock(tmp_path / "lock")
    held, release, entered = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with first, first:  # re-entrant per object, as before
            held.set()
            release.wait(30)

    def enter() -> None:
        with second:
            entered.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    waiter = threading.Thread(target=enter)
    waiter.start()
    try:
        assert not entered.wait(1.0), "the second lock was entered while the first was held"
    finally:
        release.set()
        holder.join(30)
    assert entered.wait(30)  # and once the first lets go, the second gets in
    waiter.join(30)


def test_two_state_locks_of_one_process_never_overlap(tmp_path, monkeypatch):
    """Threads taking turns through two StateLock objects on one dir, flock a
    no-op (NFS, as above): never two inside at once."""
    import serve.store
    from serve.store import StateLock

    monkeypatch.setattr(serve.store.fcntl, "flock", lambda fd, operation: None)
    locks = [StateLock(tmp_path / "lock"), StateLock(tmp_path / "lock")]
    inside, most = [0], [0]

    def work(lock: StateLock) -> None:
        for _ in range(50):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                threading.Event().wait(0.001)
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(locks[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most[0] == 1

"""The CLI's allocator setting: which glibc calls it makes, and when it stays away."""

from __future__ import annotations

import pytest

from camlens import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    return fake


def test_glibc_keeps_large_buffers(libc: FakeLibc) -> None:
    assert allocator.keep_freed_memory() is True
    # M_MMAP_MAX = -4 -> 0: no mmap per large buffer; M_TRIM_THRESHOLD = -1 -> INT_MAX
    assert libc.calls == [(-4, 0), (-1, 2**31 - 1)]


def test_the_users_own_tunables_win(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_other_c_libraries_are_left_alone(libc: FakeLibc,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False and libc.calls == []


def test_the_cli_calls_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from camlens import cli

    called: list[bool] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: called.append(True) or True)
    assert cli.main(["methods"]) == 0 and called == [True]

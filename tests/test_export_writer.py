"""The Results page's background writer of kept exports: newest state wins, failures are reported, nothing waits."""

import threading

from dashboard.images import ExportWriter


def test_of_states_queued_while_one_is_written_only_the_newest_follows():
    writer, written, release = ExportWriter(), [], threading.Event()

    def write(state: int, block: bool = False):
        def job() -> None:
            if block:
                assert release.wait(10)
            written.append(state)
        return job

    writer.submit("a.tif", 1, write(1, block=True))
    assert not writer.wait(timeout_s=0.2)  # the first job holds the writer
    assert not writer.wanted("a.tif", 1)  # being written: not queued twice
    for state in (2, 3):
        assert writer.wanted("a.tif", state)
        writer.submit("a.tif", state, write(state))
    assert not writer.wanted("a.tif", 3)  # queued
    release.set()
    assert writer.wait(timeout_s=10)
    assert written == [1, 3]
    assert not writer.wanted("a.tif", 3)  # on disk
    assert writer.wanted("a.tif", 2)


def test_a_failed_write_is_reported_until_a_write_of_that_key_succeeds():
    writer = ExportWriter()

    def full_disk() -> None:
        raise OSError("No space left on device")

    writer.submit("a.tif", 1, full_disk)
    writer.submit("b.tif", 1, lambda: None)
    assert writer.wait(timeout_s=10)
    assert writer.problem("a.tif") == "No space left on device"
    assert writer.wanted("a.tif", 1)  # not on disk: the next rerun tries again
    assert writer.problem("b.tif") is None and not writer.wanted("b.tif", 1)  # the thread went on
    writer.submit("a.tif", 1, lambda: None)
    assert writer.wait(timeout_s=10)
    assert writer.problem("a.tif") is None

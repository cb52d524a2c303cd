"""Agent retries by session (`spendgate.domain.retries`): counted by shape and time."""

from __future__ import annotations

from spendgate.domain.retries import RETRY_WINDOW_S, SessionRetries, Shape, request_shape

TURN = Shape("messages", "claude-opus-5-5", 3)


def fail(retries: SessionRetries, session: str, now: float, shape: Shape = TURN) -> int:
    retry = retries.retry_of(session, shape, now)
    retries.ended(session, shape, now, retry=retry, ok=False)
    return retry


def test_each_sending_after_a_failure_is_the_next_retry() -> None:
    retries = SessionRetries()
    assert [fail(retries, "s", float(t)) for t in (0, 1, 3, 7, 15)] == [0, 1, 2, 3, 4]
    assert retries.retry_of("s", TURN, 20) == 5
    retries.ended("s", TURN, 20, retry=5, ok=True)  # the retry succeeded: the chain ends
    assert retries.retry_of("s", TURN, 21) == 0
    assert len(retries) == 0


def test_other_sessions_shapes_and_late_requests_are_first_tries() -> None:
    retries = SessionRetries()
    fail(retries, "s", 0)
    assert retries.retry_of("other", TURN, 1) == 0
    assert retries.retry_of(None, TURN, 1) == 0
    assert retries.retry_of("s", Shape("messages", "claude-opus-5-5", 5), 1) == 0
    assert retries.retry_of("s", Shape("messages", "claude-haiku-4-5", 3), 1) == 0
    assert retries.retry_of("s", Shape("chat", "claude-opus-5-5", 3), 1) == 0
    assert retries.retry_of("s", TURN, RETRY_WINDOW_S) == 1
    assert retries.retry_of("s", TURN, RETRY_WINDOW_S + 0.001) == 0


def test_a_parallel_request_that_succeeds_does_not_end_anothers_chain() -> None:
    retries = SessionRetries()
    fail(retries, "s", 0)
    sub_agent = Shape("messages", "claude-opus-5-5", 1)
    retries.ended("s", sub_agent, 1, retry=0, ok=True)
    assert retries.retry_of("s", TURN, 2) == 1


def test_no_session_is_remembered_and_the_map_is_bounded() -> None:
    retries = SessionRetries(capacity=3)
    retries.ended(None, TURN, 0, retry=0, ok=False)
    assert len(retries) == 0
    for index in range(5):
        fail(retries, f"s{index}", float(index))
    assert len(retries) == 3
    assert retries.retry_of("s0", TURN, 5) == 0  # the least recently failed are forgotten
    assert retries.retry_of("s4", TURN, 5) == 1
    fail(retries, "s2", 6)  # failing again makes it the most recent
    fail(retries, "s5", 7)
    assert retries.retry_of("s2", TURN, 8) == 2
    assert retries.retry_of("s3", TURN, 8) == 0


def test_request_shape_counts_the_conversation() -> None:
    assert request_shape("messages", "m", {"messages": [{}, {}]}) == Shape("messages", "m", 2)
    assert request_shape("responses", "m", {"input": [{}, {}, {}]}).items == 3
    assert request_shape("responses", "m", {"input": "hi"}).items == 1
    assert request_shape("embeddings", "m", {}).items == -1

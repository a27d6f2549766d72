"""``serve.openai_server`` decodes concurrent requests as one batch, over
real HTTP on 127.0.0.1, with our OpenAI backend's concurrent ``generate_batch``
as the client."""

from __future__ import annotations

import threading
import time

import pytest
from backend_contract import MESSAGES, tiny_path

from agents.backends.base import SamplingParams
from agents.backends.common import is_available

pytestmark = pytest.mark.skipif(
    not all(is_available(m) for m in ("httpx", "fastapi", "uvicorn", "torch")),
    reason='needs the api, serve and train extras: pip install "browser-rl[api,serve,train]"',
)

GREEDY = SamplingParams(max_new_tokens=6)
PROMPTS = [
    MESSAGES,
    [MESSAGES[0], {"role": "user", "content": 'Goal: type "hi".\n[e1] textbox "Name"'}],
    [MESSAGES[0], {"role": "user", "content": "Goal: scroll down."}],
    [MESSAGES[0], {"role": "user", "content": 'Goal: click "OK".\n[e1] button "OK"\n[e2] link'}],
]


@pytest.fixture
def server():
    """(client, served models, batch sizes generate_batch was called with)."""
    from agents.backends.openai import OpenAIBackend
    from agents.backends.transformers import TransformersBackend
    from serve.openai_server import ServerThread, create_app

    backend = TransformersBackend(tiny_path("text"), device="cpu", dtype="float32")
    sizes: list[int] = []
    inner = backend.generate_batch

    def counted(batch, *args, **kwargs):
        sizes.append(len(batch))
        if any("POISON" in messages[-1]["content"] for messages in batch):
            raise ValueError("this prompt is refused")
        return inner(batch, *args, **kwargs)

    backend.generate_batch = counted
    plain_generate = backend.generate

    def generate(messages, *args, **kwargs):  # a request the backend refuses
        if "POISON" in messages[-1]["content"]:
            raise ValueError("this prompt is refused")
        return plain_generate(messages, *args, **kwargs)

    backend.generate = generate
    app = create_app(backend, "tiny", max_batch_size=3)
    with ServerThread(app) as thread:
        client = OpenAIBackend(thread.base_url, "tiny", return_token_ids=True, max_retries=0)
        yield client, app.state.settings.models, sizes
        client.close()
    backend.close()


def _queued_behind_the_lock(models, call, n):
    """Run ``call`` in a thread while the backend's lock is held, until ``n``
    requests wait in the queue; then let them go. ``call``'s result."""
    out: list = []
    with models._lock:
        worker = threading.Thread(target=lambda: out.append(call()))
        worker.start()
        deadline = time.monotonic() + 30
        while len(models._queue) < n:
            assert time.monotonic() < deadline, f"{len(models._queue)} of {n} requests queued"
            time.sleep(0.01)
    worker.join(timeout=60)
    return out[0]


def test_concurrent_greedy_requests_are_decoded_in_batches(server):
    client, models, sizes = server
    alone = [client.generate(m, sampling=GREEDY).token_ids for m in PROMPTS]
    assert sizes == []  # one request at a time: no batch
    gens = _queued_behind_the_lock(
        models, lambda: client.generate_batch(PROMPTS, sampling=GREEDY), len(PROMPTS)
    )
    assert [g.token_ids for g in gens] == alone  # each its own prompt's tokens
    # four queued, at most three a batch: one of three, then the one left alone
    assert sizes == [3] and not models._queue


def test_seeded_sampled_requests_are_batched_each_drawing_what_it_draws_alone(server):
    client, models, sizes = server
    rows = [SamplingParams(max_new_tokens=6, temperature=1.0, seed=s) for s in (7, 8, 7)]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    alone = [client.generate(m, sampling=r).token_ids for m, r in zip(prompts, rows, strict=True)]
    assert sizes == [] and alone[0] != alone[1]
    gens = _queued_behind_the_lock(
        models, lambda: client.generate_batch(prompts, sampling=rows), len(prompts)
    )
    assert sizes == [3] and [g.token_ids for g in gens] == alone
    # unseeded sampled requests batch too, and differ from each other
    gens = _queued_behind_the_lock(
        models,
        lambda: client.generate_batch(
            PROMPTS[:1] * 3, sampling=SamplingParams(max_new_tokens=6, temperature=1.0)
        ),
        3,
    )
    assert sizes == [3, 3] and len({tuple(g.token_ids) for g in gens}) > 1


def test_stop_requests_are_served_one_at_a_time(server):
    client, models, sizes = server
    client.generate_batch(PROMPTS[:3], sampling=SamplingParams(max_new_tokens=6, stop=("}",)))
    assert sizes == []


def test_requests_of_other_settings_are_never_mixed(server):
    client, models, sizes = server
    short, long_ = SamplingParams(max_new_tokens=2), SamplingParams(max_new_tokens=6)
    want = [
        client.generate(m, sampling=s).token_ids
        for m, s in ((PROMPTS[0], short), (PROMPTS[1], long_), (PROMPTS[2], short))
    ]

    def mixed():
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(client.generate, m, None, s)
                for m, s in ((PROMPTS[0], short), (PROMPTS[1], long_), (PROMPTS[2], short))
            ]
            return [f.result().token_ids for f in futures]

    assert _queued_behind_the_lock(models, mixed, 3) == want
    assert sorted(sizes) == [2]  # the two short ones together; the long one alone
    assert len(want[0]) <= 2 and len(want[2]) <= 2


def test_max_batch_size_is_checked():
    from serve.openai_server.models import ServedModels

    with pytest.raises(ValueError, match="max_batch_size"):
        ServedModels(object(), "m", max_batch_size=0)
    with pytest.raises(ValueError, match="batch_wait_ms"):
        ServedModels(object(), "m", batch_wait_ms=-1)


def test_a_request_that_finds_the_backend_idle_waits_for_others(server):
    """No lock held: the client's concurrent requests still meet in one batch
    (the first waits ``batch_wait_ms`` for the others)."""
    client, models, sizes = server
    models.batch_wait_s = 5.0  # room for a slow machine; the batch fills long before
    gens = client.generate_batch(PROMPTS[:3], sampling=GREEDY)
    assert sizes == [3] and all(g.token_ids for g in gens)


def test_a_request_that_fails_its_batch_fails_alone(server):
    """The batch is retried one request at a time: only the bad request errs."""
    client, models, sizes = server
    bad = [MESSAGES[0], {"role": "user", "content": "POISON"}]
    alone = [client.generate(m, sampling=GREEDY).token_ids for m in PROMPTS[:2]]
    out: dict = {}

    def ask(name, messages):
        try:
            out[name] = client.generate(messages, sampling=GREEDY).token_ids
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[name] = exc

    with models._lock:
        threads = [
            threading.Thread(target=ask, args=(name, m))
            for name, m in (("a", PROMPTS[0]), ("bad", bad), ("b", PROMPTS[1]))
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(models._queue) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=60)
    assert sizes == [3]  # tried as one batch, then one at a time
    assert [out["a"], out["b"]] == alone
    assert getattr(out["bad"], "status_code", None) == 400 and "refused" in str(out["bad"])

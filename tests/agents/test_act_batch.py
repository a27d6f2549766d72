"""Batched policies: one model call for N observations gives the unbatched greedy actions."""

from __future__ import annotations

import pytest
from conftest import element, observation

from agents.agent import LLMAgent
from agents.experts.expert import ScriptedExpert
from agents.random_agent import RandomAgent

GOALS = [
    (
        "Click the OK button",
        (element("e1", "textbox", label="Name"), element("e2", "button", "OK")),
    ),
    ("Click on the link Next.", (element("e3", "link", "Next"), element("e4", "link", "Back"))),
    (
        'Enter "NYC" into the text field and press Submit.',
        (element("e1", "textbox", label="City"), element("e2", "button", "Submit")),
    ),
    ("Select Blue and click Submit.", (element("e5", "checkbox", "Blue"),)),
    ("Click button ONE.", (element("e9", "button", "ONE"), element("e8", "button", "TWO"))),
]


@pytest.fixture(scope="module")
def tiny_policy():
    from agents.backends.transformers import TransformersBackend
    from agents.pretrained import path

    backend = TransformersBackend(path("tiny-miniwob"), device="cpu", dtype="float32")
    yield backend
    backend.close()


def _observations(step: int) -> list[dict]:
    return [
        observation(goal=g, elements=els, text=f"page {i} step {step}")
        for i, (g, els) in enumerate(GOALS)
    ]


@pytest.mark.parametrize("prefill", ["per_row", "padded"])
def test_generate_batch_equals_generate_greedy(tiny_policy, prefill, monkeypatch):
    from agents.backends.base import SamplingParams

    monkeypatch.setattr(tiny_policy, "prefill", prefill)

    agent = LLMAgent(tiny_policy, prompt={"use_screenshot": False})
    sampling = SamplingParams(max_new_tokens=40)
    messages = [agent.build_prompt(o).messages for o in _observations(0)]
    batched = tiny_policy.generate_batch(messages, sampling=sampling)
    for msgs, got in zip(messages, batched, strict=True):
        alone = tiny_policy.generate(msgs, sampling=sampling)
        assert got.text == alone.text and got.token_ids == alone.token_ids
        assert got.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert got.info["batch_size"] == len(messages) and got.info["prefill"] == prefill
    assert len({g.info["prompt_tokens"] for g in batched}) > 1  # padding was really exercised


def test_act_batch_equals_act_over_an_episode(tiny_policy):
    leader = LLMAgent(tiny_policy, prompt={"use_screenshot": False})
    solo = [leader.fork() for _ in GOALS]
    batch = [leader.fork() for _ in GOALS]
    for agents in (solo, batch):
        for agent, (goal, _) in zip(agents, GOALS, strict=True):
            agent.reset(goal)
    for step in range(2):
        observations = _observations(step)
        expected = [a.act(o) for a, o in zip(solo, observations, strict=True)]
        got = leader.act_batch(observations, batch)
        for (want, want_info), (action, info) in zip(expected, got, strict=True):
            assert action == want and info["raw_output"] == want_info["raw_output"]
    assert [len(a.history) for a in batch] == [2] * len(GOALS)
    assert batch[0].backend is tiny_policy and batch[0].history is not batch[1].history


def test_sampled_act_batch_equals_act_each_episode_with_its_own_seed(tiny_policy):
    """Sampled, each fork's episode seed drives its row: vector rollouts sample
    what local rollouts sample (a flipped seed changes the draws)."""
    sampling = {"temperature": 1.0, "max_new_tokens": 40}
    leader = LLMAgent(tiny_policy, prompt={"use_screenshot": False}, sampling=sampling)
    solo, batch, flipped = ([leader.fork() for _ in GOALS] for _ in range(3))
    for agents, offset in ((solo, 0), (batch, 0), (flipped, 100)):
        for i, (agent, (goal, _)) in enumerate(zip(agents, GOALS, strict=True)):
            agent.reset(goal, seed=i + offset)
    for step in range(2):
        observations = _observations(step)
        expected = [a.act(o)[1]["raw_output"] for a, o in zip(solo, observations, strict=True)]
        got = [info["raw_output"] for _, info in leader.act_batch(observations, batch)]
        other = [info["raw_output"] for _, info in leader.act_batch(observations, flipped)]
        assert got == expected and other != expected


def test_baselines_act_batch_and_fork():
    obs = _observations(0)
    for leader in (RandomAgent(seed=3), ScriptedExpert(task="click-button")):
        solo, batch = [leader.fork() for _ in obs], [leader.fork() for _ in obs]
        for i, agent in enumerate(solo + batch):
            agent.reset(GOALS[i % len(GOALS)][0], seed=i % len(GOALS))
        want = [a.act(o)[0] for a, o in zip(solo, obs, strict=True)]
        assert [a for a, _ in leader.act_batch(obs, batch)] == want
    with pytest.raises(ValueError, match="observations"):
        RandomAgent().act_batch(obs, [RandomAgent()])


def test_a_row_that_raises_fails_alone_and_the_others_have_acted(scripted_backend):
    """agents.batch: one row's own failure (here its prompt cannot be built) does
    not take the batch with it: RowErrors carries the other rows' decisions,
    whose agents moved on exactly once; the model decided for them alone."""
    from agents.batch import RowErrors

    backend = scripted_backend(['{"action": "CLICK", "element_id": "e2"}'])
    leader = LLMAgent(backend, prompt={"use_screenshot": False})
    forks = [leader.fork() for _ in range(3)]
    for fork, (goal, _) in zip(forks, GOALS[:3], strict=True):
        fork.reset(goal)

    def broken(obs):
        raise KeyError("no prompt for this page")

    forks[1].build_prompt = broken
    with pytest.raises(RowErrors) as raised:
        leader.act_batch(_observations(0)[:3], forks)
    results = raised.value.results
    assert list(raised.value.errors) == [1] and isinstance(results[1], KeyError)
    assert [action.element_id for action, _ in (results[0], results[2])] == ["e2", "e2"]
    assert [len(f.history) for f in forks] == [1, 0, 1] and len(backend.calls) == 2
    assert "1 of 3 rows raised: row 1: KeyError" in str(raised.value)
    assert isinstance(raised.value.__cause__, KeyError)

    class Flaky(RandomAgent):
        def act(self, obs):
            if self.bad:
                raise KeyError("policy bug")
            return super().act(obs)

    baselines = [Flaky(seed=i) for i in range(3)]
    for i, agent in enumerate(baselines):
        agent.reset(GOALS[i][0], seed=i)
        agent.bad = i == 2
    with pytest.raises(RowErrors) as raised:
        baselines[0].act_batch(_observations(0)[:3], baselines)
    assert list(raised.value.errors) == [2]

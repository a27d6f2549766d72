"""One way to name an env: env_id builds the registered id, resolve_env_id takes every spelling."""

from __future__ import annotations

import gymnasium as gym
import pytest

import browser_env  # noqa: F401 - registers the env ids
from browser_env.registration import env_id, resolve_env_id


def test_env_id_builds_the_registered_id():
    assert env_id("click-test") == "browser_env/miniwob.click-test-v0"
    assert env_id("open", family=None) == "browser_env/open-v0"
    assert env_id("flight.AA", version=1) == "browser_env/miniwob.flight.AA-v1"
    assert env_id("click-test") in gym.registry and env_id("open", family=None) in gym.registry


@pytest.mark.parametrize(
    "spelling",
    [
        "miniwob.click-test",
        "miniwob.click-test-v0",
        "browser_env/miniwob.click-test",
        "browser_env/miniwob.click-test-v0",
        "  miniwob.click-test ",
    ],
)
def test_every_spelling_resolves_to_the_one_id(spelling):
    assert resolve_env_id(spelling) == "browser_env/miniwob.click-test-v0"


def test_open_and_dotted_names_and_versions():
    assert resolve_env_id("open") == resolve_env_id("browser_env/open-v0") == "browser_env/open-v0"
    assert resolve_env_id("miniwob.flight.AA") == "browser_env/miniwob.flight.AA-v0"
    assert resolve_env_id("miniwob.click-tab-2") == "browser_env/miniwob.click-tab-2-v0"
    assert resolve_env_id("miniwob.click-test-v3") == "browser_env/miniwob.click-test-v3"


def test_every_registered_id_is_a_fixed_point():
    ours = [i for i in gym.registry if i.startswith("browser_env/")]
    assert len(ours) > 100
    for gym_id in ours:
        assert resolve_env_id(gym_id) == gym_id
        assert resolve_env_id(gym_id.removeprefix("browser_env/").removesuffix("-v0")) == gym_id


@pytest.mark.parametrize("bad", ["", "   ", "other_ns/miniwob.click-test-v0"])
def test_bad_spellings_raise_value_error(bad):
    with pytest.raises(ValueError):
        resolve_env_id(bad)


@pytest.mark.parametrize(
    ("env_id", "name"),
    [
        ("browser_env/miniwob.click-test-v0", "miniwob.click-test"),
        ("browser_env/sites.shop.buy-named-v0", "sites.shop.buy-named"),
        ("browser_env/open-v0", "open"),
        ("browser_env/miniwob.click-test-v12", "miniwob.click-test"),
        ("miniwob.click-test", "miniwob.click-test"),  # no namespace, no version
        ("browser_env/miniwob.use-vtest", "miniwob.use-vtest"),  # "-v" then no number
    ],
)
def test_task_name_is_env_ids_inverse(env_id, name):
    from browser_env.registration import env_id as make_id
    from browser_env.registration import task_name

    assert task_name(env_id) == name
    assert task_name(make_id(name, family=None)) == name


def test_every_id_makes_the_shared_browser_vector_env_and_no_passive_checker():
    from browser_env.registration import VECTOR_ENTRY_POINT

    ids = [i for i in gym.registry if i.startswith("browser_env/")]
    assert any(".sites." in i or "/sites." in i for i in ids) and len(ids) > 100
    for spec in (gym.spec(i) for i in ids):
        assert spec.vector_entry_point == VECTOR_ENTRY_POINT, spec.id  # sites too
        assert spec.disable_env_checker, spec.id


@pytest.mark.browser
def test_an_env_whose_first_reset_raised_steps_after_the_next_reset():
    # Gymnasium 1.4's passive checker kept no data from a first reset that
    # raised, then failed every step with a TypeError (browser_env/registration.py)
    env = gym.make("browser_env/open-v0")
    try:
        with pytest.raises(ValueError):
            env.reset(options={"url": "file:///etc/passwd", "goal": "read it"})
        env.reset(seed=0)
        for _ in range(2):
            _, _, terminated, truncated, _ = env.step({"action": "WAIT", "value": "0"})
            assert not (terminated or truncated)
    finally:
        env.close()


@pytest.mark.browser
def test_make_vec_of_a_site_id_shares_one_browser():
    from browser_env.vector import SharedBrowserVectorEnv

    vec = gym.make_vec(
        "browser_env/sites.shop.add-to-cart-v0", num_envs=2, modalities=("elements", "text")
    )
    try:
        assert isinstance(vec, SharedBrowserVectorEnv)
        vec.reset(seed=0)
        with pytest.raises(ValueError, match="2 expected, got 1"):
            vec.step(({"action": "WAIT", "value": "0"},))
        vec.step(({"action": "WAIT", "value": "0"},) * 2)
    finally:
        vec.close()

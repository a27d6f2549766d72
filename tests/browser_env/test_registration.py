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

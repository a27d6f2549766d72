"""Episodes on disk: format v1, a crash-safe writer and a validating loader.

See ``docs/episode_format.md`` for the format and :mod:`browser_env.wrappers`
for :class:`~browser_env.wrappers.RecordEpisode`, which writes episodes for any
policy.
"""

from __future__ import annotations

from browser_env.episodes.format import (
    SCHEMA_VERSION,
    SOURCES,
    AgentInfo,
    EpisodeFile,
    EpisodeFormatError,
    EpisodeMeta,
    Outcome,
    StepRecord,
    observation_from_json,
    observation_to_json,
)
from browser_env.episodes.loader import Episode, find_episode_dirs, iter_episodes, load_episode
from browser_env.episodes.writer import EpisodeWriter

__all__ = [
    "SCHEMA_VERSION",
    "SOURCES",
    "AgentInfo",
    "Episode",
    "EpisodeFile",
    "EpisodeFormatError",
    "EpisodeMeta",
    "EpisodeWriter",
    "Outcome",
    "StepRecord",
    "find_episode_dirs",
    "iter_episodes",
    "load_episode",
    "observation_from_json",
    "observation_to_json",
]

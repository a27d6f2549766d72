"""The learn-demo pipeline runs end to end with a tiny budget (the real figures are in docs/learners.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_demo(*overrides: str):
    from hydra import compose, initialize_config_dir

    from learners.demo import register_config

    register_config()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name="demo", overrides=list(overrides))


def test_config_composes_and_the_recorded_command_reproduces_it():
    import dataclasses

    from omegaconf import OmegaConf

    from learners.demo import TASKS, DemoConfig, command_line

    default = compose_demo()
    assert OmegaConf.to_container(default) == dataclasses.asdict(DemoConfig())
    assert list(default.tasks) == list(TASKS) and default.export is None
    with pytest.raises(Exception, match="sft_step"):
        compose_demo("sft_step=3")  # a typo is refused: the schema is closed
    cfg = DemoConfig(
        **OmegaConf.to_container(compose_demo("tasks=[click-test]", "port_jitter=false"))
    )
    command = command_line(cfg)
    assert command == "python -m learners.demo tasks=[click-test] port_jitter=false"
    again = compose_demo(*command.split()[3:])
    assert DemoConfig(**OmegaConf.to_container(again)) == cfg


@pytest.mark.slow
@pytest.mark.exhaustive  # ~25 s: the whole demo pipeline; its config and command are checked by default
@pytest.mark.browser
def test_learn_demo_pipeline_small(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from omegaconf import OmegaConf

    from learners.demo import DemoConfig, run

    report = run(
        OmegaConf.to_container(
            compose_demo(
                f"out={tmp_path}",
                "tasks=[click-test]",
                "train_seeds=2",
                "eval_seeds=1",
                "max_steps=2",
                "sft_steps=2",
                "sdft_steps=1",
                f"export={tmp_path / 'policy'}",
            )
        )
    )
    assert report["expert_success"] == {"click-test": 1.0}
    for stage in ("before", "sft", "sdft"):
        assert 0.0 <= report[stage]["student"]["success_rate"] <= 1.0
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["tasks"] == ["click-test"]
    assert (tmp_path / "sdft" / "adapter_model.safetensors").is_file()
    policy = tmp_path / "policy"
    if report["export"]["path"] is None:  # 2 SFT steps need not beat random weights
        assert not policy.exists() and "no better" in report["export"]["reason"]
    from learners.demo import command_line, export_policy

    for stage in ("sft", "sdft"):  # each stage's export, real models (the merge for sdft)
        doctored = {**report, "before": {"student": {"success_rate": 0.0}}}
        doctored["sft"] = {"student": {"success_rate": 0.5}}
        doctored["sdft"] = {"student": {"success_rate": 1.0 if stage == "sdft" else 0.5}}
        export_policy(tmp_path, policy, doctored, command_line(DemoConfig(**report["args"])))
        assert (policy / "config.json").is_file() and (policy / "model.safetensors").is_file()
        meta = json.loads((policy / "training.json").read_text())
        assert meta["produced_by"].startswith("python -m learners.demo out=")
        assert meta["stage"] == stage and meta["args"]["counterfactual_fraction"] == 1.0


def test_the_demo_refuses_a_learner_dir_in_its_out_before_it_records(tmp_path, monkeypatch):
    """``out/sft`` holding someone else's files is refused before the expert
    episodes are recorded (minutes), not when SFT starts after them."""
    import torch

    import learners.demo

    def no_recording(*args, **kwargs):
        raise AssertionError("the episodes were recorded")

    monkeypatch.setattr(learners.demo, "record_expert_episodes", no_recording)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "notes.txt").write_text("mine\n")
    with pytest.raises(ValueError) as refused:
        learners.demo.run({"out": str(tmp_path), "threads": torch.get_num_threads()})
    assert str(refused.value).startswith(
        f"{tmp_path / 'sft'} (where this command trains, below out={tmp_path}) holds files "
        "no learner wrote"
    ) and str(refused.value).endswith("set out to a new or empty directory")
    assert (tmp_path / "sft" / "notes.txt").read_text() == "mine\n"


def test_the_demo_command_line_refuses_a_stray_dir_in_one_line(tmp_path):
    """``python -m learners.demo out=O`` with someone else's files in ``O/sft``:
    ``error: <why>`` naming ``out``, exit status 2, no traceback (it was a
    Hydra-wrapped ``ValueError`` naming a ``learner.output_dir`` the demo has not)."""
    from _commands import python_m

    (tmp_path / "o" / "sft").mkdir(parents=True)
    (tmp_path / "o" / "sft" / "notes.txt").write_text("mine\n")
    done = python_m("learners.demo", f"out={tmp_path / 'o'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'o' / 'sft'} (where this command trains, below out="
        f"{tmp_path / 'o'}) holds files no learner wrote (notes.txt; no training.json or "
        "checkpoints/): training into it would mix them with its own; set out to a new or "
        "empty directory"
    ], done.stderr[-2000:]
    assert (tmp_path / "o" / "sft" / "notes.txt").read_text() == "mine\n"


# -- the pipeline with its heavy parts faked: recording, models, training, evaluation --------


@pytest.fixture
def fake_demo(monkeypatch, click_episode_writer):
    """``learners.demo.run`` with no browser and no model: the expert's episodes
    written by :func:`click_episode_writer`, SFT and SDFT writing a stand-in
    model dir, and held-out success ``fake_demo.rates[stage]`` ("before",
    "sft", "sdft"). ``fake_demo.recorded``: the ``(tasks, seeds)`` of each
    recording; ``fake_demo.run(out, **cfg)`` runs the demo."""
    import types

    import torch

    import agents.tiny
    import learners.demo
    import learners.sdft
    import learners.sft

    state = types.SimpleNamespace(recorded=[], rates={"before": 0.0, "sft": 0.5, "sdft": 0.5})

    def record(root, tasks, seeds, max_steps):
        state.recorded.append((list(tasks), list(seeds)))
        for task in tasks:
            for seed in seeds:
                click_episode_writer(root, seed, task=task)
        return dict.fromkeys(tasks, 1.0)

    def evaluate(model, adapter, tasks, seeds, max_steps, *, teacher):
        stage = "before" if model == "tiny" else "sft" if adapter is None else "sdft"
        rate = state.rates[stage]
        return {"success_rate": rate, "per_task": dict.fromkeys(tasks, rate)}

    def learner(name, files):
        def run(values):
            out = Path(values["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                (out / file).write_text(text)
            (out / "training.json").write_text(json.dumps({"learner": name}))
            return {"output_dir": str(out), "history": [{"step": 1, "loss": 1.0, "kl": 0.1}]}

        return run

    monkeypatch.setattr(learners.demo, "record_expert_episodes", record)
    monkeypatch.setattr(learners.demo, "evaluate", evaluate)
    monkeypatch.setattr(learners.demo, "_plot", lambda report, path: None)
    monkeypatch.setattr(agents.tiny, "tiny_model_path", lambda *args, **kwargs: "tiny")
    monkeypatch.setattr(learners.sft, "run", learner("sft", {"model.safetensors": "weights"}))
    monkeypatch.setattr(learners.sdft, "run", learner("sdft", {"adapter_config.json": "{}"}))

    def run_demo(out, **values):
        return learners.demo.run(
            {"out": str(out), "tasks": ["click-test"], "train_seeds": 2, "eval_seeds": 1}
            | {"threads": torch.get_num_threads()}
            | values
        )

    state.run = run_demo
    return state


def test_the_export_replaces_an_earlier_export_and_refuses_anything_else_before_recording(
    tmp_path, fake_demo
):
    """``export=DIR`` used to ``rmtree`` whatever DIR held, after the whole run:
    a dir of one's own files (``export=.`` a checkout) is now refused before
    anything is recorded, and left as it was; a new dir and an earlier export
    of the demo are written, the latter replaced whole."""
    from browser_env.refusal import Refused

    out, policy = tmp_path / "out", tmp_path / "policy"
    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine\n")
    pick = "set export to a new or empty directory, or to an earlier export of learners.demo"
    for dest, message in (
        (mine, f"export={mine} holds files that are no export of learners.demo (notes.txt, src/)"),
        (a_file, f"export={a_file} is a file, not a directory"),
        (a_file / "policy", f"export={a_file / 'policy'} is below {a_file}, a file"),
        (out, f"export={out} is or holds out={out}"),
        (tmp_path, f"export={tmp_path} is or holds out={out}"),
        (out / "sft", f"export={out / 'sft'} is the demo's own sft in out={out}"),
    ):
        with pytest.raises(Refused) as refused:
            fake_demo.run(out, export=str(dest))
        assert str(refused.value).startswith(message), str(refused.value)
        assert "\n" not in str(refused.value)
    assert str(refused.value).endswith(pick)
    assert fake_demo.recorded == [] and not (out / "episodes").exists()
    assert (mine / "notes.txt").read_text() == "mine\n" and (mine / "src").is_dir()
    assert a_file.read_text() == "mine\n"

    report = fake_demo.run(out, export=str(policy))
    assert report["export"] == {"path": str(policy), "stage": "sft"}
    assert (policy / "model.safetensors").read_text() == "weights"
    first = json.loads((policy / "training.json").read_text())
    assert first["stage"] == "sft" and first["produced_by"].startswith("python -m learners.demo")
    (policy / "stale.bin").write_text("from the earlier export")
    fake_demo.rates["sft"] = 0.75
    fake_demo.run(out, export=str(policy))  # over the earlier export: replaced whole
    meta = json.loads((policy / "training.json").read_text())
    assert meta["success"]["sft"]["student"]["success_rate"] == 0.75
    assert sorted(p.name for p in policy.iterdir()) == ["model.safetensors", "training.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "mine", "out", "policy"]


def test_export_policy_writes_nothing_over_a_dir_that_changed_during_the_run(tmp_path):
    """The destination is checked again just before writing: files put there
    since the run started are refused, not deleted, and no staging dir is left."""
    from learners.demo import export_policy

    out = tmp_path / "out"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "training.json").write_text("{}")
    dest = tmp_path / "policy"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine\n")
    report = {"tasks": ["click-test"], "args": {}, "held_out_seeds": [1000]}
    for stage, rate in (("before", 0.0), ("sft", 1.0), ("sdft", 0.0)):
        report[stage] = {"student": {"success_rate": rate}}
    with pytest.raises(ValueError, match="holds files that are no export"):
        export_policy(out, dest, report, "python -m learners.demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "policy"]
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_a_demo_that_learned_nothing_does_not_replace_the_export(tmp_path, fake_demo, capsys):
    """A student no better on the held-out seeds than the untrained model (the
    auditor's run scored 0) used to be exported over the embedded policy: now
    the earlier export stays, and the demo says so on stderr and in results.json."""
    out, policy = tmp_path / "out", tmp_path / "policy"
    fake_demo.run(out, export=str(policy))
    before = {p.name: p.read_bytes() for p in policy.iterdir()}
    fake_demo.rates.update(sft=0.0, sdft=0.0)
    report = fake_demo.run(out, export=str(policy))
    assert {p.name: p.read_bytes() for p in policy.iterdir()} == before
    assert report["export"]["path"] is None
    assert json.loads((out / "results.json").read_text())["export"]["path"] is None
    err = capsys.readouterr().err
    assert "[demo] NOT EXPORTED: held-out student success 0.00 after training" in err
    assert f"export={policy} is left as it was" in err


def test_a_rerun_records_only_the_missing_episodes_and_refuses_ones_it_would_not_train_on(
    tmp_path, fake_demo, click_episode_writer
):
    """The demo used to record nothing when ``out/episodes`` held any episode: a
    crashed run's one incomplete episode made the rerun fail (no complete
    episodes), and another ``tasks=`` trained on the old tasks' episodes. Now
    the missing (task, seed) pairs are recorded, and episodes this run would
    not train on are refused before anything is recorded."""
    from browser_env.refusal import Refused

    out = tmp_path / "out"
    crashed = click_episode_writer(out / "episodes", 0, task="click-test")
    record = json.loads((crashed / "episode.json").read_text())
    (crashed / "episode.json").write_text(json.dumps({**record, "complete": False}))
    report = fake_demo.run(out)
    assert fake_demo.recorded == [(["click-test"], [0, 1])]
    assert report["expert_success"] == {"click-test": 1.0}
    fake_demo.run(out, train_seeds=3)  # one more seed: only it is recorded
    assert fake_demo.recorded[1:] == [(["click-test"], [2])]
    for values, message in (
        ({"tasks": ["click-button"]}, "(click-test seeds 0-2: not in tasks)"),
        ({"train_seeds": 2}, "(click-test seeds 2: outside train_seeds=2 (seeds 0-1))"),
    ):
        with pytest.raises(Refused) as refused:
            fake_demo.run(out, **values)
        assert f"{out / 'episodes'} holds complete episodes this run would not train on" in str(
            refused.value
        )
        assert message in str(refused.value)
    assert len(fake_demo.recorded) == 2


def test_the_demo_refuses_unknown_and_unscripted_tasks_before_recording(tmp_path, fake_demo):
    """A misspelt task (Gymnasium's NameNotFound) and one the scripted expert
    cannot solve (its UnsupportedTaskError, after recording had started and
    left an incomplete episode) are refused before anything is recorded."""
    from browser_env.refusal import Refused

    out = tmp_path / "out"
    with pytest.raises(Refused, match=r"^tasks: 'click-tset' is no MiniWoB\+\+ task: .*click-test"):
        fake_demo.run(out, tasks=["click-tset"])
    with pytest.raises(
        Refused, match=r"^tasks: the scripted expert has no policy for navigate-tree"
    ):
        fake_demo.run(out, tasks=["click-test", "navigate-tree"])
    assert fake_demo.recorded == [] and not out.exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threads": 0}, r"^threads must be >= 1, got 0$"),
        ({"layers": 0}, r"^layers must be >= 1, got 0$"),
        ({"heads": 0}, r"^heads must be >= 1, got 0$"),
        ({"hidden_size": 0}, r"^hidden_size must be >= 1, got 0$"),
        ({"intermediate_size": 0}, r"^intermediate_size must be >= 1, got 0$"),
        ({"sft_steps": 0}, r"^sft_steps must be >= 1, got 0$"),
        ({"sdft_steps": -1}, r"^sdft_steps must be >= 1, got -1$"),
        ({"batch_size": 0}, r"^batch_size must be >= 1, got 0$"),
        ({"lora_r": 0}, r"^lora_r must be >= 1, got 0$"),
        (
            {"heads": 3},
            r"^hidden_size must be divisible by heads, got hidden_size=128 and heads=3$",
        ),
        ({"heads": 1}, r"^heads must be a multiple of 2 \(the tiny model's key-value heads\)"),
        ({"hidden_size": 24, "heads": 8}, r"^hidden_size / heads .* must be even, got 24 / 8 = 3$"),
        ({"sdft_lr": 0.0}, r"^sdft_lr must be > 0, got 0.0$"),
        (
            {"demo_fraction": 2.0},
            r"^the sft stage would refuse its settings: demo_fraction must be in \[0, 1\]",
        ),
    ],
)
def test_the_demo_refuses_settings_that_fail_later_before_out_is_made(
    tmp_path, fake_demo, values, message
):
    """Each of these failed only later: in torch (``threads=0``), in the tiny
    model's build (``heads=3``) or first forward (an odd head dimension), in a
    learner after the recording (``sdft_steps=0``, ``demo_fraction=2``), or
    trained what was not asked (``sft_steps=0``: an epoch); tracebacks that
    left an empty ``out``. Now a refusal before anything is made."""
    from browser_env.refusal import Refused

    out = tmp_path / "out"
    with pytest.raises(Refused, match=message):
        fake_demo.run(out, **values)
    assert fake_demo.recorded == [] and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks=[click-tset]"], "error: tasks: 'click-tset' is no MiniWoB++ task"),
        (["tasks=[navigate-tree]"], "error: tasks: the scripted expert has no policy for"),
        (["export=."], "error: export=. holds files that are no export of learners.demo"),
    ],
)
def test_the_demo_command_line_refuses_bad_tasks_and_exports_in_one_line(tmp_path, args, message):
    """One ``error:`` line, status 2, nothing recorded, and no ``outputs/demo/<time>``
    left in the working dir (``export=.``: a checkout, say, kept whole)."""
    from _commands import python_m

    here = tmp_path / "checkout"
    here.mkdir()
    (here / "mine.txt").write_text("mine\n")
    done = python_m("learners.demo", f"out={tmp_path / 'o'}", *args, cwd=here)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr[-2000:]
    assert sorted(p.name for p in here.iterdir()) in (["mine.txt"], ["mine.txt", "outputs"])
    assert not any((here / "outputs").rglob("*"))  # no outputs/demo/<time> left
    assert (here / "mine.txt").read_text() == "mine\n" and not (tmp_path / "o").exists()


def test_an_out_holding_anything_but_a_demos_own_files_is_refused_before_recording(
    tmp_path, fake_demo
):
    """``out=~`` (or a checkout) used to be written into: the demo put its
    episodes, models, ``results.json`` and plot among the user's files,
    overwriting any of those names. Now such an ``out`` (or a file) is refused
    before anything is recorded and left as it was; a new dir, an earlier
    demo's ``out`` (with an export inside it, and a crash's temp file) are not."""
    from browser_env.refusal import Refused

    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "results.json").write_text("my results\n")
    (mine / "notes.txt").write_text("mine\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine\n")
    for out, message in (
        (mine, f"out={mine} holds files the demo does not write (notes.txt, src/): "),
        (a_file, f"out={a_file} is not a directory: "),
    ):
        with pytest.raises(Refused) as refused:
            fake_demo.run(out)
        assert str(refused.value).startswith(message), str(refused.value)
        assert str(refused.value).endswith(
            "set out to a new or empty directory, or to an earlier demo's out"
        )
    assert fake_demo.recorded == []
    assert (mine / "results.json").read_text() == "my results\n"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "results.json", "src"]
    assert a_file.read_text() == "mine\n"

    out = tmp_path / "out"
    fake_demo.run(out, export=str(out / "policy"))
    (out / ".results.json.0123456789ab.tmp").write_text("{")  # a write cut off by a crash
    (out / ".policy.export-0a1b2c3d.old").mkdir()  # an export swap's, cut off by a crash
    (out / ".DS_Store").write_bytes(b"\0")
    fake_demo.run(out, export=str(out / "policy"))  # an earlier demo's out: taken
    assert json.loads((out / "results.json").read_text())["export"]["stage"] == "sft"
    fake_demo.run(out)  # its export in it, exported no more: still a demo's out
    assert len(fake_demo.recorded) == 1  # the reruns recorded nothing new


def test_an_export_dir_that_changed_during_the_run_is_one_line_and_status_1(
    tmp_path, fake_demo, monkeypatch, capsys
):
    """``export=DIR`` is checked before recording and again before writing: a
    file put into DIR during the run made the demo end in a ``ValueError``
    traceback after its results were written. Now: one ``NOT EXPORTED`` line,
    ``results.json`` saying why, DIR as it was, and exit status 1."""
    import torch
    from omegaconf import OmegaConf

    import learners.demo
    import learners.sdft

    out, policy = tmp_path / "out", tmp_path / "policy"
    sdft = learners.sdft.run

    def sdft_while_someone_writes_into_policy(values):
        policy.mkdir()
        (policy / "notes.txt").write_text("mine\n")
        return sdft(values)

    monkeypatch.setattr(learners.sdft, "run", sdft_while_someone_writes_into_policy)
    cfg = {"out": str(out), "tasks": ["click-test"], "train_seeds": 2, "eval_seeds": 1}
    cfg["threads"] = torch.get_num_threads()
    with pytest.raises(SystemExit) as ended:
        learners.demo.hydra_entry(OmegaConf.create({**cfg, "export": str(policy)}))
    assert ended.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"[demo] NOT EXPORTED: export={policy} holds files that are no export of learners.demo"
    ), err
    assert [p.name for p in policy.iterdir()] == ["notes.txt"]
    export = json.loads((out / "results.json").read_text())["export"]
    assert export["path"] is None and "holds files that are no export" in export["error"]


@pytest.fixture
def demo_with_real_learners(monkeypatch, click_episode_writer):
    """``learners.demo.run`` with the real SFT and SDFT on the tiny model, and no
    browser (recording and evaluation faked); returns ``run(out, **cfg)``."""
    import torch

    import learners.demo

    def record(root, tasks, seeds, max_steps):
        for task in tasks:
            for seed in seeds:
                click_episode_writer(root, seed, task=task)
        return dict.fromkeys(tasks, 1.0)

    def evaluate(model, adapter, tasks, seeds, max_steps, *, teacher):
        return {"success_rate": 0.0, "per_task": dict.fromkeys(tasks, 0.0)}

    monkeypatch.setattr(learners.demo, "record_expert_episodes", record)
    monkeypatch.setattr(learners.demo, "evaluate", evaluate)
    monkeypatch.setattr(learners.demo, "_plot", lambda report, path: None)
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def run(out, **values):
        cfg = {"out": str(out), "tasks": ["click-test"], "train_seeds": 2, "eval_seeds": 1}
        cfg |= {"sft_steps": 2, "sdft_steps": 1, "threads": torch.get_num_threads()}
        return learners.demo.run(cfg | values)

    return run


def _trained(out, stage):
    meta = json.loads((out / stage / "training.json").read_text())
    lines = (out / stage / "metrics.jsonl").read_text().splitlines()
    return meta["status"], meta["steps"], len(meta["runs"]), meta["init_from"], len(lines)


def test_a_demo_rerun_reuses_finished_stages_and_refuses_to_train_on_top_of_them(
    tmp_path, demo_with_real_learners, capsys
):
    """A rerun into the same ``out`` (the way to resume a crashed demo) trained
    SFT and SDFT again on top of the finished models: more steps than asked,
    SDFT's old adapter on a changed base, and results.json saying neither.
    Now a finished stage with the same settings and episodes is reused (its
    curve too), one after a retrained stage or with other settings is
    refused before recording, naming what differs, and nothing is deleted."""
    import shutil

    from browser_env.refusal import Refused

    out = tmp_path / "out"
    first = demo_with_real_learners(out)
    assert _trained(out, "sft") == ("complete", 2, 0, None, 2)
    assert _trained(out, "sdft") == ("complete", 1, 0, None, 1)
    capsys.readouterr()
    again = demo_with_real_learners(out)
    assert _trained(out, "sft") == ("complete", 2, 0, None, 2)  # not trained again
    assert _trained(out, "sdft") == ("complete", 1, 0, None, 1)
    assert again["curves"] == first["curves"]
    said = capsys.readouterr().out
    assert f"[demo] sft: reusing the finished run in {out / 'sft'}" in said
    assert f"[demo] sdft: reusing the finished run in {out / 'sdft'}" in said

    with pytest.raises(Refused) as refused:
        demo_with_real_learners(out, sft_steps=3)
    assert str(refused.value).startswith(
        f"{out / 'sft'} holds a finished sft run that this demo would train on top of "
        "(other settings: max_steps 2 -> 3): set out to a new directory, or delete "
        f"{out / 'sft'} and {out / 'sdft'} to train again"
    ), str(refused.value)
    with pytest.raises(Refused, match=r"\(trained before episodes it did not see were recorded\)"):
        demo_with_real_learners(out, train_seeds=3)
    # an episode written there since (another tool's, a crashed older rerun's)
    newest = max((out / "episodes").glob("*/episode.json"), key=lambda p: p.stat().st_mtime)
    later = (out / "sdft" / "training.json").stat().st_mtime + 10
    os.utime(newest, (later, later))
    with pytest.raises(Refused, match=r"\(trained before episodes it did not see were recorded\)"):
        demo_with_real_learners(out)
    os.utime(newest, (later - 3600, later - 3600))
    assert len(list((out / "episodes").iterdir())) == 2  # refused before recording

    # a crash during SDFT: SFT is reused, SDFT trained (afresh: no checkpoint)
    meta = json.loads((out / "sdft" / "training.json").read_text())
    (out / "sdft" / "training.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    demo_with_real_learners(out)
    assert _trained(out, "sft") == ("complete", 2, 0, None, 2)
    assert _trained(out, "sdft")[:2] == ("complete", 1)

    # SFT gone (deleted to train again) but SDFT's adapter of the old SFT left
    shutil.rmtree(out / "sft")
    with pytest.raises(Refused, match=r"\(trained after an earlier sft, which this run trains"):
        demo_with_real_learners(out)
    assert not (out / "sft").exists() and (out / "sdft" / "training.json").is_file()


def test_ctrl_c_of_the_demo_is_one_line_and_status_130(tmp_path, fake_demo, monkeypatch, capsys):
    """Ctrl-C during a stage was a ``KeyboardInterrupt`` traceback; now one line
    saying the same command goes on from ``out``, and status 130."""
    import torch
    from omegaconf import OmegaConf

    import learners.demo
    import learners.sdft

    def ctrl_c(values):
        raise KeyboardInterrupt

    monkeypatch.setattr(learners.sdft, "run", ctrl_c)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = tmp_path / "out"
    cfg = {"out": str(out), "tasks": ["click-test"], "train_seeds": 2, "eval_seeds": 1}
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        learners.demo.hydra_entry(OmegaConf.create(cfg | {"threads": torch.get_num_threads()}))
    assert ended.value.code == 130
    assert capsys.readouterr().err == (
        f"[demo] stopped by Ctrl-C: the same command goes on from what out={out} holds "
        "(its episodes and finished stages)\n"
    )

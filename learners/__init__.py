"""Learners: SFT, SDFT and GRPO that train LoRA adapters from episodes and rollouts.

Entry points: ``python -m learners.sft``, ``python -m learners.sdft`` and
``python -m learners.grpo`` (Hydra configs under ``conf/``), each a thin
wrapper over ``run(config)``. Heavy libraries (torch, peft, mlx, wandb) are
imported inside the functions that need them, so ``import learners`` is light.
"""

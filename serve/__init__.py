"""The training service: a Ray Serve app (FastAPI ingress) in front of Ray Jobs.

``python -m serve`` starts it (embedded local Ray, or ``RAY_ADDRESS``);
``python -m serve.client`` talks to it. Modules: :mod:`serve.config`
(settings), :mod:`serve.store` (state files), :mod:`serve.uploads` (archive
checks), :mod:`serve.service` (the requests' logic), :mod:`serve.scheduler`
(the queue), :mod:`serve.job_request` (a job request's checks),
:mod:`serve.records` (record and job-file helpers), :mod:`serve.errors`,
:mod:`serve.backend` (Ray Jobs), :mod:`serve.app` (HTTP routes),
:mod:`serve.deployment` (the Ray Serve ingress and app builder),
:mod:`serve.job_entry` (a job's process), :mod:`serve.client`. Importing this
package imports neither Ray nor torch.
"""

"""Client of the training service: :class:`TrainingClient` and ``python -m serve.client``.

::

    export BROWSER_RL_SERVE_TOKEN=...            # the service's token
    python -m serve.client upload runs/expert              # -> dataset id
    python -m serve.client train --learner sft --dataset ds-... --set max_steps=300 --follow
    python -m serve.client status [JOB]
    python -m serve.client logs JOB [--follow]
    python -m serve.client download JOB adapters/sft       # then agent=llm adapter=adapters/sft
    python -m serve.client cancel JOB

``train`` sends an ``Idempotency-Key`` (a fresh UUID unless given), so a
retried request never starts a second job. ``download`` unpacks only
regular files with plain names, whatever the server sent, and records them in
``DEST/.browser-rl-adapter.json``, so that a later download into the same dir
removes the earlier adapter's files the new one lacks.

The command line refuses, in one ``error:`` line with exit status 2 and before
any request, what it could only send as a traceback: an upload path that is
no directory, a ``--num-cpus``/``--num-gpus`` that is not a finite number, and
a ``--set`` value that is no YAML or that JSON cannot carry (NaN, Infinity, a
date such as ``2024-01-01``: quote it to send a string).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["MANIFEST", "ClientError", "TrainingClient", "main"]

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# in a download's dest: the names of the files that downloads put there
MANIFEST = ".browser-rl-adapter.json"
DEFAULT_URL = "http://127.0.0.1:8765"
URL_ENV = "BROWSER_RL_SERVE_URL"  # the command line's default --url


class ClientError(Exception):
    """The service answered with an error; ``status`` is the HTTP code."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class TrainingClient:
    """HTTP client of one service. ``token`` defaults to ``$token_env``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        token_env: str = "BROWSER_RL_SERVE_TOKEN",
        timeout: float = 120.0,
        http: Any = None,
    ) -> None:
        """``http``: an ``httpx.Client`` to use instead of a new one (tests pass
        FastAPI's ``TestClient``); the token header is set on it either way."""
        import httpx

        token = token if token is not None else os.environ.get(token_env) or None
        self.http = http or httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            transport=httpx.HTTPTransport(retries=2),
            trust_env=False,  # never route loopback traffic through a proxy
        )
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            detail = body.get("detail", response.text) if isinstance(body, dict) else body
            raise ClientError(response.status_code, str(detail))
        return response.json()

    # --- API ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def upload(self, *paths: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload episode dirs or run dirs (as one tar.gz); returns the manifest
        (``dataset_id``, ``episodes``, ...)."""
        with tempfile.TemporaryFile() as archive:
            _pack(paths, archive)
            archive.seek(0)
            return self._call(
                "PUT",
                "/v1/datasets",
                content=_chunks(archive),
                headers={"Content-Type": "application/gzip"},
            )

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/datasets")

    def train(
        self,
        learner: str,
        dataset_ids: Sequence[str],
        overrides: dict[str, Any] | None = None,
        resources: dict[str, float] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue a job; returns ``{"job_id", "status", ...}``. A value of
        ``overrides`` or ``resources`` that JSON cannot carry (NaN, a date, a
        set) is a ``ValueError`` naming it, before any request."""
        body = {
            "learner": learner,
            "dataset_ids": list(dataset_ids),
            "overrides": overrides or {},
            "resources": resources or {},
        }
        for part in ("overrides", "resources"):
            for key, value in body[part].items():
                problem = _json_problem(value, hint="")
                if problem:
                    raise ValueError(f"{part}[{key!r}]: {value!r} {problem}")
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 1.0) -> dict:
        """The job once it finished; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in FINISHED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)

    def follow(
        self, job_id: str, *, out: IO[str] | None = None, poll: float = 1.0, progress: bool = True
    ) -> dict[str, Any]:
        """Print the job's log as it grows (to ``out``, default stderr) with a
        progress bar of its training steps; returns the finished job."""
        from tqdm.auto import tqdm

        out = out or sys.stderr
        bar = tqdm(desc=job_id, unit="step", disable=not progress, file=sys.stderr)
        offset = 0
        try:
            while True:
                job = self.job(job_id)
                chunk = self.logs(job_id, offset)
                offset = chunk["next_offset"]
                if chunk["text"]:
                    bar.clear()
                    out.write(chunk["text"])
                    out.flush()
                if job.get("progress"):
                    bar.total = job["progress"]["total"]
                    bar.n = job["progress"]["step"]
                bar.set_postfix_str(job["status"])
                bar.refresh()
                if job["status"] in FINISHED and not chunk["text"]:
                    return job
                time.sleep(poll)
        finally:
            bar.close()

    def download(self, job_id: str, dest: str | os.PathLike[str]) -> Path:
        """Unpack the job's adapter into ``dest``; returns it.

        The whole archive is downloaded and unpacked into a temporary dir next
        to its place (inside ``dest`` if that exists) before ``dest`` changes:
        a new ``dest`` then appears by one rename, an existing one has each of
        its files replaced by one rename. ``dest/.browser-rl-adapter.json``
        (:data:`MANIFEST`, replaced atomically) lists the files downloads put
        there; a download into an existing ``dest`` then removes those the
        new adapter lacks, so no file of an earlier adapter (a stale
        ``tokenizer.json``) sits beside the new one. Other files stay (a
        ``dest`` without a manifest keeps all of them): only regular files
        with plain names that the manifest lists are removed, never a
        directory or a symlink. A transfer cut short, a corrupt archive or a
        failed write before the first rename raises ClientError (502) and
        leaves ``dest`` as it was."""
        import httpx

        target = Path(dest)
        # unbuffered: a write that fails (a full disk) leaves no data in a buffer
        # that closing the file would try to write again, raising over ClientError
        with tempfile.TemporaryFile(buffering=0) as archive:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/adapter") as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(response.status_code, response.text)
                try:
                    for block in response.iter_bytes():
                        view = memoryview(block)
                        while view:  # an unbuffered write may write part of it
                            view = view[archive.write(view) :]
                except httpx.TransportError as exc:  # the connection dropped mid-body
                    raise ClientError(
                        502, f"the download of the adapter of {job_id} was cut short: {exc}"
                    ) from None
                except OSError as exc:  # the temp file's disk is full
                    raise ClientError(
                        502, f"could not write the adapter of {job_id} to a temp file: {exc}"
                    ) from None
            archive.seek(0)
            staging: Path | None = None
            try:
                home = target if target.is_dir() else target.parent
                home.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=".adapter-", suffix=".part", dir=home))
                names = _unpack_adapter(archive, staging)
                if not target.is_dir():
                    _write_manifest(staging, names)
                    staging.rename(target)
                    staging = None
                else:
                    _move_into(staging, target, names)
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise ClientError(
                    502, f"could not unpack the adapter of {job_id} into {target}: {exc}"
                ) from None
            finally:
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
        return target


def _move_into(staging: Path, target: Path, names: list[str]) -> None:
    """Move the files ``names`` unpacked in ``staging`` into the existing dir
    ``target``, one rename each, then remove the files that the previous
    download's manifest lists and ``names`` lacks (regular files only)."""
    for name in names:
        if (target / name).is_dir() and not (target / name).is_symlink():
            raise ClientError(502, f"{target / name} is a directory")
    earlier = _read_manifest(target)
    # Listed before any of them moves in, so that a download cut off halfway
    # leaves none of its files unlisted (the next download removes them).
    _write_manifest(target, sorted(set(earlier) | set(names)))
    for name in names:
        os.replace(staging / name, target / name)
    for name in sorted(set(earlier) - set(names)):
        path = target / name
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(path.lstat().st_mode):  # lstat: a symlink is never followed
                path.unlink()
    _write_manifest(target, names)


def _read_manifest(directory: Path) -> list[str]:
    """The plain names that ``directory``'s manifest lists; none without one
    (or with one that is not a regular file of ours)."""
    try:
        fd = os.open(directory / MANIFEST, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # missing, or a symlink
        return []
    try:
        with os.fdopen(fd, "rb") as f:
            files = json.loads(f.read(1 << 20)).get("files")
    except (ValueError, AttributeError, OSError):
        return []
    if not isinstance(files, list):
        return []
    return [name for name in files if isinstance(name, str) and _plain(name)]


def _write_manifest(directory: Path, names: list[str]) -> None:
    """``directory``'s manifest listing ``names``, written atomically (temp
    file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "files": sorted(names)}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _plain(name: str) -> bool:
    """Whether ``name`` names a file directly inside a dir (no separator, not
    ``.`` or ``..``) other than the manifest."""
    return not any(c in name for c in "/\\\0") and name not in ("", ".", "..", MANIFEST)


def _unpack_adapter(archive: IO[bytes], into: Path) -> list[str]:
    """Unpack the adapter tar.gz ``archive`` into the empty dir ``into``: regular
    files with plain names only, whatever the server sent; returns the names."""
    names = []
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        for member in tar:
            name = member.name
            if not member.isreg() or not _plain(name):
                raise ClientError(502, f"adapter archive holds an unsafe member {name!r}")
            source = tar.extractfile(member)
            assert source is not None
            with source, (into / name).open("xb") as sink:  # "x": a name twice is no adapter
                while block := source.read(1 << 20):
                    sink.write(block)
            names.append(name)
    return names


def _pack(paths: Sequence[str | os.PathLike[str]], archive: IO[bytes]) -> None:
    """A reproducible tar.gz (sorted names, no times or owners), so the same
    episodes always upload as the same dataset id."""
    import gzip

    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with (
        gzip.GzipFile(fileobj=archive, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for given in paths:
            root = Path(given)
            if not root.is_dir():
                raise ValueError(f"{root} is not a directory of episodes")
            for path in [root, *sorted(root.rglob("*"))]:
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue
                arcname = Path(root.name, path.relative_to(root)).as_posix()
                tar.add(path, arcname=arcname, recursive=False, filter=plain)


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while block := f.read(1 << 20):
        yield block


# --- command line ----------------------------------------------------------


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _overrides(items: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """The ``--set KEY=VALUE`` items as a request's overrides (values read as
    YAML), or why one cannot be sent: no ``=``, no YAML, or a value that JSON
    cannot carry (a YAML date such as ``2024-01-01``, NaN or Infinity, a set),
    which would otherwise fail as a traceback inside the HTTP client."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            return {}, f"--set takes KEY=VALUE, got {item!r}"
        try:
            value = _parse_value(text)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            return {}, f"--set {key}: {text!r} is not a YAML value ({reason})"
        problem = _json_problem(value)
        if problem:
            return {}, f"--set {key}: {text!r} {problem}"
        overrides[key] = value
    return overrides, None


def _json_problem(value: Any, hint: str = "; quote it to send a string") -> str | None:
    """Why ``value`` cannot go into a JSON request body, or None when it can
    (``hint``: what the caller can do about a value that is not JSON)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:  # a date, a set, bytes, an alias holding itself
        return f"is not a JSON value ({exc}){hint}"
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return "holds NaN or Infinity, which JSON has neither"
    return None


def _finite_float(text: str) -> float:
    """An argparse ``type``: a float that is neither NaN nor infinite (JSON has neither)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _url_problem(url: str) -> str | None:
    """What stops ``url`` from naming a service, with the form that would (httpx
    would say it only once a request is made, and we would blame the service)."""
    from urllib.parse import urlsplit

    if "://" not in url:
        return f"needs a scheme: http://{url.lstrip('/')}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        return f"is no URL ({exc}): e.g. {DEFAULT_URL}"
    rest = url.split("://", 1)[1]
    if parts.scheme not in ("http", "https"):
        return f"takes http:// or https://, not {parts.scheme}://: http://{rest}"
    if not parts.hostname:
        return f"needs a host: {parts.scheme}://127.0.0.1{rest}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve.client",
        description="Talk to the training service (python -m serve): upload episodes, "
        "start and follow training jobs, download their adapters.",
    )
    parser.add_argument(
        "--url",
        help=f"the service's address, http:// or https:// (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-env",
        default="BROWSER_RL_SERVE_TOKEN",
        help="the environment variable holding the service's token (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", help="upload episode or run dirs as one dataset")
    upload.add_argument("paths", nargs="+", help="episode dirs, or run dirs holding episodes")
    train = commands.add_parser("train", help="start a training job")
    train.add_argument("--learner", default="sft", choices=["sft", "sdft", "grpo"])
    train.add_argument(
        "--dataset",
        action="append",
        default=[],
        dest="datasets",
        help="a dataset id from upload (repeat for several)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a learner setting, e.g. max_steps=300 (repeat; values are YAML)",
    )
    train.add_argument("--num-cpus", type=_finite_float, help="CPUs the job asks for")
    train.add_argument("--num-gpus", type=_finite_float, help="GPUs the job asks for")
    train.add_argument(
        "--idempotency-key", help="the same key again returns the job it made (safe retries)"
    )
    train.add_argument("--follow", action="store_true", help="print the log until the job ends")
    status = commands.add_parser("status", help="one job, or all jobs")
    status.add_argument("job_id", nargs="?")
    logs = commands.add_parser("logs", help="a job's log")
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="print the log until the job ends")
    download = commands.add_parser("download", help="unpack a job's adapter into DEST")
    download.add_argument("job_id")
    download.add_argument("dest")
    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id")
    args = parser.parse_args(argv)
    option = "--url" if args.url is not None else f"${URL_ENV}"
    if args.url is None:
        args.url = os.environ.get(URL_ENV) or DEFAULT_URL
    problem = _url_problem(args.url)
    if problem:
        parser.error(f"{option} {problem}")
    if args.command == "upload":
        missing = [p for p in args.paths if not Path(p).exists()]
        if missing:
            parser.error(f"upload: no such episode or run directory: {', '.join(missing)}")
        files = [p for p in args.paths if not Path(p).is_dir()]
        if files:
            parser.error(f"upload: not a directory (give episode or run dirs): {', '.join(files)}")
    overrides: dict[str, Any] = {}
    if args.command == "train":
        overrides, problem = _overrides(args.set)
        if problem:
            parser.error(problem)
    import httpx

    def show(value: Any) -> None:
        print(json.dumps(value, indent=2))

    with TrainingClient(args.url, token_env=args.token_env) as client:
        try:
            if args.command == "upload":
                show(client.upload(*args.paths))
            elif args.command == "train":
                resources = {
                    k: v
                    for k, v in (("num_cpus", args.num_cpus), ("num_gpus", args.num_gpus))
                    if v is not None
                }
                job = client.train(
                    args.learner,
                    args.datasets,
                    overrides,
                    resources,
                    idempotency_key=args.idempotency_key,
                )
                show(client.follow(job["job_id"]) if args.follow else job)
            elif args.command == "status":
                show(client.job(args.job_id) if args.job_id else client.jobs())
            elif args.command == "logs":
                if args.follow:
                    client.follow(args.job_id, out=sys.stdout)
                else:
                    sys.stdout.write(client.logs(args.job_id)["text"])
            elif args.command == "download":
                print(client.download(args.job_id, args.dest))
            elif args.command == "cancel":
                show(client.cancel(args.job_id))
        except ClientError as exc:
            print(f"error {exc.status}: {exc.detail}", file=sys.stderr)
            return 1
        except httpx.TransportError as exc:
            print(
                f"error: cannot reach the training service at {args.url} ({exc}); "
                f"start it with python -m serve, or pass --url (or ${URL_ENV})",
                file=sys.stderr,
            )
            return 1
    return 0


def _cli() -> int:
    """:func:`main`, quiet when the reader of its output goes away (``| head``):
    the rest of the output is dropped, as a shell command's would be, and the
    exit status is 1, without Python's BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()  # a broken pipe shows here, not at exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's own flush at exit
        return 1
    return code


if __name__ == "__main__":
    sys.exit(_cli())

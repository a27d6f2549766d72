"""Bearer tokens: one helper for every server in the project.

The training service (``python -m serve``) and the OpenAI-compatible server
both authenticate with ``Authorization: Bearer <token>``. This module is the
one place that reads a token (from an environment variable or a file),
checks its strength, and compares a request's header against it in constant
time. It imports nothing heavy, so ``import serve`` stays light.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

__all__ = ["MIN_TOKEN_LENGTH", "bearer_matches", "load_token"]

MIN_TOKEN_LENGTH = 32
"""Tokens shorter than this are refused by servers that write (the training service)."""


def load_token(
    env_var: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    *,
    min_length: int = 0,
    required: bool = False,
) -> str | None:
    """The token named by ``env_var`` (an environment variable's name) or
    ``token_file`` (a file holding it; surrounding whitespace is dropped).

    Exactly one source is read: ``token_file`` when given, else ``env_var``.
    Returns None when no source is configured or the variable is unset, unless
    ``required``. Raises ``ValueError`` when a configured source is missing or
    empty, or when the token is shorter than ``min_length``.
    """
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read token file {str(path)!r}: {exc.strerror}") from None
        source = f"token file {str(path)!r}"
    elif env_var:
        token = os.environ.get(env_var, "").strip()
        source = f"${env_var}"
        if not token:
            if required:
                least = f" of at least {min_length} characters" if min_length > 1 else ""
                raise ValueError(f"{source} is not set: export a token{least}")
            return None
    else:
        if required:
            raise ValueError("no token configured: name an environment variable or a token file")
        return None
    if not token:
        raise ValueError(f"{source} is empty")
    if len(token) < min_length:
        raise ValueError(
            f"{source} holds a token of {len(token)} characters; at least {min_length} are needed "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <token>``.

    The scheme is case-insensitive (RFC 7235); the token is compared in
    constant time, so response timing does not leak how much of it matched.
    """
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), token.encode("utf-8")
    )

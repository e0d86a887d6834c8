"""Identity: JWT bearer tokens (HS256, expiry required) and signed URLs for `<img src>`."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from .errors import TokenExpired, TokenInvalid, TokenMissing

ALGORITHM = "HS256"
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
#: the claim that gives a token a daily GPU-seconds budget of its own (0: none)
BUDGET_CLAIM = "gpu_seconds_per_day"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the token's subject, its scopes (`admin`; `graphs`: may submit
    API-format graphs), and its own daily GPU-seconds budget if it carries one (0: none; None:
    the service's)."""

    user: str
    admin: bool = False
    graphs: bool = False
    expires_at: float | None = None
    gpu_seconds_per_day: float | None = None

    @property
    def may_submit_graphs(self) -> bool:
        """Admins always may; other tokens need the `graphs` scope."""
        return self.admin or self.graphs


def mint_token(
    secret: str,
    user: str,
    *,
    admin: bool = False,
    graphs: bool = False,
    ttl: float = 3600,
    now: float | None = None,
    gpu_seconds_per_day: float | None = None,
) -> str:
    """A token for `user`, as a web app with its own login mints them (same secret, HS256)."""
    if not USER_ID.match(user):
        raise ValueError(f"user ids are 1–128 letters, digits or . _ @ + -: {user!r}")
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user, "iat": issued, "exp": issued + int(ttl)}
    scopes = [name for name, given in (("admin", admin), ("graphs", graphs)) if given]
    if scopes:
        claims["scope"] = " ".join(scopes)
    if gpu_seconds_per_day is not None:
        claims[BUDGET_CLAIM] = gpu_seconds_per_day
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Identity:
    """The identity a token carries; Unauthorized naming what is wrong with it otherwise."""
    if not token:
        raise TokenMissing("a bearer token is required")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"the token is not valid: {exc}") from None
    user = claims.get("sub")
    if not isinstance(user, str) or not USER_ID.match(user):
        raise TokenInvalid("the token's subject is not a valid user id")
    scope = claims.get("scope", "")
    scopes = scope.split() if isinstance(scope, str) else []
    budget = claims.get(BUDGET_CLAIM)
    if budget is not None and (
        not isinstance(budget, int | float) or isinstance(budget, bool) or not 0 <= budget < 1e15
    ):
        raise TokenInvalid(f"the token's {BUDGET_CLAIM} is not a number of seconds")
    return Identity(
        user=user,
        admin="admin" in scopes,
        graphs="graphs" in scopes,
        expires_at=float(claims["exp"]),
        gpu_seconds_per_day=None if budget is None else float(budget),
    )


class TokenVerifier:
    """`verify_token` for one secret, remembering the last `size` tokens it accepted.

    A client sends the same token with every request, and checking an HS256 signature costs
    more than the rest of a light request's auth. A remembered token is still refused once it
    expires; only tokens that verified are remembered.
    """

    def __init__(self, secret: str, size: int = 4096) -> None:
        self.secret = secret
        self.size = size
        self._accepted: OrderedDict[str, Identity] = OrderedDict()

    def __call__(self, token: str) -> Identity:
        identity = self._accepted.get(token)
        if identity is not None and (identity.expires_at or 0) > time.time():
            self._accepted.move_to_end(token)
            return identity
        self._accepted.pop(token, None)
        identity = verify_token(self.secret, token)
        self._accepted[token] = identity
        if len(self._accepted) > self.size:
            self._accepted.popitem(last=False)
        return identity


def bearer(header: str | None) -> str:
    """The token in an `Authorization: Bearer …` header ('' when there is none)."""
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("use `Authorization: Bearer <token>`")
    return token.strip()


def _signature(secret: str, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:40]


def sign_url(secret: str, path: str, ttl: float, now: float | None = None) -> str:
    """`path?exp=…&sig=…`: works without a header (an `<img src>`) until it expires."""
    expires = int((now if now is not None else time.time()) + ttl)
    return f"{path}?{urlencode({'exp': expires, 'sig': _signature(secret, path, expires)})}"


def check_signed(secret: str, path: str, exp: str, sig: str, now: float | None = None) -> bool:
    """Whether `exp`/`sig` are a valid, unexpired signature of `path`."""
    try:
        expires = int(exp)
    except ValueError:
        return False
    if expires < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(_signature(secret, path, expires), sig)


def parse_ttl(text: str) -> float:
    """`90`, `90s`, `15m`, `1h`, `7d` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 7d)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]

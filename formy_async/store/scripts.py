"""Lua scripts whose keys and arguments are named, not numbered.

A script declares the names of its keys and arguments; its body reads them as Lua locals
(`local job = KEYS[1]` is written here, once), and a caller passes them by name. What follows
the named ones (a variable number of keys or arguments) is reached from `first_extra_key` /
`first_extra_arg`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis


class Script:
    """One Lua script, registered on a client, called with its keys and arguments by name."""

    def __init__(self, redis: Redis, keys: Sequence[str], args: Sequence[str], body: str) -> None:
        self.key_names = tuple(keys)
        self.arg_names = tuple(args)
        preamble = [f"local {name} = KEYS[{i}]" for i, name in enumerate(self.key_names, 1)]
        preamble += [f"local {name} = ARGV[{i}]" for i, name in enumerate(self.arg_names, 1)]
        preamble.append(f"local first_extra_key = {len(self.key_names) + 1}")
        preamble.append(f"local first_extra_arg = {len(self.arg_names) + 1}")
        self.source = "\n".join(preamble) + "\n" + body
        self._script = redis.register_script(self.source)

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    def flat(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any],
        *,
        extra_keys: Sequence[str] = (),
        extra_args: Sequence[Any] = (),
    ) -> list[Any]:
        """EVALSHA's arguments after the sha: the number of keys, the keys, the arguments."""
        if set(keys) != set(self.key_names) or set(args) != set(self.arg_names):
            missing = (set(self.key_names) - set(keys)) | (set(self.arg_names) - set(args))
            unknown = (set(keys) - set(self.key_names)) | (set(args) - set(self.arg_names))
            raise TypeError(f"script called with missing {missing} or unknown {unknown} names")
        named_keys = [*(keys[name] for name in self.key_names), *extra_keys]
        return [len(named_keys), *named_keys, *(args[name] for name in self.arg_names), *extra_args]

    async def __call__(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any],
        *,
        extra_keys: Sequence[str] = (),
        extra_args: Sequence[Any] = (),
    ) -> Any:
        return await self.run(self.flat(keys, args, extra_keys=extra_keys, extra_args=extra_args))

    async def run(self, flat: Sequence[Any]) -> Any:
        """The script called with what `flat` made (registered again if Redis forgot it)."""
        count = flat[0]
        return await self._script(keys=flat[1 : count + 1], args=flat[count + 1 :])

    async def load(self) -> None:
        """Register the script again (Redis forgets them when it restarts)."""
        await self._script.registered_client.script_load(self.source)

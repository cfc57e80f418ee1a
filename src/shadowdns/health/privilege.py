"""Who may make the server run a program: the rule for `command` health checks.

A `command` check runs a program as the server's user, so whoever can create one has that
user's power. Command checks are therefore taken only from files the host's operator edits
in the zones directory (`serve`, `check` and reload load those as they are). Policy data
from anywhere else (the REST API at any role, a policy file mirrored through a fleet's
store) may keep a command check the file on this host already has for the same resource
with the same arguments, but may not add or change one, unless the server runs with
`--allow-commands`, which makes every operator token root-equivalent.

Allocator hooks with a `command` (in `allocator.yaml`) follow the same rule: the API and
the fleet's store may keep the command a hook of this host's file has, not add or change
one (`new_hook_commands`).
"""

from __future__ import annotations

from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.zones.policy import Policy, Resource, resources_where

COMMANDS_REFUSED = (
    "command checks run programs as the server's user: they are taken only from files on "
    "the host, or through a server started with --allow-commands")


def command_checks(policy: Policy | None) -> dict[str, tuple[str, ...]]:
    """Resource id -> the program and arguments its command check runs."""
    if policy is None:
        return {}
    # asked per shape of resource, not per resource: every API policy edit asks
    return {res.id: res.check.command for res in resources_where(policy.resources, _runs)
            if res.check is not None}


def _runs(res: Resource) -> bool:
    return res.check is not None and res.check.type == "command"


def new_commands(before: Policy | None, after: Policy) -> list[str]:
    """The resources of `after` whose command check `before` does not already have."""
    kept = command_checks(before)
    return sorted(rid for rid, argv in command_checks(after).items() if kept.get(rid) != argv)


def new_hook_commands(before: AllocatorSettings | None, after: AllocatorSettings) -> list[str]:
    """The hooks of `after` ("warmup", "drain") whose command `before` does not have."""
    out = []
    for name in ("warmup", "drain"):
        hook = getattr(after, f"{name}_hook")
        was = None if before is None else getattr(before, f"{name}_hook")
        if hook is not None and hook.command and (was is None or was.command != hook.command):
            out.append(name)
    return out

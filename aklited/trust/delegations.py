"""Which role's entry a target name resolves to, searching delegations (spec 5.6.7).

The search is python-tuf ngclient's ``_preorder_depth_first_walk``, run once per target
name over roles that are already verified: the top-level targets first, then the
delegations that cover the name, in order, depth first; a role is visited once; a
terminating delegation drops every role still waiting outside it; at most
``max_delegations`` delegated roles are visited. The first role listing the name wins,
so a role's entry only counts where every delegation leading to it covers the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aklited.trust.metadata import TargetFile, Targets

MAX_DELEGATIONS = 32  # python-tuf's Updater default (config.max_delegations)
TOP_LEVEL = "targets"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A target and the role whose entry for it the search accepted."""

    role: str
    target: TargetFile


def find_target(
    path: str,
    top: Targets,
    delegated: Mapping[str, Targets],
    *,
    max_delegations: int = MAX_DELEGATIONS,
) -> Resolved | None:
    """Search ``path`` from the top-level targets; None when no role may provide it.

    Args:
        path: The target name.
        top: The top-level targets.
        delegated: Verified delegated roles by name.
        max_delegations: Most delegated roles one search visits.
    """
    stack = [TOP_LEVEL]
    visited: set[str] = set()
    # "<=": python-tuf counts the top-level role too, so it visits max_delegations more.
    while stack and len(visited) <= max_delegations:
        name = stack.pop()
        if name in visited:
            continue
        role = top if name == TOP_LEVEL else delegated.get(name)
        if role is None:
            # Not loaded (the walk's cap): skipping it could let a less trusted role
            # answer for a name this one would provide, so the search ends here.
            return None
        target = role.targets.get(path)
        if target is not None:
            return Resolved(role=name, target=target)
        visited.add(name)
        if role.delegations is None:
            continue
        children: list[str] = []
        for child, terminating in role.delegations.roles_for(path):
            children.append(child)
            if terminating:
                stack = []
                break
        stack.extend(reversed(children))
    return None


def resolve_targets(
    top: Targets,
    delegated: Mapping[str, Targets],
    *,
    max_delegations: int = MAX_DELEGATIONS,
) -> dict[str, Resolved]:
    """Every target name any of the roles lists, resolved by :func:`find_target`.

    Names whose search does not reach a role listing them (their path is not delegated
    to it, a terminating delegation cut the search off) are left out.

    Returns:
        Name to resolution: top-level targets first, then the delegated roles' in order.
    """
    roles: Iterable[Targets] = (top, *delegated.values())
    resolved: dict[str, Resolved] = {}
    seen: set[str] = set()
    for role in roles:
        for path in role.targets:
            if path in seen:
                continue
            seen.add(path)
            found = find_target(path, top, delegated, max_delegations=max_delegations)
            if found is not None:
                resolved[path] = found
    return resolved

"""How a run on a Ray worker tells the driver how it is doing: it posts each ``RunMessage`` to one small
actor, and the driver collects what has arrived between its waits for finished runs.

Nothing here imports torch or the emergence core. The inbox actor gets a process of its own, and messages
travel as plain dicts, so that process never has to import the module that defines ``RunMessage``
(which would pull in torch, seconds of start-up and hundreds of MB, for a mailbox).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emergence.executors import RunMessage

log = logging.getLogger(__name__)


class ProgressInbox:
    """Made into a Ray actor by the executor (``ray.remote(num_cpus=0)``); one per ``execute`` call.

    Calls on one actor run one at a time, in the order each caller submitted them, so every run's
    messages arrive in the order the run sent them."""

    def __init__(self) -> None:
        self._arrived: list[dict[str, Any]] = []

    def post(self, message: dict[str, Any]) -> None:
        self._arrived.append(message)

    def take_all(self) -> list[dict[str, Any]]:
        taken, self._arrived = self._arrived, []
        return taken


class InboxSender:
    """The ``send`` a Ray task hands to ``run_in_worker``: posts each message to the inbox and goes on.

    It never waits for the post to land. A Ray task blocked in ``ray.get`` gives its CPUs back to the
    scheduler until it resumes, so waiting on every progress message would let Ray start more runs than
    there are CPUs for. The price is that a message may reach the inbox after its task has returned;
    the driver allows for that (it reports a run finished itself, from the run's outcome).

    Progress is a view: if posting fails, the run goes on without reporting instead of failing."""

    def __init__(self, inbox: Any) -> None:
        self.inbox = inbox
        self._given_up = False

    def __call__(self, message: RunMessage) -> None:
        if self._given_up:
            return
        try:
            self.inbox.post.remote(dataclasses.asdict(message))
        except Exception as error:  # noqa: BLE001 - a lost progress channel must never fail the run
            self._given_up = True
            log.warning("run %s stops reporting progress: the driver's inbox is unreachable (%s)", message.run_key, error)

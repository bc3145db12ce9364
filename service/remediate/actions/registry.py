"""Every remediation action, by the name rules use. Explicit: adding an action means
adding it here, where a reviewer sees it."""

from __future__ import annotations

from service.remediate.actions.base import Action
from service.remediate.actions.delete_pods import DeletePods
from service.remediate.actions.drain_node import DrainNode
from service.remediate.actions.restart import Restart
from service.remediate.actions.rollback import Rollback
from service.remediate.actions.scale import Scale

ACTIONS: dict[str, Action] = {a.name: a for a in (Rollback(), Scale(), Restart(), DeletePods(), DrainNode())}

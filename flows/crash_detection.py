"""Crashed, not "Running" forever: flow-run heartbeats and Prefect's zombie-run automation.

A flow run whose whole machine, or whose runner together with it, died can report nothing: the
Prefect API would show it Running for good, with no Retry. Prefect's answer (its guide "detect
zombie flows") is two parts, both set up here the same way for `digest serve` and for the work
pool:

- deployment runs send a heartbeat event every HEARTBEAT_SECONDS
  (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set by `digest serve` and by the pool's job variables in
  deployments/prefect.yaml);
- an automation marks a weekly-digest run Crashed once a heartbeat is followed by neither
  another one nor an end within SILENCE_SECONDS. With Prefect's 5 s evaluation, a dead run is
  Crashed within about 80 s, and Retry on it sends what is left.

The automation covers weekly-digest runs of a deployment only: `digest run` runs the flow in its
own process, with Prefect's default heartbeat, and is never marked by it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

HEARTBEAT_SECONDS = 30  # Prefect's minimum: the sooner a dead run is seen, the better
# Two heartbeats and a quarter: one lost heartbeat never crashes a live run.
SILENCE_SECONDS = 75
AUTOMATION_NAME = "verdict-digest: crash silent weekly-digest runs"
FLOW_NAME = "weekly-digest"
# A run that ended, or that rescheduled itself to wait for the catalog feed, stops beating.
_ENDS = ("Completed", "Failed", "Cancelled", "Crashed", "AwaitingFeed")
CRASH_MESSAGE = (
    f"No heartbeat for {SILENCE_SECONDS} s: the process running this flow run died (killed, "
    "out of memory, or its machine stopped). Nothing more is sent by it. Start `digest serve` "
    "or the worker again if it is down, then press Retry: the run sends what is left, nobody "
    "twice."
)


def heartbeat_environment() -> dict[str, str]:
    """What a process that starts weekly-digest runs must have in its environment."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


def zombie_automation() -> AutomationCore:
    """The automation, as Prefect's guide writes it, narrowed to our deployment runs."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    related: Any = [
        ResourceSpecification(
            {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME}
        ),
        ResourceSpecification({"prefect.resource.role": "deployment"}),
    ]
    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            "Marks a weekly-digest deployment run Crashed when its heartbeats stop, so that "
            "ops see it and can press Retry (docs/runbook.md)."
        ),
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=related,
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{end}" for end in _ENDS)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENCE_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=CRASH_MESSAGE)],
    )


def ensure_zombie_automation(client: SyncPrefectClient) -> bool:
    """Create the automation, or put it back as defined here; True if anything changed."""
    wanted = zombie_automation()
    found = client.read_automations_by_name(AUTOMATION_NAME)
    if not found:
        client.create_automation(wanted)
        return True
    first, *extra = found
    for duplicate in extra:  # two processes that started at once each made one
        client.delete_automation(duplicate.id)
    current = {key: value for key, value in first.model_dump(mode="json").items()}
    if _canonical(current) == _canonical(wanted.model_dump(mode="json")) and not extra:
        return False
    client.update_automation(first.id, wanted)
    return True


def _canonical(value: Any) -> Any:
    """A definition as compared: ids and server fields dropped, sets (dumped as lists) sorted."""
    if isinstance(value, dict):
        keep = _FIELDS if "trigger" in value else None
        return {
            key: _canonical(item)
            for key, item in value.items()
            if key != "id" and (keep is None or key in keep)
        }
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        return sorted(items) if all(isinstance(item, str) for item in items) else items
    return value


_FIELDS = ("name", "description", "enabled", "trigger", "actions")

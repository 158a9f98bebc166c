"""A Prefect automation that calls a webhook whenever a flow run fails or crashes."""

from __future__ import annotations

import json
from uuid import UUID

AUTOMATION_NAME = "avatarflow: flow run failed"
BLOCK_NAME = "avatarflow-failure-webhook"
PAYLOAD = json.dumps({
    "text": "avatarflow: flow run {{ flow_run.name }} of flow {{ flow.name }} is {{ flow_run.state.name }}",
    "flow": "{{ flow.name }}",
    "flow_run": "{{ flow_run.name }}",
    "state": "{{ flow_run.state.name }}",
    "message": "{{ flow_run.state.message }}",
})


def create_failure_webhook(url: str) -> UUID:
    """Create (or replace) the automation and its webhook block; returns the automation id."""
    # Prefect is imported here, not at the top: the CLI imports this module at start-up, and
    # Prefect's two seconds of import belong only to the command that uses it.
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    block = Webhook(method="POST", url=url, headers={"Content-Type": "application/json"})
    block.save(BLOCK_NAME, overwrite=True)
    block = Webhook.load(BLOCK_NAME)
    try:
        Automation.read(name=AUTOMATION_NAME).delete()
    except ValueError:
        pass  # none yet
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Calls the operators' webhook when any flow run fails or crashes.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[CallWebhook(block_document_id=block._block_document_id, payload=PAYLOAD)],
    ).create()
    return automation.id

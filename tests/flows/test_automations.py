"""The failure-webhook automation is created on a real Prefect server, and replaced on a re-run."""

from __future__ import annotations


def test_failure_webhook_automation_is_created_and_replaced(prefect_harness):
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook

    from flows.automations import AUTOMATION_NAME, BLOCK_NAME, create_failure_webhook

    first = create_failure_webhook("https://hooks.example.invalid/one")
    second = create_failure_webhook("https://hooks.example.invalid/two")
    automation = Automation.read(name=AUTOMATION_NAME)
    assert automation.id == second != first
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                                         "prefect.flow-run.TimedOut"}
    (action,) = automation.actions
    assert action.type == "call-webhook"
    assert Webhook.load(BLOCK_NAME).url.get_secret_value() == "https://hooks.example.invalid/two"

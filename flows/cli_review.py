"""`avatarflow review serve` and `avatarflow reviewer add`: the review app's command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from avatarflow.errors import AvatarflowError
from db.session import Database, open_database
from review.actions import PrefectDecisionActions
from review.auth import add_reviewer
from review.config import ReviewSettings, review_url

review_app = typer.Typer(help="The reviewers' web application.", no_args_is_help=True)
reviewer_app = typer.Typer(help="Reviewer accounts.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


# The callbacks keep each app a command group even with one command, so `reviewer add` means
# the same whether these apps run alone or under `avatarflow`.
@review_app.callback()
def _review() -> None:
    """The reviewers' web application."""


@reviewer_app.callback()
def _reviewer() -> None:
    """Reviewer accounts."""


def _database(settings: ReviewSettings) -> Database:
    settings.storage.ensure()
    return open_database(settings)


@review_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (AVATARFLOW_REVIEW_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (AVATARFLOW_REVIEW_PORT).")] = None,
) -> None:
    """Serve the review queue; decisions start delivery through the Prefect deliver deployment."""
    # Here, not at the top: the web stack takes half a second to import, which `avatarflow
    # --help` and the other commands should not pay.
    import uvicorn

    from review.app import create_app

    overrides = {k: v for k, v in (("review_host", host), ("review_port", port)) if v is not None}
    settings = ReviewSettings(**overrides)
    database = _database(settings)
    actions = PrefectDecisionActions(settings.review_deliver_deployment, settings.review_regenerate_deployment)
    app = create_app(database, settings, actions)
    if not settings.review_secure_cookies and settings.review_host not in ("127.0.0.1", "localhost", "::1"):
        errors.print("[yellow]warning[/]: serving beyond this machine without Secure cookies; put it "
                     "behind HTTPS and set AVATARFLOW_REVIEW_SECURE_COOKIES=true")
    console.print(f"listening on  http://{settings.review_host}:{settings.review_port}/queue")
    console.print(f"reviewers use {review_url(settings)} (AVATARFLOW_REVIEW_URL)")
    uvicorn.run(app, host=settings.review_host, port=settings.review_port, log_level="info",
                proxy_headers=False)


@reviewer_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, . _ - @).")],
    role: Annotated[str, typer.Option(help="reviewer or admin (admins also see the audit log).")] = "reviewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")] = False,
) -> None:
    """Create a reviewer account; the password is stored only as an Argon2id hash."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = ReviewSettings()
    database = _database(settings)
    try:
        with database.session() as session:
            reviewer = add_reviewer(session, name, password, role)
            created = (reviewer.username, reviewer.role)
    except AvatarflowError as exc:
        errors.print(f"[red]error[/]: {exc}")
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    console.print(f"reviewer [bold]{created[0]}[/] added with role {created[1]}")

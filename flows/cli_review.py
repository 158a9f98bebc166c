"""`avatarflow review serve` and `avatarflow reviewer add | list | disable | enable | password |
sign-out`: the review app's command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from avatarflow.errors import AvatarflowError
from db.models import Reviewer
from db.review_models import ReviewSession
from db.session import Database, open_database
from flows.hints import pasteable
from review.actions import PrefectDecisionActions
from review.auth import AccountError, add_reviewer, change_password, normalise_username, set_active
from review.config import ReviewSettings, review_url
from review.sessions import end_all

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
    password = _read_password(password_stdin)
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


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _on_reviewer(name: str, change: Callable[[Session, Reviewer], str]) -> None:
    """Apply `change` to the named reviewer in one transaction and print what it says."""
    database = _database(ReviewSettings())
    try:
        with database.session() as session:
            reviewer = session.scalar(select(Reviewer).where(Reviewer.username == normalise_username(name)))
            if reviewer is None:
                raise AccountError(f"no reviewer named {name!r} (see `avatarflow reviewer list`)")
            said = change(session, reviewer)
    except AvatarflowError as exc:
        errors.print(f"[red]error[/]: {pasteable(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    console.print(said)


PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")]
Name = Annotated[str, typer.Argument(help="The reviewer's username.")]


@reviewer_app.command("list")
def list_reviewers() -> None:
    """Every reviewer account: role, enabled, open sessions."""
    from rich.table import Table

    database = _database(ReviewSettings())
    try:
        with database.session() as session:
            open_sessions = dict(session.execute(select(ReviewSession.reviewer_id, func.count()).where(
                ReviewSession.ended_at.is_(None)).group_by(ReviewSession.reviewer_id)).all())
            table = Table()
            for column in ("reviewer", "role", "enabled", "open sessions"):
                table.add_column(column)
            for r in session.scalars(select(Reviewer).order_by(Reviewer.username)):
                table.add_row(r.username, r.role, "yes" if r.active else "no", str(open_sessions.get(r.id, 0)))
    finally:
        database.dispose()
    console.print(table)


@reviewer_app.command("disable")
def disable(name: Name) -> None:
    """Disable an account: it cannot sign in, and its sessions end at once."""
    _on_reviewer(name, lambda s, r: f"{r.username} disabled; {set_active(s, r, False)} session(s) ended")


@reviewer_app.command("enable")
def enable(name: Name) -> None:
    """Enable an account again (its old sessions stay ended: it signs in afresh)."""
    def change(session: Session, reviewer: Reviewer) -> str:
        set_active(session, reviewer, True)
        return f"{reviewer.username} enabled"

    _on_reviewer(name, change)


@reviewer_app.command("password")
def password(name: Name, password_stdin: PasswordStdin = False) -> None:
    """Set a new password; every session opened with the old one ends."""
    new = _read_password(password_stdin)
    _on_reviewer(name, lambda s, r: f"password of {r.username} changed; {change_password(s, r, new)} session(s) ended")


@reviewer_app.command("sign-out")
def sign_out_everywhere(name: Name) -> None:
    """Sign a reviewer out everywhere (a lost laptop, a copied cookie)."""
    _on_reviewer(name, lambda s, r: f"{r.username} signed out of {end_all(s, r.id, 'signed out by an admin')} session(s)")

"""`avatarflow reviewer add` and the `review serve` wiring."""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from flows.cli_review import review_app, reviewer_app


def test_reviewer_add_hashes_the_password_with_argon2(settings_env):
    from db.models import Reviewer
    from db.session import open_database
    from review.auth import verify_password
    from review.config import ReviewSettings

    runner = CliRunner()
    result = runner.invoke(reviewer_app, ["add", "Carol", "--role", "admin", "--password-stdin"],
                           input="a long enough password\n")
    assert result.exit_code == 0, result.output
    assert "reviewer carol added with role admin" in result.output
    database = open_database(ReviewSettings())
    with database.session() as session:
        carol = session.scalars(select(Reviewer).where(Reviewer.username == "carol")).one()
        assert carol.role == "admin" and carol.password_hash.startswith("$argon2id$")
        assert "a long enough password" not in carol.password_hash
        assert verify_password(carol.password_hash, "a long enough password")
    database.dispose()

    again = runner.invoke(reviewer_app, ["add", "carol", "--password-stdin"], input="another password!\n")
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(reviewer_app, ["add", "dave", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    role = runner.invoke(reviewer_app, ["add", "erin", "--role", "root", "--password-stdin"], input="x" * 12 + "\n")
    assert role.exit_code == 1 and "not one of reviewer, admin" in role.output


def test_reviewer_add_prompts_for_the_password_twice(settings_env):
    result = CliRunner().invoke(reviewer_app, ["add", "frank"], input="a long enough password\na long enough password\n")
    assert result.exit_code == 0, result.output


def test_review_serve_has_host_and_port_options():
    result = CliRunner().invoke(review_app, ["serve", "--help"])
    assert result.exit_code == 0 and "--host" in result.output and "--port" in result.output


def test_reviewer_accounts_disable_enable_password_and_sign_out_everywhere(settings_env):
    from db.models import Reviewer
    from db.review_models import ReviewSession
    from db.session import open_database
    from review.config import ReviewSettings
    from review.sessions import open_session

    runner = CliRunner()
    assert runner.invoke(reviewer_app, ["add", "gina", "--password-stdin"], input="a long enough password\n").exit_code == 0
    database = open_database(ReviewSettings())
    with database.session() as session:
        gina = session.scalar(select(Reviewer).where(Reviewer.username == "gina"))
        for _ in range(2):
            open_session(session, gina, "10.0.0.1")

    def open_sessions() -> int:
        with database.session() as session:
            return len(session.scalars(select(ReviewSession).where(ReviewSession.ended_at.is_(None))).all())

    listed = runner.invoke(reviewer_app, ["list"])
    assert listed.exit_code == 0 and "gina" in listed.output
    signed_out = runner.invoke(reviewer_app, ["sign-out", "gina"])
    assert signed_out.exit_code == 0 and "2 session(s)" in signed_out.output and open_sessions() == 0
    with database.session() as session:
        open_session(session, session.scalar(select(Reviewer).where(Reviewer.username == "gina")), "10.0.0.1")
    disabled = runner.invoke(reviewer_app, ["disable", "gina"])
    assert disabled.exit_code == 0 and "1 session(s) ended" in disabled.output and open_sessions() == 0
    assert runner.invoke(reviewer_app, ["enable", "gina"]).exit_code == 0
    changed = runner.invoke(reviewer_app, ["password", "gina", "--password-stdin"], input="another long password\n")
    assert changed.exit_code == 0 and "password of gina changed" in changed.output
    missing = runner.invoke(reviewer_app, ["disable", "nobody"])
    assert missing.exit_code == 1 and "no reviewer named 'nobody'" in missing.output
    with database.session() as session:
        assert session.scalar(select(Reviewer.active).where(Reviewer.username == "gina")) is True
    database.dispose()

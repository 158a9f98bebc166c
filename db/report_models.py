"""The list of generated reports: one row per (report date, kind), pointing at the file on disk."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class Report(Base):
    """A report file written under `<data_root>/reports/<date>/`.

    Re-running a day's report rewrites its files and updates these rows in place, so there is
    always exactly one row per (date, kind) and it describes the file that is on disk now.
    """

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("date", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, index=True)  # the UTC day the report covers
    kind: Mapped[str] = mapped_column(String(20))  # markdown, html or csv
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
